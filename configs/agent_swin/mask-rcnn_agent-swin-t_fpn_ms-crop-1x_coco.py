# Mask R-CNN + Agent-Swin-T, COCO 1x: the official
# downstream/detection/configs/agent_swin/agent_swin_t_mrcnn_1x_9-12-14-7.py
# (mmdet 2.x, 8 GPUs x 2 images): multi-scale (480-800) + crop augmentation, AdamW lr 1e-4,
# wd 0.05 (none on norms, relative position tables and the six agent biases), 12 epochs, steps at
# 8 and 11, 500-iter linear warm-up.
# The augmentation is mmdet's Swin multi-scale-crop pipeline, inherited from its 3x config; the
# schedule is set back to 1x here.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['mmattn.models', 'mmattn.engine'], allow_failed_imports=False)

# Official ImageNet-1K classifier, https://cloud.tsinghua.edu.cn/f/a2ddc1190c224f768a41/?dl=1
# (the URL carries no file name: download it once to this path; it loads as is, {'model': sd}).
pretrained = 'data/pretrained/agent_swin_t_max_acc.pth'
# the backbone of ./_base_/mask-rcnn_agent-swin-t_fpn.py (window 56, agents (9, 9), (12, 12),
# (14, 14), (7, 7), drop path 0.1), with the classifier checkpoint
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmattn.AgentSwinTransformer',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
# mmdet's Swin AdamW (lr 1e-4, wd 0.05, no decay on norms / position tables), plus the agent biases
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'an_bias': dict(decay_mult=0.),
            'na_bias': dict(decay_mult=0.),
            'ah_bias': dict(decay_mult=0.),
            'aw_bias': dict(decay_mult=0.),
            'ha_bias': dict(decay_mult=0.),
            'wa_bias': dict(decay_mult=0.)
        }))
