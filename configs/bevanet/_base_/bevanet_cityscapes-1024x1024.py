# BEVANet on Cityscapes with the official recipe (maomao0819/BEVANet, configs/cityscapes/*.yaml,
# utils/criterion.py, datasets/base_dataset.py); the per-arch configs set the arch, widths, batch,
# lr, weight decay and length. Official settings reproduced here:
# - random scale 0.5 + randint(0, 16) / 10 (17 discrete values, 0.5 ... 2.1) of the 2048x1024
#   image, pad (image black, label 255) and random crop 1024x1024, horizontal flip p=0.5, no
#   photometric augmentation; RGB, ImageNet mean / std;
# - losses (mmseg PIDHead layout): 0.4 x class-weighted CE on the aux (P) head, OHEM (0.9, 131072,
#   class weights) on the main head, 20 x weighted BCE on the boundary head, OHEM on the main head
#   with the label kept only where sigmoid(boundary) > 0.8; logits up-sampled align_corners=True;
# - SGD momentum 0.9, no nesterov, one parameter group, poly 0.9 per iteration to 0, no warm-up;
#   iterations = floor(2975 / total batch) x epochs;
# - plain BatchNorm per device (the official trainer is nn.DataParallel, which does not
#   synchronise BN); test on the full 1024x2048 image, main head only.
# Edge ground truth: mmseg's GenerateEdge(edge_width=4), not the official Canny edges (README).
_base_ = ['mmseg::_base_/datasets/cityscapes.py', 'mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

# Cityscapes class weights of the official loss (trainId order)
class_weight = [
    0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023, 0.9539, 0.9843,
    1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507
]
crop_size = (1024, 1024)
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmattn.BEVANet', arch='base', norm_cfg=norm_cfg, align_corners=False,
        init_cfg=None),
    decode_head=dict(
        type='mmattn.BEVANetHead',
        in_channels=256,
        channels=128,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=[
            # mean over all pixels (mmseg's CrossEntropyLoss divides by the label weights)
            dict(type='mmattn.PixelMeanCrossEntropyLoss', class_weight=class_weight,
                 loss_weight=0.4),
            dict(type='OhemCrossEntropy', thres=0.9, min_kept=131072, class_weight=class_weight,
                 loss_weight=1.0),
            dict(type='BoundaryLoss', loss_weight=20.0),
            dict(type='OhemCrossEntropy', thres=0.9, min_kept=131072, class_weight=class_weight,
                 loss_weight=1.0),
        ]),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# long side int(2048 x (0.5 + i / 10) + 0.5), i = 0..16, as the official multi_scale_aug; a
# (long, long) scale with keep_ratio makes the long side the binding one, so the short side is
# int(1024 x long / 2048 + 0.5) as there
train_scales = [(s, s) for s in (1024, 1229, 1434, 1638, 1843, 2048, 2253, 2458, 2662, 2867, 3072,
                                 3277, 3482, 3686, 3891, 4096, 4301)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomChoiceResize', scales=train_scales, resize_type='Resize', keep_ratio=True),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='GenerateEdge', edge_width=4),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size=6, num_workers=4, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.008, momentum=0.9, weight_decay=0.0004),
    clip_grad=None)
max_iters = 123500
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters, by_epoch=False)
]
# the official trainer validates every 10 epochs
val_interval = 2470
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=val_interval, max_keep_ckpts=3,
        save_best='mIoU'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
log_processor = dict(by_epoch=False)
randomness = dict(seed=304)
