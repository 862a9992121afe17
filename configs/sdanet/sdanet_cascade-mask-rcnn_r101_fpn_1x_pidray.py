# SDANet (ICCV 2021): Cascade Mask R-CNN R-101-FPN + selective dense attention after the FPN
# (mmattn.SDANeck: 5 SDA + dependency-refinement modules, 256 channels) on PIDray, the official
# recipe (_base_/cascade-mask-rcnn_r101_fpn_1x.py) at (500, 500) keep-ratio. Official weights:
# convert the released detector with tools/model_converters/sdanet2mmattn.py, or load only the SDA
# modules with neck[1].init_cfg=dict(type='Pretrained', checkpoint=OFFICIAL_FILE).
_base_ = [
    './_base_/cascade-mask-rcnn_r101_fpn_1x.py',
    '../_base_/datasets/pidray_instance.py',
]

model = dict(neck=[
    dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
    dict(type='mmattn.SDANeck', in_channels=256, num_levels=5),
])
