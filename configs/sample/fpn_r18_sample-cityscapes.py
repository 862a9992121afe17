# Semantic FPN with a ResNet-18 (stock mmseg parts) on the bundled sample Cityscapes data: the
# segmentation counterpart of the main job, used by the train / resume tests.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    '../_base_/datasets/cityscapes_sample.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN in mmseg's base; BN runs without DDP too
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(depth=18, norm_cfg=norm_cfg, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64, num_classes=19,
                     norm_cfg=norm_cfg))

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=400, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=400, val_interval=200)
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
