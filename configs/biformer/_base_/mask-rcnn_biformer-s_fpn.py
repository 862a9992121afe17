# Mask R-CNN + BiFormer-S (model only), as rayleizhu/BiFormer
# object_detection/configs/coco/maskrcnn.1x.biformer_small.py: the detection backbone BiFormer_mm
# (n_win 16, auto_pad, a LayerNorm2d per output, BatchNorm frozen in train mode), drop path 0.2.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']

custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmattn.BiFormer',
        arch='small',
        n_win=16,
        auto_pad=True,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        norm_eval=True),
    neck=dict(in_channels=[64, 128, 256, 512]))
