# Mask R-CNN + Agent-Swin-S, COCO 1x: the official
# downstream/detection/configs/agent_swin/agent_swin_s_mrcnn_1x_9-12-14-7.py: the Swin-T config
# (same schedule, augmentation and agent shapes) with the small backbone.
_base_ = ['./mask-rcnn_agent-swin-t_fpn_ms-crop-1x_coco.py']

# Official ImageNet-1K classifier, https://cloud.tsinghua.edu.cn/f/f607172c9fea4d6e99bb/?dl=1
# (the URL carries no file name: download it once to this path; it loads as is, {'model': sd}).
pretrained = 'data/pretrained/agent_swin_s_max_acc.pth'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
