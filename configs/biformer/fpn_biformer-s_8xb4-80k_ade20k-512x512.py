# Semantic FPN + BiFormer-S, ADE20K 80k: rayleizhu/BiFormer semantic_segmentation/configs/ade20k/
# sfpn.biformer_small.py (mmseg 0.x, 8 GPUs x 4 images, 512x512 crops, AdamW lr 2e-4, wd 1e-4,
# 1000-iteration linear warm-up from 0.1 times cosine annealing to 1e-8 of the base lr over 80k
# iterations, validation every 4k, fp16 with loss scale 512). The official test pipeline resizes
# with AlignResize (to a multiple of 32); mmseg 1.x has none and auto_pad takes any size, so the
# plain keep-ratio Resize of mmseg's ADE20K set is used.
_base_ = [
    './_base_/fpn_biformer-s.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py'
]

# Official ImageNet-1K classifier (README "model" link of BiFormer-S,
# https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content; the URL carries
# no file name: download it once to this path). It loads as is ({'model': sd}).
checkpoint = 'data/pretrained/biformer_small_in1k.pth'
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.0001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', T_max=80000, eta_min_ratio=1e-8, by_epoch=False, begin=0,
         end=80000)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000))
train_dataloader = dict(batch_size=4)
