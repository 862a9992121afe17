# FCOS + BVR on the bundled sample COCO data (CPU): the main job's FCOS (configs/sample/, half-width
# ResNet-18 from scratch, 96-channel FPN / head, GN) with BVR: a keypoint head (one GN conv per
# type, no logits conv) and centre / corner keys refining the cls / reg towers.
_base_ = '../sample/fcos_r18_fpn_sample-coco.py'

model = dict(
    bbox_head=dict(
        type='mmattn.BVRFCOSHead',
        keypoint_head=dict(
            stacked_convs=1,
            logits_convs=0,
            norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
            loss_cls=dict(type='GaussianFocalLoss', loss_weight=0.25),
            loss_offset=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0)),
        keypoint_cfg=dict(max_keypoint_num=20),
        feature_selection_cfg=dict(cross_level_topk=50),
        num_attn_heads=8,
        scale_position=False,
        pos_cfg=dict(base_size=[100, 100], log_scale=True)))
