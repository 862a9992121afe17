# ScatterFormer, nuScenes backbone
# (skyhehe123/ScatterFormer tools/cfgs/nuscenes_models/scatterformer.yaml):
# 10-sweep points (x, y, z, intensity, time lag), range [-54, -54, -5, 54, 54, 3], voxel 0.3 x 0.3 x
# 0.2 m (360 x 360 x 40, sparse shape 41 x 360 x 360), VFE NUM_FILTERS [64, 64], dim 128 / 4 heads,
# 2 stages x 3 layers, window 20 (CWI kernels 21), pillar pooling over 10 z slots, DED 4 x
# (NUM_SBB [2, 1, 1], DOWN_STRIDES [1, 2, 2]), BEV stride 2 (180 x 180).
#
# Only the backbone part is official. The official detector ends in OpenPCDet's TransFusionHead
# (with an IoU branch and proposal-local cross-attention) that mmattn does not have and mmdet3d
# 1.4 cannot build here (README "nuScenes checkpoint route"); `bbox_head` below is mmattn's
# CenterHeadIoU over the 10 classes as a stand-in (no velocity branch), so the official head's
# weights do not load and no result is claimed. No data pipeline or schedule: this config builds
# the model, e.g. to load an official checkpoint's backbone converted with the `scatterformer_pcdet`
# checkpoint family (`mmattn.models.backbones.scatterformer.scatterformer_pcdet_filter_fn`).
default_scope = 'mmdet3d'
custom_imports = dict(imports=['mmattn.models'], allow_failed_imports=False)

class_names = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle',
               'bicycle', 'pedestrian', 'traffic_cone']
metainfo = dict(classes=class_names)
point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
voxel_size = [0.3, 0.3, 0.2]
grid_size = [360, 360, 40]

model = dict(
    type='mmattn.ScatterFormer',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        voxel=True,
        voxel_type='dynamic',
        voxel_layer=dict(max_num_points=-1, point_cloud_range=point_cloud_range,
                         voxel_size=voxel_size, max_voxels=(-1, -1))),
    voxel_encoder=dict(
        type='mmattn.DynamicPFNVFE',
        in_channels=5,  # x, y, z, intensity, time lag
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
        win_size=20,
        pool_heads=8,
        sla_backend='auto',
        sparse_conv_backend='auto'),
    backbone=dict(type='mmattn.CascadeDEDBackbone', in_channels=128, num_layers=4,
                  num_sbb=(2, 1, 1), down_strides=(1, 2, 2), out_channels=128),
    bbox_head=dict(  # stand-in, not the official TransFusion head (see the top of this file)
        type='mmattn.CenterHeadIoU',
        in_channels=128,
        tasks=[dict(num_class=len(class_names), class_names=class_names)],
        common_heads=dict(center=(2, 2), center_z=(1, 2), dim=(3, 2), rot=(2, 2), iou=(1, 2)),
        share_conv_channel=64),
    train_cfg=dict(
        point_cloud_range=point_cloud_range, voxel_size=voxel_size, grid_size=grid_size,
        out_size_factor=2, gaussian_overlap=0.1, min_radius=2, max_objs=500, dense_reg=1,
        code_weights=[1.0] * 8),
    test_cfg=dict(
        score_threshold=0.0, post_center_limit_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0],
        max_num=500, nms_type='rotate', nms_thr=[0.2] * len(class_names), pre_max_size=1000,
        post_max_size=100, iou_rectifier=[0.5] * len(class_names)))
