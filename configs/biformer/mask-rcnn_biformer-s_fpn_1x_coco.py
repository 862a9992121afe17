# Mask R-CNN + BiFormer-S, COCO 1x: rayleizhu/BiFormer object_detection/configs/coco/
# maskrcnn.1x.biformer_small.py (mmdet 2.x, 8 GPUs x 2 images, AdamW lr 1e-4, betas (0.9, 0.999),
# wd 0.05 with none on parameters named *norm*, 12 epochs, steps at 8 and 11 after a 500-iteration
# linear warm-up, fp16 (mmcv's Fp16OptimizerHook: static loss scale 512)).
_base_ = [
    './_base_/mask-rcnn_biformer-s_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py'
]

# Official ImageNet-1K classifier (README "model" link of BiFormer-S,
# https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content; the URL carries
# no file name: download it once to this path). It loads as is ({'model': sd}).
checkpoint = 'data/pretrained/biformer_small_in1k.pth'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
