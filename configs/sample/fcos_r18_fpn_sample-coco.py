# The main job (`make demo`): FCOS with a ResNet-18 trained from scratch on the bundled sample COCO
# data on a CPU, evaluated with COCO bbox mAP on the held-out val split.
_base_ = [
    '../_base_/datasets/coco_sample_detection.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

model = dict(
    type='FCOS',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=32,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 256],
        out_channels=96,
        start_level=0,
        add_extra_convs='on_output',
        num_outs=3,
        relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead',
        num_classes=5,
        in_channels=96,
        stacked_convs=2,
        feat_channels=96,
        strides=[8, 16, 32],
        regress_ranges=((-1, 40), (40, 80), (80, 1e8)),
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        center_sample_radius=1.5,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100))

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=2e-5, convert_to_iter_based=True),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=4, max_keep_ckpts=1),
    visualization=dict(type='mmattn.PNGDetVisualizationHook', draw=False))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=4)
