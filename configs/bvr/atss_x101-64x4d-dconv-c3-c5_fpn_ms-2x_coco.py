# Plain ATSS with the settings of the official BVR ATSS config minus BVR: ResNeXt-101-64x4d-DCN
# (with_cp), FPN extra convs on the output, GN head (mmdet's ATSSHead default, as officially),
# one anchor (octave 8), GIoU x2, ATSS assigner top 9; multi-scale training (1333, [400, 1200]),
# 20 epochs (steps 16 / 19), NMS 0.6. mmdet's ATSSHead has no DCN on the last tower conv; the BVR
# config (mmattn.BVRATSSHead) has it as the official config asks.
_base_ = 'mmdet::atss/atss_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=64,
        base_width=4,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True),
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')),
    test_cfg=dict(nms=dict(type='nms', iou_threshold=0.6)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(1333, 400), (1333, 1200)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
max_epochs = 20
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[16, 19],
         gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
