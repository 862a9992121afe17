# RetinaNet + BVR, R-50, 1x (official configs/bvr/retinanet_r50_fpn_relation_coco_1x.py):
# 38.5 AP on COCO val2017 with the official checkpoint (README). Keypoint head with GN, one logits
# conv; positional table base 400; one table per transformer (not shared between cls and reg).
# pos_cfg.num_layers=2: the released checkpoints have a 2-layer positional MLP (see README).
_base_ = './retinanet_r50_fpn_gn-head-neck_l1_1x_coco.py'
custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    bbox_head=dict(
        type='mmattn.BVRRetinaHead',
        keypoint_head=dict(
            stacked_convs=2,
            logits_convs=1,
            head_types=['top_left_corner', 'bottom_right_corner', 'center'],
            norm_cfg=norm_cfg,
            loss_cls=dict(type='GaussianFocalLoss', loss_weight=0.25),
            loss_offset=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0)),
        cls_keypoint_cfg=dict(keypoint_types=['center'], with_relation=True),
        reg_keypoint_cfg=dict(keypoint_types=['top_left_corner', 'bottom_right_corner'],
                              with_relation=True),
        keypoint_cfg=dict(max_keypoint_num=20),
        feature_selection_cfg=dict(selection_method='index', cross_level_topk=50,
                                   cross_level_selection=True),
        num_attn_heads=8,
        scale_position=False,
        pos_cfg=dict(base_size=[400, 400], log_scale=True, num_layers=2)))
