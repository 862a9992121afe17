# ScatterFormer, Waymo single frame, 100 % of the training frames, 24 epochs, 8 GPUs x 4 frames
# (official: 73.8 mAPH L2 on val). Data: mmdet3d 1.4 Waymo infos, e.g. converted from OpenPCDet's
# processed Waymo with tools/dataset_converters/openpcdet_waymo2mmattn.py (keeps NLZ points and the
# labellers' difficulty, which the L1/L2 metric needs).
_base_ = ['./_base_/scatterformer_waymo.py']

dataset_type = 'mmattn.WaymoDataset'
class_names = ['Car', 'Pedestrian', 'Cyclist']
metainfo = dict(classes=class_names)
lr = 0.006  # adam_onecycle's max lr (the optimizer's lr in _base_)
data_root = 'data/waymo/kitti_format/'
point_cloud_range = [-76.8, -76.8, -2.0, 76.8, 76.8, 4.0]
backend_args = None
max_epochs = 24
fade_epochs = 4  # GT sampling is switched off for the last 4 epochs

db_sampler = dict(
    data_root=data_root,
    info_path=data_root + 'waymo_dbinfos_train.pkl',
    rate=1.0,
    prepare=dict(filter_by_difficulty=[-1],
                 filter_by_min_points=dict(Car=5, Pedestrian=10, Cyclist=10)),
    classes=class_names,
    sample_groups=dict(Car=15, Pedestrian=10, Cyclist=10),
    points_loader=dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=6, use_dim=[0, 1, 2, 3, 4],
                       norm_intensity=True, norm_elongation=True, backend_args=backend_args),
    backend_args=backend_args)

load_points = dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=6, use_dim=5,
                   norm_intensity=True, norm_elongation=True, backend_args=backend_args)
augment = [
    dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=0.5,
         flip_ratio_bev_vertical=0.5),
    dict(type='GlobalRotScaleTrans', rot_range=[-0.78539816, 0.78539816],
         scale_ratio_range=[0.95, 1.05], translation_std=[0.5, 0.5, 0.5]),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='PointShuffle'),
    dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d', 'gt_labels_3d']),
]
train_pipeline = [
    load_points,
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(type='ObjectSample', db_sampler=db_sampler),
] + augment
train_pipeline_no_gt_sampling = [
    load_points,
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
] + augment
test_pipeline = [
    load_points,
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='Pack3DDetInputs', keys=['points']),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='waymo_infos_train.pkl',
                 data_prefix=dict(pts='training/velodyne'), pipeline=train_pipeline,
                 metainfo=metainfo, test_mode=False, load_interval=1, box_type_3d='LiDAR',
                 backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='waymo_infos_val.pkl',
                 data_prefix=dict(pts='training/velodyne'), pipeline=test_pipeline,
                 metainfo=metainfo, test_mode=True, box_type_3d='LiDAR',
                 backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmattn.WaymoMetric')
test_evaluator = val_evaluator

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# adam_onecycle: lr cosine up for 10 % of the iterations from lr / 100, then down to lr / 100 / 1e4;
# beta1 0.95 -> 0.85 -> 0.95 over the same phases.
param_scheduler = [
    dict(type='OneCycleLR', eta_max=lr, pct_start=0.1, anneal_strategy='cos', div_factor=100.,
         final_div_factor=1e4, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingMomentum', T_max=0.1 * max_epochs, eta_min=0.85, by_epoch=True,
         begin=0, end=0.1 * max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingMomentum', T_max=0.9 * max_epochs, eta_min=0.95, by_epoch=True,
         begin=0.1 * max_epochs, end=max_epochs, convert_to_iter_based=True),
]
custom_hooks = [
    dict(type='mmdet.PipelineSwitchHook', switch_epoch=max_epochs - fade_epochs,
         switch_pipeline=train_pipeline_no_gt_sampling),
]
auto_scale_lr = dict(enable=False, base_batch_size=32)
