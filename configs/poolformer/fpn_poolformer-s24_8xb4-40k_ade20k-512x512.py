# Semantic FPN + PoolFormer-S24, ADE20K 40k (sail-sg/poolformer
# segmentation/configs/sem_fpn/PoolFormer/fpn_poolformer_s24_ade20k_40k.py): the S12 settings with
# the S24 backbone and its ImageNet-1K checkpoint.
_base_ = ['./fpn_poolformer-s12_8xb4-40k_ade20k-512x512.py']

checkpoint = 'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s24.pth.tar'  # noqa: E501
model = dict(backbone=dict(arch='s24', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
