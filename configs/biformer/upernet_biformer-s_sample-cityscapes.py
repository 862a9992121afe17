# UperNet + BiFormer-S on the bundled sample Cityscapes data (random init, CPU smoke runs): the same
# model as upernet_biformer-s_4xb2-80k_cityscapes-512x1024.py, its optimiser (fp32), a short
# schedule, BatchNorm instead of SyncBN (runs without DDP).
_base_ = [
    './_base_/upernet_biformer-s.py',
    '../_base_/datasets/cityscapes_sample.py',
    'mmseg::_base_/default_runtime.py',
]
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(num_classes=19, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=19, norm_cfg=norm_cfg))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=200, by_epoch=False)
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
