# BEVANet-S on CamVid: the official configs/camvid/BEVANet_S.yaml (maomao0819/BEVANet),
# NUM_BLOCKS [2, 2, 3, 3, 2], PPM_PLANES 96, PLANES 32, HEAD_PLANES 128, 11 classes;
# 1 GPU x 24 images, SGD lr 0.0038, weight decay 0.0005, 100 epochs of
# floor(367 / 24) = 15 iterations = 1500 iterations (train.lst, PIDNet's list: 367 images);
# validation on val.lst (101 images) after every epoch (VALID_LAST_EPOCH 100 = END_EPOCH: the
# official trainer validates every epoch of the last 100), keeping the best. No class weights
# (the official CamVid dataset has none). Data as the official CamVid class reads it
# (mmattn.CamVidDataset): RGB images, colour-coded labels (11 colours, all others ignored),
# PIDNet's list files.
# Training: long side int(960 x (0.5 + i / 10) + 0.5), i = 0..16 (BASE_SIZE 960,
# SCALE_FACTOR 16), black / ignore padding and a 720x960 crop, flip, no photometric augmentation;
# validation on the whole 960x720 image (the official test does not resize it).
# Initialisation: the yaml trains from scratch (PRETRAINED ""). To start from a Cityscapes
# model the official way (MODEL.PRETRAINED = a fine-tuned Cityscapes .pt: every key whose name
# and shape match, i.e. all but the two 19-class classifiers), convert it with
# tools/model_converters/bevanet2mmattn.py and set load_from to the converted file: mmengine
# loads it non-strictly and leaves the mis-shaped classifiers (decode_head.conv_seg,
# decode_head.p_cls_seg) at their initialisation (README).
_base_ = ['./_base_/bevanet_cityscapes-1024x1024.py']
custom_imports = dict(imports=['mmattn.models', 'mmattn.datasets'], allow_failed_imports=False)

crop_size = (720, 960)  # (h, w)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='s'),
    decode_head=dict(
        in_channels=128,
        channels=128,
        num_classes=11,
        loss_decode=[
            dict(type='mmattn.PixelMeanCrossEntropyLoss', loss_weight=0.4),
            dict(type='OhemCrossEntropy', thres=0.9, min_kept=131072, loss_weight=1.0),
            dict(type='BoundaryLoss', loss_weight=20.0),
            dict(type='OhemCrossEntropy', thres=0.9, min_kept=131072, loss_weight=1.0),
        ]))
train_scales = [(s, s) for s in (480, 576, 672, 768, 864, 960, 1056, 1152, 1248, 1344, 1440,
                                 1536, 1632, 1728, 1824, 1920, 2016)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmattn.LoadCamVidAnnotations'),
    dict(type='RandomChoiceResize', scales=train_scales, resize_type='Resize', keep_ratio=True),
    dict(type='Pad', size=(crop_size[1], crop_size[0]), pad_val=dict(img=0, seg=255)),  # (w, h)
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='GenerateEdge', edge_width=4),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmattn.LoadCamVidAnnotations'),
    dict(type='PackSegInputs')
]
dataset_type = 'mmattn.CamVidDataset'
data_root = 'data/camvid'
train_dataloader = dict(
    batch_size=24,
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='../list/camvid/train.lst',
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='../list/camvid/val.lst',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=0.0038, weight_decay=0.0005))
max_iters = 1500
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters, by_epoch=False)
]
val_interval = 15
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(checkpoint=dict(interval=val_interval))
load_from = None  # from scratch as the yaml; or a converted Cityscapes checkpoint (above)
