# RetinaNet + PoolFormer-S12 on the bundled sample COCO data (random init, CPU smoke runs): the
# model of retinanet_poolformer-s12_fpn_1x_coco.py with its optimiser, 5 classes, the sample data's
# small scale and a short schedule.
_base_ = [
    './_base_/retinanet_poolformer-s12_fpn.py',
    '../_base_/datasets/coco_sample_detection.py',
    'mmdet::_base_/default_runtime.py',
]
model = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=5))

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
randomness = dict(seed=0)
