# Semantic FPN + PoolFormer-S12, ADE20K 40k: sail-sg/poolformer
# segmentation/configs/sem_fpn/PoolFormer/fpn_poolformer_s12_ade20k_40k.py (mmseg 0.19, 8 GPUs x 4
# images, 512x512 crops, AdamW lr 2e-4, wd 1e-4, poly power 0.9 down to 0, 40k iterations; PVT's
# 80k-iteration 4-GPU recipe with half the iterations and twice the lr). Single-scale test at
# 2048x512 without ResizeToMultiple, as there.
_base_ = [
    './_base_/fpn_poolformer-s12.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_40k.py'
]

# the official ImageNet-1K classifier; it loads as is (classifier-only keys dropped)
checkpoint = 'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s12.pth.tar'  # noqa: E501
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.0001))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)]
train_dataloader = dict(batch_size=4)
