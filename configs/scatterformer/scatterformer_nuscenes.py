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
# weights do not load and no result is claimed. No data pipeline (the optimizer and hooks are the
# Waymo base's, untuned for nuScenes): this config builds
# the model, e.g. to load an official checkpoint's backbone converted with the `scatterformer_pcdet`
# checkpoint family (`mmattn.models.backbones.scatterformer.scatterformer_pcdet_filter_fn`).
_base_ = ['./_base_/scatterformer_waymo.py']  # the same model; nuScenes ranges, window, head

class_names = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle',
               'bicycle', 'pedestrian', 'traffic_cone']
metainfo = dict(classes=class_names)
point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
voxel_size = [0.3, 0.3, 0.2]
grid_size = [360, 360, 40]

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size)),
    voxel_encoder=dict(
        in_channels=5,  # x, y, z, intensity, time lag
        voxel_size=voxel_size,
        point_cloud_range=point_cloud_range),
    middle_encoder=dict(sparse_shape=[grid_size[2] + 1, grid_size[1], grid_size[0]], win_size=20),
    bbox_head=dict(  # stand-in, not the official TransFusion head (see the top of this file)
        tasks=[dict(num_class=len(class_names), class_names=class_names)]),
    train_cfg=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size,
                   grid_size=grid_size),
    test_cfg=dict(
        point_cloud_range=point_cloud_range, voxel_size=voxel_size,
        score_threshold=0.0, post_center_limit_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0],
        nms_thr=[0.2] * len(class_names), pre_max_size=1000, post_max_size=100,
        iou_rectifier=[0.5] * len(class_names)))
