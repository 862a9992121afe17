# BEVANet on ADE20K: the official configs/ade20k/BEVANet.yaml (maomao0819/BEVANet),
# NUM_BLOCKS [2, 2, 4, 4, 2], PPM_PLANES 96, PLANES 64, HEAD_PLANES 128, 150 classes;
# 1 GPU x 14 images, SGD lr 0.0015, weight decay 0.0005, 150 epochs of
# floor(20210 / 14) = 1443 iterations = 216450 iterations; no class weights (the official ADE20K
# dataset has none); labels with zero reduced (mmseg's ADE20KDataset default, as the official
# reduce_zero_label). Training: long side int(640 x (0.5 + i / 10) + 0.5), i = 0..11 (the
# official random.randint(0, SCALE_FACTOR = 11) includes 11: 12 long sides 320 ... 1024), black /
# ignore padding and a 512x512 crop, flip, no photometric augmentation.
# Validation and test follow the official protocol (datasets/ade20k.py, 'val' list, the
# README's eval command): short side resized to 640 (image bilinear, label nearest), padded to a
# multiple of 8 (image with the mean colour, label 255), then ONE random 512x512 crop per image,
# scored at that crop (ori_shape is set to the crop, so the prediction is not resized back).
# For whole-image scores (the official 'testval' lists: short side 640, prediction resized to
# the original label; the official also pads to a multiple of 8 and resizes the padded
# prediction) use test_pipeline = [LoadImageFromFile, Resize(scale=(8192, 640),
# keep_ratio=True), LoadAnnotations(reduce_zero_label=True), PackSegInputs].
_base_ = ['./_base_/bevanet_cityscapes-1024x1024.py']

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='base'),
    decode_head=dict(
        in_channels=256,
        channels=128,
        num_classes=150,
        loss_decode=[
            dict(type='mmattn.PixelMeanCrossEntropyLoss', loss_weight=0.4),
            dict(type='OhemCrossEntropy', thres=0.9, min_kept=131072, loss_weight=1.0),
            dict(type='BoundaryLoss', loss_weight=20.0),
            dict(type='OhemCrossEntropy', thres=0.9, min_kept=131072, loss_weight=1.0),
        ]))
train_scales = [(s, s) for s in (320, 384, 448, 512, 576, 640, 704, 768, 832, 896, 960, 1024)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomChoiceResize', scales=train_scales, resize_type='Resize', keep_ratio=True),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='GenerateEdge', edge_width=4),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', scale=(8192, 640), keep_ratio=True),
    # the official pads with the ImageNet mean (BGR, as the image is here) and label 255
    dict(type='Pad', size_divisor=8, pad_val=dict(img=(103.53, 116.28, 123.675), seg=255)),
    dict(type='RandomCrop', crop_size=crop_size),
    # score at the crop: EncoderDecoder resizes the prediction to ori_shape
    dict(type='KeyMapper', mapping=dict(img_shape='img_shape'),
         remapping=dict(img_shape='ori_shape'), auto_remap=False),
    dict(type='PackSegInputs')
]
dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
train_dataloader = dict(
    batch_size=14,
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=0.0015, weight_decay=0.0005))
max_iters = 216450
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters, by_epoch=False)
]
val_interval = 14430
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(checkpoint=dict(interval=val_interval))
