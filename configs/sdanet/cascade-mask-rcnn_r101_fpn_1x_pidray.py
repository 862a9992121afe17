# Cascade Mask R-CNN R-101-FPN on PIDray at (500, 500) keep-ratio: the baseline of SDANet (its
# published row: det 70.9 / 64.0 / 48.0, overall 61.0; seg 59.2 / 51.5 / 36.1, overall 48.9),
# trained with the official SDANet recipe (_base_/cascade-mask-rcnn_r101_fpn_1x.py) without the
# SDA neck.
_base_ = [
    './_base_/cascade-mask-rcnn_r101_fpn_1x.py',
    '../_base_/datasets/pidray_instance.py',
]
