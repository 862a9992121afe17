# UperNet + Agent-Swin-T (model only): the official segmentation backbone arguments
# (LeapLabTHU/Agent-Attention
#  downstream/segmentation/configs/agent_swin/upernet_agent_swin_t_9-12-14-7.py):
# window 56, agents pooled to (9, 9), (12, 12), (14, 14), (7, 7), drop path 0.3.
_base_ = ['mmseg::_base_/models/upernet_swin.py']
custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmattn.AgentSwinTransformer',
        arch='tiny',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
