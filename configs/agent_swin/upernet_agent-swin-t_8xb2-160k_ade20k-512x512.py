# UperNet + Agent-Swin-T, ADE20K 160k: the official
# downstream/segmentation/configs/agent_swin/upernet_agent_swin_t_9-12-14-7.py
# (mmseg 0.x, 8 GPUs x 2 images, 512x512 crops): AdamW lr 6e-5, wd 0.01 (none on norms, relative
# position tables and the six agent biases), 1500-iter linear warm-up from 1e-6, then poly to 0.
_base_ = [
    './_base_/upernet_agent-swin-t.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]

# Official ImageNet-1K classifier, https://cloud.tsinghua.edu.cn/f/a2ddc1190c224f768a41/?dl=1
# (the URL carries no file name: download it once to this path; it loads as is, {'model': sd}).
pretrained = 'data/pretrained/agent_swin_t_max_acc.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
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
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
