# Semantic FPN + BiFormer-S (model only), as rayleizhu/BiFormer
# semantic_segmentation/configs/ade20k/sfpn.biformer_small.py: the segmentation backbone BiFormer_mm
# (n_win 8 for ~512 crops, auto_pad, a LayerNorm2d per output, SyncBN in the stem and downsampling
# layers), drop path 0.15.
_base_ = ['mmseg::_base_/models/fpn_r50.py']

custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmattn.BiFormer',
        arch='small',
        n_win=8,
        auto_pad=True,
        drop_path_rate=0.15,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True)),
    neck=dict(in_channels=[64, 128, 256, 512]))
