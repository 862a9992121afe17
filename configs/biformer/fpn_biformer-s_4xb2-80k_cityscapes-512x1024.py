# Semantic FPN + BiFormer-S, Cityscapes 80k. The BiFormer authors publish no Cityscapes run: this is
# the official ADE20K recipe (sfpn.biformer_small.py: n_win 8, drop path 0.15, AdamW wd 1e-4,
# 1000-iteration linear warm-up from 0.1 times cosine annealing to 1e-8 of the base lr, fp16 with
# loss scale 512) on mmseg's Semantic FPN Cityscapes schedule (4 GPUs x 2 images, 512x1024 crops,
# 80k iterations), at the recipe's 4-GPU base lr 1e-4 (the official 2e-4 is that lr doubled for
# 8 GPUs x 4 images).
_base_ = [
    './_base_/fpn_biformer-s.py', 'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py'
]

# Official ImageNet-1K classifier (README "model" link of BiFormer-S,
# https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content; the URL carries
# no file name: download it once to this path). It loads as is ({'model': sd}).
checkpoint = 'data/pretrained/biformer_small_in1k.pth'
crop_size = (512, 1024)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=19))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', T_max=80000, eta_min_ratio=1e-8, by_epoch=False, begin=0,
         end=80000)
]
train_dataloader = dict(batch_size=2)
