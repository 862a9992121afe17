# RetinaNet + BiFormer-B, COCO 1x: rayleizhu/BiFormer object_detection/configs/coco/
# retinanet.1x.biformer_base.py, the BiFormer-S recipe with the base backbone and drop path 0.3.
_base_ = ['./retinanet_biformer-s_fpn_1x_coco.py']

# Official ImageNet-1K classifier (README "model" link of BiFormer-B,
# https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content; download it
# once to this path). It loads as is ({'model': sd}).
checkpoint = 'data/pretrained/biformer_base_in1k.pth'
model = dict(
    backbone=dict(
        arch='base', drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
