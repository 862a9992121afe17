# BEVANet-S on the bundled sample Cityscapes data (data/cityscapes_sample/, 256x128 images; random
# init, CPU runs of a few minutes): the model, losses, optimiser (SGD lr 0.01, wd 5e-4, poly 0.9)
# and augmentation of bevanet-s_1xb12-500e_cityscapes-1024x1024.py, scaled to the sample images
# (long side 256 x (0.5 ... 2.1), 128x128 crops), 2 images per batch, 100 iterations.
_base_ = ['./bevanet-s_1xb12-500e_cityscapes-1024x1024.py']

data_root = 'data/cityscapes_sample/'
crop_size = (128, 128)
model = dict(data_preprocessor=dict(size=crop_size))
train_scales = [(s, s) for s in (128, 154, 179, 205, 230, 256, 282, 307, 333, 358, 384, 410, 435,
                                 461, 486, 512, 538)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomChoiceResize', scales=train_scales, resize_type='Resize', keep_ratio=True),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='GenerateEdge', edge_width=4),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2,
    num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 100
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters, by_epoch=False)
]
val_interval = 100
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=val_interval, max_keep_ckpts=1, save_best=None))
randomness = dict(seed=0)
