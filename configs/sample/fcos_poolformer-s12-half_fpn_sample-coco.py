# The main job (`make demo`): FCOS with an mmattn backbone, PoolFormer (MetaFormer, Yu et al. CVPR
# 2022) in the official S12 block design at half width, trained from scratch on the bundled sample
# COCO data on a CPU and evaluated with COCO bbox mAP on the held-out val split. Everything but the
# backbone is the ResNet-18 smoke config (same FPN, FCOS head, data, optimiser, 12-epoch schedule).
_base_ = ['./fcos_r18_fpn_sample-coco.py']

model = dict(
    # no init_cfg: random initialisation, as no ImageNet weights exist at this width (README, "The
    # main job": real COCO from the official S12 weights)
    backbone=dict(
        _delete_=True,
        type='mmattn.PoolFormer',
        # S12's depths and MLP ratio 4 with half its widths (S12: 64, 128, 320, 512)
        arch=dict(depths=[2, 2, 6, 2], embed_dims=[32, 64, 160, 256]),
        out_indices=(1, 2, 3),  # strides 8, 16, 32, as the ResNet-18's (1, 2, 3)
        drop_path_rate=0.),
    neck=dict(in_channels=[64, 160, 256]))
