# Mask R-CNN + SLAB-Swin-T (model only): the official SwinTransformer_SLAB detection backbone
# (xinghaochen/SLAB detection/configs/swin/
#  mask_rcnn_slab_swin_tiny_patch4_window7_mstrain_480-800_adamw_1x_coco.py):
# windows 56, 28, 7, 7 (odd blocks shifted), PRepBN norms with BatchNorm statistics frozen,
# drop path 0.1.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
custom_imports = dict(imports=['mmattn.models', 'mmattn.engine'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmattn.SLABSwinTransformer',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        norm_eval=True),
    neck=dict(in_channels=[96, 192, 384, 768]))
