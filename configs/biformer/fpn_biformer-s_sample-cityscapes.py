# Semantic FPN + BiFormer-S on the bundled sample Cityscapes data (random init, CPU smoke runs): the
# same model as fpn_biformer-s_4xb2-80k_cityscapes-512x1024.py, its optimiser (fp32), a short
# schedule, BatchNorm instead of SyncBN (runs without DDP).
_base_ = [
    './_base_/fpn_biformer-s.py',
    '../_base_/datasets/cityscapes_sample.py',
    'mmseg::_base_/default_runtime.py',
]
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(num_classes=19, norm_cfg=norm_cfg))

optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=200, eta_min_ratio=1e-8, by_epoch=False, begin=0,
         end=200)
]
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
