# Mask R-CNN + SLAB-Swin-T trained from scratch on the bundled sample COCO data with the PRepBN
# schedule (CPU smoke runs): BatchNorm statistics train (norm_eval=False) and PRepBNHook moves every
# norm from LayerNorm to RepBN over the first 80% of the iterations (the SLAB authors' advice for
# short schedules), following the runner's iteration.
_base_ = [
    './_base_/mask-rcnn_slab-swin-t_fpn.py',
    '../_base_/datasets/coco_sample_instance.py',
    'mmdet::_base_/default_runtime.py',
]
model = dict(
    backbone=dict(norm_eval=False),
    roi_head=dict(bbox_head=dict(num_classes=5), mask_head=dict(num_classes=5)))
custom_hooks = [dict(type='mmattn.PRepBNHook', total_iters=0.8, warmup_iters=0)]

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
            'norm': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
randomness = dict(seed=0)
