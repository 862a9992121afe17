# RetinaNet + PoolFormer-S24, COCO 1x (sail-sg/poolformer
# detection/configs/retinanet_poolformer_s24_fpn_1x_coco.py): the S12 settings with the S24 backbone
# and its ImageNet-1K checkpoint.
_base_ = ['./retinanet_poolformer-s12_fpn_1x_coco.py']

checkpoint = 'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s24.pth.tar'  # noqa: E501
model = dict(backbone=dict(arch='s24', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
