# Mask R-CNN + SLAB-Swin-T, COCO 1x: the official
# detection/configs/swin/mask_rcnn_slab_swin_tiny_patch4_window7_mstrain_480-800_adamw_1x_coco.py
# (mmdet 2.x, 8 GPUs x 2 images, fp16):
# multi-scale (480-800) + crop augmentation, AdamW lr 1e-4, wd 0.05 (none on norms and relative
# position tables), 12 epochs, steps at 8 and 11, 500-iter linear warm-up, mixed precision.
# The official repository publishes no COCO result for SLAB-Swin (its table says TBD).
# The augmentation and the AMP optimiser wrapper are mmdet's Swin multi-scale-crop AMP config's,
# inherited; the schedule is set back to 1x here.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_amp-ms-crop-3x_coco.py']
custom_imports = dict(imports=['mmattn.models', 'mmattn.engine'], allow_failed_imports=False)

# Official ImageNet-1K classifier ({'model': sd}, PRepBN counters at 0: pure RepBN).
pretrained = 'https://github.com/xinghaochen/SLAB/releases/download/ckpts/slab_swin_tiny.pth'
# the backbone of ./_base_/mask-rcnn_slab-swin-t_fpn.py (windows 56, 28, 7, 7, PRepBN with frozen
# BatchNorm statistics, drop path 0.1), with the classifier checkpoint
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmattn.SLABSwinTransformer',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
