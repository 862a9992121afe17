# Semantic FPN + PoolFormer-S12 on the bundled sample Cityscapes data (random init, CPU smoke runs):
# the model of fpn_poolformer-s12_4xb2-80k_cityscapes-512x1024.py with its optimiser, the sample
# data's 128x128 crops, a short schedule, BatchNorm instead of SyncBN in the decode head (runs
# without DDP).
_base_ = [
    './_base_/fpn_poolformer-s12.py',
    '../_base_/datasets/cityscapes_sample.py',
    'mmseg::_base_/default_runtime.py',
]
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),
    decode_head=dict(num_classes=19, norm_cfg=norm_cfg))

optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=200, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=200, val_interval=200)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
