# RetinaNet + PoolFormer-S12 (model only), as sail-sg/poolformer
# detection/configs/retinanet_poolformer_s12_fpn_1x_coco.py: the dense backbone poolformer_s12_feat
# (GroupNorm per output, no drop path) and FPN from stride 8 with extra convs on the input. sail-sg
# ran it with FORK_LAST3=1 (stride-4 output not normed, FPN start_level=1). Here the backbone
# returns strides 8-32 only (out_indices=(1, 2, 3)) and FPN starts at its first input: the same
# network, the same checkpoint keys, no unused output.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py']

custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmattn.PoolFormer',
        arch='s12',
        out_indices=(1, 2, 3),
        drop_path_rate=0.),
    neck=dict(
        in_channels=[128, 320, 512],
        out_channels=256,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5))
