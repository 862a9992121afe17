# Mask R-CNN + Agent-Swin-S (model only): the official detection backbone arguments
# (LeapLabTHU/Agent-Attention
#  downstream/detection/configs/agent_swin/agent_swin_s_mrcnn_1x_9-12-14-7.py):
# window 56, agents pooled to (9, 9), (12, 12), (14, 14), (7, 7), drop path 0.1.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
custom_imports = dict(imports=['mmattn.models', 'mmattn.engine'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmattn.AgentSwinTransformer',
        arch='small',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[96, 192, 384, 768]))
