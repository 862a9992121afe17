# ATSS + BVR, X-101-64x4d-DCN, multi-scale 2x (official
# configs/bvr/atss_x101_dcn_fpn_relation_coco_2x.py without its stray resume_from): 50.6 AP on COCO
# val2017 (README). DCN on the last tower conv; one positional table shared by the cls and reg
# transformers (shared_positional_encoding_outer); base 300.
# pos_cfg.num_layers=2: the released checkpoints have a 2-layer positional MLP (see README).
_base_ = './atss_x101-64x4d-dconv-c3-c5_fpn_ms-2x_coco.py'
custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        type='mmattn.BVRATSSHead',
        dcn_on_last_conv=True,
        keypoint_head=dict(
            stacked_convs=2,
            logits_convs=1,
            head_types=['top_left_corner', 'bottom_right_corner', 'center'],
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
        shared_positional_encoding_outer=True,
        pos_cfg=dict(base_size=[300, 300], log_scale=True, num_layers=2)))
