# Semantic FPN + PoolFormer-S36, Cityscapes 80k: the settings of
# fpn_poolformer-s12_4xb2-80k_cityscapes-512x1024.py with the S36 backbone and its ImageNet-1K
# checkpoint.
_base_ = ['./fpn_poolformer-s12_4xb2-80k_cityscapes-512x1024.py']

checkpoint = 'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s36.pth.tar'  # noqa: E501
model = dict(backbone=dict(arch='s36', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
