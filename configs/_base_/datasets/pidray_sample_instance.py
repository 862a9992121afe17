# The bundled PIDray-layout sample (data/pidray_sample/, written by tools/data/make_sample_data.py)
# in the same layout as the real set (pidray_instance.py), at the sample's image size (about
# 256x192). One test run evaluates easy, hard and hidden (mmattn.PIDrayEvaluator: per subset,
# overall = mean of the three, pooled = all test images as one set).
dataset_type = 'mmattn.PIDrayDataset'
data_root = 'data/pidray_sample/'
backend_args = None
img_scale = (288, 208)
subsets = ('easy', 'hard', 'hidden')

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/xray_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline,
        backend_args=backend_args))
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/xray_test_easy.json', data_prefix=dict(img='easy/'),
                 test_mode=True, pipeline=test_pipeline, backend_args=backend_args),
            dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/xray_test_hard.json', data_prefix=dict(img='hard/'),
                 test_mode=True, pipeline=test_pipeline, backend_args=backend_args),
            dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/xray_test_hidden.json', data_prefix=dict(img='hidden/'),
                 test_mode=True, pipeline=test_pipeline, backend_args=backend_args),
        ]))
val_dataloader = test_dataloader

test_evaluator = dict(
    type='mmattn.PIDrayEvaluator',
    dataset_prefixes=list(subsets),
    metrics=[
        dict(type='CocoMetric', ann_file=data_root + 'annotations/xray_test_easy.json',
             metric=['bbox', 'segm'], backend_args=backend_args),
        dict(type='CocoMetric', ann_file=data_root + 'annotations/xray_test_hard.json',
             metric=['bbox', 'segm'], backend_args=backend_args),
        dict(type='CocoMetric', ann_file=data_root + 'annotations/xray_test_hidden.json',
             metric=['bbox', 'segm'], backend_args=backend_args),
    ])
val_evaluator = test_evaluator
