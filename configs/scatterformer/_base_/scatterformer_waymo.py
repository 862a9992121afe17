# ScatterFormer, official Waymo setting (skyhehe123/ScatterFormer tools/cfgs/waymo_models/scatterformer.yaml):
# range +-76.8 m, voxel 0.32 x 0.32 x 0.1875 m (480 x 480 x 32), window 12, dim 128 / 4 heads,
# 2 stages x 3 layers, cascaded DED BEV backbone (4 modules), CenterPoint head with IoU branch.
default_scope = 'mmdet3d'
custom_imports = dict(imports=['mmattn.models', 'mmattn.datasets', 'mmattn.evaluation',
                               'mmattn.engine'],
                      allow_failed_imports=False)

class_names = ['Car', 'Pedestrian', 'Cyclist']
metainfo = dict(classes=class_names)
point_cloud_range = [-76.8, -76.8, -2.0, 76.8, 76.8, 4.0]
voxel_size = [0.32, 0.32, 0.1875]
grid_size = [480, 480, 32]

model = dict(
    type='mmattn.ScatterFormer',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        voxel=True,
        voxel_type='dynamic',
        voxel_layer=dict(max_num_points=-1, point_cloud_range=point_cloud_range,
                         voxel_size=voxel_size, max_voxels=(-1, -1))),
    voxel_encoder=dict(
        type='mmattn.DynamicPFNVFE',  # = mmdet3d DynamicVFE(with_cluster/voxel_center=True)
        in_channels=5,
        feat_channels=(32, 64),  # official NUM_FILTERS [64, 64]: PFNLayerV2 halves all but the last
        voxel_size=voxel_size,
        point_cloud_range=point_cloud_range),
    middle_encoder=dict(
        type='mmattn.ScatterFormerMiddleEncoder',
        in_channels=64,
        sparse_shape=[grid_size[2] + 1, grid_size[1], grid_size[0]],
        dim=128,
        num_heads=4,
        depths=(3, 3),
        win_size=12,
        pool_heads=8,
        sla_backend='auto',
        sparse_conv_backend='auto'),  # spconv when it can run the call, else the rule book
    backbone=dict(type='mmattn.CascadeDEDBackbone', in_channels=128, num_layers=4,
                  num_sbb=(2, 1, 1), down_strides=(1, 2, 2), out_channels=128),
    bbox_head=dict(
        type='mmattn.CenterHeadIoU',
        in_channels=128,
        tasks=[dict(num_class=3, class_names=class_names)],
        common_heads=dict(center=(2, 2), center_z=(1, 2), dim=(3, 2), rot=(2, 2), iou=(1, 2)),
        share_conv_channel=64,
        loss_iou_weight=1.0,
        loss_iou_reg_weight=2.0),
    train_cfg=dict(
        point_cloud_range=point_cloud_range, voxel_size=voxel_size, grid_size=grid_size,
        out_size_factor=2, gaussian_overlap=0.1, min_radius=2, max_objs=500, dense_reg=1,
        code_weights=[1.0] * 8),
    test_cfg=dict(  # the geometry again: mmdet3d's init_model (demo) drops train_cfg
        point_cloud_range=point_cloud_range, voxel_size=voxel_size, out_size_factor=2,
        score_threshold=0.1, post_center_limit_range=[-80., -80., -10., 80., 80., 10.],
        max_num=500, nms_type='rotate', nms_thr=[0.75, 0.6, 0.55], pre_max_size=4096,
        post_max_size=500, iou_rectifier=[0.68, 0.71, 0.65]))

# OpenPCDet's adam_onecycle: max lr 0.006, div 100, pct_start 0.1, cosine both ways, final lr
# max / 100 / 1e4, beta1 0.95 -> 0.85 -> 0.95, beta2 0.99, decoupled wd 0.05 on every weight, clip 10.
lr = 0.006
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.95, 0.99), weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='mmattn.BEVVisualizationHook', draw=False))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Det3DLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False

