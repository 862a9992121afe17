# Semantic FPN + PoolFormer-S12 (model only), as sail-sg/poolformer
# segmentation/configs/sem_fpn/PoolFormer/fpn_poolformer_s12_ade20k_40k.py: the dense backbone
# poolformer_s12_feat (GroupNorm per output, no drop path), FPN on all four outputs.
_base_ = ['mmseg::_base_/models/fpn_r50.py']

custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmattn.PoolFormer',
        arch='s12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.),
    neck=dict(in_channels=[64, 128, 320, 512]))
