# BEVANet-S on Cityscapes: the official configs/cityscapes/BEVANet_S.yaml (maomao0819/BEVANet),
# NUM_BLOCKS [2, 2, 3, 3, 2], PPM_PLANES 96, PLANES 32, HEAD_PLANES 128;
# 1 GPU(s) x 12 images, SGD lr 0.01, weight decay 0.0005, 500 epochs of
# floor(2975 / 12) = 247 iterations = 123500 iterations. From scratch, as the yaml
# (PRETRAINED ""); for ImageNet pre-training set
# model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH) (README).
_base_ = ['./_base_/bevanet_cityscapes-1024x1024.py']

model = dict(
    backbone=dict(arch='s'),
    decode_head=dict(in_channels=128, channels=128))
train_dataloader = dict(batch_size=12)
optim_wrapper = dict(optimizer=dict(lr=0.01, weight_decay=0.0005))
max_iters = 123500
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters, by_epoch=False)
]
val_interval = 2470
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(checkpoint=dict(interval=val_interval))
