# SDANet on the bundled PIDray sample (data/pidray_sample/), for the CPU: the architecture of
# sdanet_cascade-mask-rcnn_r101_fpn_1x_pidray.py (FPN + mmattn.SDANeck with its 5 SDA + DR modules,
# 3-stage cascade with mask heads) with a half-width ResNet-18 trained from scratch, 128 FPN / SDA
# channels, lighter RoI heads (256-d fcs, 2 mask convs, 128 RoIs), AdamW, 2 images per batch.
# One `tools/test.py` run prints easy / hard / hidden / overall / pooled bbox and segm AP.
_base_ = [
    './_base_/cascade-mask-rcnn_r101_fpn_1x.py',
    '../_base_/datasets/pidray_sample_instance.py',
]
channels = 128
bbox_head = [
    dict(type='Shared2FCBBoxHead', in_channels=channels, fc_out_channels=256, roi_feat_size=7,
         num_classes=12,
         bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                         target_stds=stds),
         reg_class_agnostic=True,
         loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
         loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
    for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
]
rcnn_train = [
    dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                       match_low_quality=False, ignore_iof_thr=-1),
         sampler=dict(type='RandomSampler', num=128, pos_fraction=0.25, neg_pos_ub=-1,
                      add_gt_as_proposals=True),
         mask_size=28, pos_weight=-1, debug=False)
    for iou in (0.5, 0.6, 0.7)
]
model = dict(
    backbone=dict(depth=18, base_channels=32, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=[
        dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=channels, num_outs=5),
        dict(type='mmattn.SDANeck', in_channels=channels, num_levels=5,
             reduction_channels=channels // 2),
    ],
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        mask_roi_extractor=dict(out_channels=channels),
        bbox_head=bbox_head,
        mask_head=dict(in_channels=channels, conv_out_channels=channels, num_convs=2)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=500),
        rcnn=rcnn_train),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=1e-5, convert_to_iter_based=True),
]
train_dataloader = dict(num_workers=1)
test_dataloader = dict(num_workers=1)
val_dataloader = test_dataloader
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
