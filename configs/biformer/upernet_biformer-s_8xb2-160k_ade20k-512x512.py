# UperNet + BiFormer-S, ADE20K 160k: rayleizhu/BiFormer semantic_segmentation/configs/ade20k/
# upernet.biformer_small.py (mmseg 0.x, 8 GPUs x 2 images, 512x512 crops, AdamW lr 6e-5,
# betas (0.9, 0.999), wd 0.01 with none on parameters named *norm*, 1500-iteration linear warm-up
# from 1e-6 times poly (power 1, to 0) over 160k iterations, fp16 with loss scale 512).
_base_ = [
    './_base_/upernet_biformer-s.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]

# Official ImageNet-1K classifier (README "model" link of BiFormer-S,
# https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content; the URL carries
# no file name: download it once to this path). It loads as is ({'model': sd}).
checkpoint = 'data/pretrained/biformer_small_in1k.pth'
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
# mmcv's poly policy with a linear warm-up: both factors from iteration 0 (they multiply)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=160000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)
