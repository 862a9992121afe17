# Mask R-CNN + SLAB-Swin-S, COCO 1x: the official
# detection/configs/swin/mask_rcnn_swin_linear_small_patch4_window7_mstrain_480-800_adamw_1x_coco.py:
# the SLAB-Swin-T config (same schedule, augmentation, mixed precision) with the small backbone and
# drop path 0.2. The official repository publishes no COCO result for SLAB-Swin (its table says TBD).
_base_ = ['./mask-rcnn_slab-swin-t_fpn_amp-ms-crop-1x_coco.py']

# Official ImageNet-1K classifier ({'model': sd}, PRepBN counters at 0: pure RepBN).
pretrained = 'https://github.com/xinghaochen/SLAB/releases/download/ckpts/slab_swin_small.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
