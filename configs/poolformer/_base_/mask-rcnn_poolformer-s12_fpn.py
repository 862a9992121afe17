# Mask R-CNN + PoolFormer-S12 (model only), as sail-sg/poolformer
# detection/configs/mask_rcnn_poolformer_s12_fpn_1x_coco.py: the dense backbone poolformer_s12_feat
# (GroupNorm per output, no drop path), FPN on all four outputs.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']

custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmattn.PoolFormer',
        arch='s12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.),
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, num_outs=5))
