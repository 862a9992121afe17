# Semantic FPN + PoolFormer-S12, Cityscapes 80k. sail-sg publishes Semantic FPN on ADE20K only
# (segmentation/configs/sem_fpn/PoolFormer/fpn_poolformer_s12_ade20k_40k.py: AdamW lr 2e-4, wd 1e-4,
# poly power 0.9 down to 0, 40k iterations on 8 GPUs x 4 images; PVT's 80k-iteration, 4 x 4 images,
# lr 1e-4 recipe halved in length with the lr doubled). No Cityscapes number exists for PoolFormer.
# This config is mmseg's Semantic FPN Cityscapes setting
# (sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py: 512x1024 crops, 4 GPUs x 2 images, 80k
# iterations) with PoolFormer's optimiser at the recipe's base lr 1e-4 (AdamW, wd 1e-4, poly 0.9
# down to 0).
_base_ = [
    './_base_/fpn_poolformer-s12.py', 'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py'
]

# the official ImageNet-1K classifier; it loads as is (classifier-only keys dropped)
checkpoint = 'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s12.pth.tar'  # noqa: E501
crop_size = (512, 1024)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=19))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=80000, by_epoch=False)]
train_dataloader = dict(batch_size=2)
