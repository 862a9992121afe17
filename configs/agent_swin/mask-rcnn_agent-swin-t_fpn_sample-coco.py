# Mask R-CNN + Agent-Swin-T on the bundled sample COCO data (random init, CPU smoke runs): the same
# model as mask-rcnn_agent-swin-t_fpn_ms-crop-1x_coco.py with its optimiser, 5 classes, a short
# schedule.
_base_ = [
    './_base_/mask-rcnn_agent-swin-t_fpn.py',
    '../_base_/datasets/coco_sample_instance.py',
    'mmdet::_base_/default_runtime.py',
]
model = dict(roi_head=dict(bbox_head=dict(num_classes=5), mask_head=dict(num_classes=5)))

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'an_bias': dict(decay_mult=0.),
            'na_bias': dict(decay_mult=0.),
            'ah_bias': dict(decay_mult=0.),
            'aw_bias': dict(decay_mult=0.),
            'ha_bias': dict(decay_mult=0.),
            'wa_bias': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
randomness = dict(seed=0)
