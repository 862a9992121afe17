# BEVANet-SW on Cityscapes: the official configs/cityscapes/BEVANet_SW.yaml (maomao0819/BEVANet),
# NUM_BLOCKS [2, 2, 3, 3, 2], PPM_PLANES 96, PLANES 64, HEAD_PLANES 128;
# 1 GPU(s) x 10 images, SGD lr 0.01, weight decay 0.001, 484 epochs of
# floor(2975 / 10) = 297 iterations = 143748 iterations. From scratch, as the yaml
# (PRETRAINED ""); for ImageNet pre-training set
# model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH) (README).
_base_ = ['./_base_/bevanet_cityscapes-1024x1024.py']

model = dict(
    backbone=dict(arch='sw'),
    decode_head=dict(in_channels=256, channels=128))
train_dataloader = dict(batch_size=10)
optim_wrapper = dict(optimizer=dict(lr=0.01, weight_decay=0.001))
max_iters = 143748
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters, by_epoch=False)
]
val_interval = 2970
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(checkpoint=dict(interval=val_interval))
