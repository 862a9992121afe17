# Plain RetinaNet with the settings of the official BVR R-50 config minus BVR (the baseline of
# retinanet-bvr_r50_fpn_1x_coco.py): GN(32) in the FPN and the head, L1 box loss, 1333x800,
# SGD 0.01 (8 GPUs x 2 images), 12 epochs, steps 8 / 11, NMS 0.5.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    bbox_head=dict(norm_cfg=norm_cfg, loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    test_cfg=dict(nms=dict(type='nms', iou_threshold=0.5)))
auto_scale_lr = dict(enable=False, base_batch_size=16)
