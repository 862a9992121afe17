# RetinaNet + PoolFormer-S12, COCO 1x: sail-sg/poolformer
# detection/configs/retinanet_poolformer_s12_fpn_1x_coco.py (mmdet 2.19, 8 GPUs x 2 images, AdamW lr
# 1e-4, wd 1e-4, no gradient clipping, 12 epochs, lr x0.1 at epochs 8 and 11 after a 500-iteration
# linear warm-up from 0.001; mmdet's 1333x800 single-scale pipeline).
_base_ = [
    './_base_/retinanet_poolformer-s12_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py'
]

# the official ImageNet-1K classifier; it loads as is (classifier-only keys dropped)
checkpoint = 'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s12.pth.tar'  # noqa: E501
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    clip_grad=None)
auto_scale_lr = dict(enable=False, base_batch_size=16)
