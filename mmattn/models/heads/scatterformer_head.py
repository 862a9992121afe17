"""ScatterFormer's Waymo detection head: CenterPoint head with an IoU branch (``CenterHeadIoU``).

Independent re-implementation, on top of mmdet3d 1.4's :class:`CenterHead`, of the OpenPCDet
``CenterHead`` configuration that ScatterFormer (and DSVT / HEDNet) use on Waymo:

* one task with the classes ``Car, Pedestrian, Cyclist``; shared 3x3 conv 128->64 + BN + ReLU;
  separate branches ``heatmap`` (3), ``center`` (2), ``center_z`` (1), ``dim`` (3),
  ``rot`` (2, **cos then sin**, OpenPCDet's order) and ``iou`` (1), each conv3x3-BN-ReLU + conv3x3;
* targets on the stride-``out_size_factor`` map: Gaussian heatmap (overlap 0.1, min radius 2),
  regression ``[dx, dy, z, log l, log w, log h, cos, sin]`` at the integer cell of the (clamped)
  centre, z = gravity centre, at most 500 objects;
* losses: Gaussian focal heatmap loss, L1 regression (``code_weights`` x ``loc_weight``),
  L1 IoU-branch loss towards ``2 * IoU3D(decoded box (detached), GT) - 1`` and the
  ``1 - DIoU`` regression loss with the axis-aligned 3D DIoU;
* inference: sigmoid, top-K, score threshold, centre range, IoU rectification
  ``score^(1-a) * iou^a`` and class-specific rotated BEV NMS.

All rotated-box operations use mmcv's CPU-capable ``box_iou_rotated`` / ``nms_rotated``.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmcv.ops import box_iou_rotated, nms_rotated
from mmdet3d.models.dense_heads.centerpoint_head import CenterHead
from mmdet3d.models.utils import gaussian_2d
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.structures import InstanceData
from torch import Tensor

from mmattn.registry import MODELS

__all__ = ['CenterHeadIoU', 'paired_boxes_iou3d', 'axis_aligned_diou3d', 'rectify_scores',
           'class_specific_nms']

WAYMO_CLASSES = ['Car', 'Pedestrian', 'Cyclist']
WAYMO_PC_RANGE = [-76.8, -76.8, -2.0, 76.8, 76.8, 4.0]
WAYMO_VOXEL_SIZE = [0.32, 0.32, 0.1875]
WAYMO_GRID_SIZE = [480, 480, 32]

#: order of the regression channels (and of the regression targets)
REG_HEADS = ('center', 'center_z', 'dim', 'rot')


# ----------------------------------------------------------------------------------------------
# box utilities (boxes are [N, 7] = x, y, z_gravity_centre, l, w, h, yaw, LiDAR convention)
# ----------------------------------------------------------------------------------------------
def _bev_xywhr(boxes: Tensor) -> Tensor:
    """(x, y, l, w, yaw) for mmcv rotated ops; mmcv's default ``clockwise=True`` matches the
    counter-clockwise LiDAR yaw (the length axis points along (cos yaw, sin yaw))."""
    return boxes[:, [0, 1, 3, 4, 6]].float().contiguous()


def draw_heatmap_gaussians(heatmap: Tensor, labels: Tensor, center_int: Tensor,
                           radius: Tensor) -> Tensor:
    """mmdet3d's ``draw_heatmap_gaussian(heatmap[label], center, radius)`` for every box at once:
    ``heatmap [C, H, W]`` takes the element-wise max with each box's Gaussian (mmdet3d's
    ``gaussian_2d`` of its radius, float64 cast to float32) on the window of ``radius`` around its
    integer centre ``(x, y)``, clipped to the map; boxes ``labels [n]``, ``center_int [n, 2]``,
    ``radius [n]``. One scatter-max per distinct radius instead of one call per box; a max does
    not depend on the order, so the map is the same to the bit."""
    _, h, w = heatmap.shape
    flat = heatmap.view(-1)
    for r in torch.unique(radius).tolist():
        sel = (radius == r).nonzero()[:, 0]
        gauss = torch.from_numpy(gaussian_2d((2 * r + 1, 2 * r + 1), sigma=(2 * r + 1) / 6))
        gauss = gauss.to(heatmap.device, torch.float32)  # [2r + 1, 2r + 1]
        offs = torch.arange(-r, r + 1, device=heatmap.device)
        x = center_int[sel, 0].long()[:, None, None] + offs[None, None, :]  # [n_r, 1, 2r + 1]
        y = center_int[sel, 1].long()[:, None, None] + offs[None, :, None]  # [n_r, 2r + 1, 1]
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)  # [n_r, 2r + 1, 2r + 1]
        index = (labels[sel].long()[:, None, None] * h + y) * w + x
        values = gauss.expand(sel.numel(), -1, -1)
        flat.scatter_reduce_(0, index[inside], values[inside], 'amax')
    return heatmap


def gaussian_radius_cornernet(height: Tensor, width: Tensor, min_overlap: float) -> Tensor:
    """mmdet3d's ``gaussian_radius((height, width), min_overlap)`` (CornerNet's radius, the
    smallest of three cases; the same float operations) for tensors of boxes at once, where
    mmdet3d's takes one box (its Python ``min`` cannot compare tensors of several elements)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def paired_boxes_iou3d(boxes_a: Tensor, boxes_b: Tensor, eps: float = 1e-6) -> Tensor:
    """3D IoU of aligned pairs of rotated boxes (gravity-centre z): BEV rotated overlap
    (``box_iou_rotated``, CPU and CUDA) times the z overlap. Returns ``[N]``.

    Note: mmcv's rotated IoU is unreliable for pairs with exactly collinear, overlapping edges
    (e.g. the same box shifted along its own axis at some angles); real predictions practically
    never hit this.
    """
    assert boxes_a.shape == boxes_b.shape and boxes_a.shape[-1] >= 7
    if boxes_a.shape[0] == 0:
        return boxes_a.new_zeros(0)
    a, b = boxes_a.float(), boxes_b.float()
    # intersection / area(a)
    iof = box_iou_rotated(_bev_xywhr(a), _bev_xywhr(b), mode='iof', aligned=True)
    inter_bev = iof * a[:, 3] * a[:, 4]
    top = torch.minimum(a[:, 2] + a[:, 5] / 2, b[:, 2] + b[:, 5] / 2)
    bottom = torch.maximum(a[:, 2] - a[:, 5] / 2, b[:, 2] - b[:, 5] / 2)
    inter = inter_bev * (top - bottom).clamp(min=0)
    vol_a = a[:, 3] * a[:, 4] * a[:, 5]
    vol_b = b[:, 3] * b[:, 4] * b[:, 5]
    iou = inter / (vol_a + vol_b - inter).clamp(min=eps)
    return iou.to(boxes_a.dtype)


def axis_aligned_diou3d(boxes_a: Tensor, boxes_b: Tensor, eps: float = 1e-7) -> Tensor:
    """DIoU of aligned pairs of boxes treated as axis-aligned (heading ignored), as OpenPCDet's
    ``bbox3d_overlaps_diou``: ``IoU - |c_a - c_b|^2 / diag(enclosing box)^2``, clamped to [-1, 1].
    Differentiable w.r.t. centres and sizes."""
    ca, sa = boxes_a[:, 0:3], boxes_a[:, 3:6]
    cb, sb = boxes_b[:, 0:3], boxes_b[:, 3:6]
    min_a, max_a = ca - sa / 2, ca + sa / 2
    min_b, max_b = cb - sb / 2, cb + sb / 2
    inter = (torch.minimum(max_a, max_b) - torch.maximum(min_a, min_b)).clamp(min=0).prod(-1)
    union = sa.prod(-1) + sb.prod(-1) - inter
    iou = inter / union.clamp(min=eps)
    enclose = (torch.maximum(max_a, max_b) - torch.minimum(min_a, min_b)).clamp(min=0)
    c2 = enclose.pow(2).sum(-1).clamp(min=eps)
    d2 = (ca - cb).pow(2).sum(-1)
    return (iou - d2 / c2).clamp(min=-1.0, max=1.0)


def rectify_scores(scores: Tensor, iou_preds: Tensor, labels: Tensor,
                   alphas: Sequence[float]) -> Tensor:
    """IoU-rectified score ``score^(1 - a_c) * iou^a_c`` with ``iou = clamp((p + 1) / 2, 0, 1)``
    (the IoU branch regresses ``2 * IoU - 1``) and ``a_c`` the per-class rectifier."""
    iou = ((iou_preds + 1) * 0.5).clamp(min=0, max=1)
    alpha = scores.new_tensor(list(alphas))[labels.long()]
    return scores.pow(1 - alpha) * iou.pow(alpha)


GEOMETRY_KEYS = ('point_cloud_range', 'voxel_size', 'out_size_factor')


def _geometry(train_cfg: dict, test_cfg: dict, default: dict) -> dict:
    """``point_cloud_range`` / ``voxel_size`` / ``out_size_factor`` from train_cfg, else test_cfg,
    else ``default`` (the official Waymo values); given in both, they must agree."""
    out = {}
    for key in GEOMETRY_KEYS:
        a, b = train_cfg.get(key), test_cfg.get(key)
        if a is not None and b is not None and \
                [float(v) for v in np.atleast_1d(a)] != [float(v) for v in np.atleast_1d(b)]:
            raise ValueError(f'CenterHeadIoU: train_cfg.{key} = {a} but test_cfg.{key} = {b}')
        out[key] = a if a is not None else b if b is not None else default[key]
    return out


def _per_class(value, num_classes: int) -> List:
    if isinstance(value, (list, tuple)):
        assert len(value) == num_classes, f'expected {num_classes} per-class values, got {value}'
        return list(value)
    return [value] * num_classes


def class_specific_nms(boxes: Tensor, scores: Tensor, labels: Tensor, num_classes: int,
                       nms_thr: Union[float, Sequence[float]],
                       pre_max_size: Union[None, int, Sequence[int]] = None,
                       post_max_size: Union[None, int, Sequence[int]] = None) -> Tensor:
    """Rotated BEV NMS run separately for each class with its own threshold / sizes.

    Boxes of different classes never suppress each other. Returns the kept indices (class by
    class, each in descending score order)."""
    nms_thr = _per_class(nms_thr, num_classes)
    pre_max_size = _per_class(pre_max_size, num_classes)
    post_max_size = _per_class(post_max_size, num_classes)
    keep_all = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c, as_tuple=False).view(-1)
        if idx.numel() == 0:
            continue
        order = scores[idx].sort(descending=True)[1]
        if pre_max_size[c] is not None:
            order = order[:pre_max_size[c]]
        idx = idx[order]
        _, keep = nms_rotated(_bev_xywhr(boxes[idx]), scores[idx].float().contiguous(),
                              float(nms_thr[c]))
        keep = idx[keep]
        if post_max_size[c] is not None:
            keep = keep[:post_max_size[c]]
        keep_all.append(keep)
    if not keep_all:
        return labels.new_zeros(0, dtype=torch.long)
    return torch.cat(keep_all)


# ----------------------------------------------------------------------------------------------
# the head
# ----------------------------------------------------------------------------------------------
@MODELS.register_module()
class CenterHeadIoU(CenterHead):
    """CenterPoint head with IoU branch, IoU-rectified scores and DIoU regression loss.

    Args (beyond :class:`mmdet3d.models.CenterHead`; defaults are ScatterFormer's Waymo values):
        loss_bbox (dict): L1 regression loss; its ``loss_weight`` is OpenPCDet's ``loc_weight``.
        loss_iou_weight (float): weight of the IoU-branch L1 loss.
        loss_iou_reg_weight (float): weight of the ``1 - DIoU`` loss (``loc_weight`` upstream);
            0 disables it.
        train_cfg (dict): ``point_cloud_range``, ``voxel_size``, ``grid_size``,
            ``out_size_factor``, ``gaussian_overlap``, ``min_radius``, ``max_objs``,
            ``dense_reg``, ``code_weights`` (8 values).
        test_cfg (dict): the geometry (``point_cloud_range``, ``voxel_size``,
            ``out_size_factor``) where ``train_cfg`` is absent (mmdet3d's ``init_model`` drops it;
            given in both, they must agree), ``score_threshold``, ``post_center_limit_range``,
            ``max_num`` (top-K),
            ``nms_thr`` / ``pre_max_size`` / ``post_max_size`` (scalars or per-class lists),
            ``iou_rectifier`` (per-class alpha; ``None`` disables rectification). When absent,
            ``max_num`` / ``score_threshold`` / ``post_center_limit_range`` come from the
            ``bbox_coder`` (by default built from train_cfg geometry and the Waymo values).

    Predictions of ``predict`` / ``predict_by_feat``: per sample an ``InstanceData`` with
    ``bboxes_3d`` (``box_type_3d`` of the metainfo, default :class:`LiDARInstance3DBoxes`,
    bottom-centre z, box_dim 7), ``scores_3d`` (rectified) and ``labels_3d``.
    """

    def __init__(self,
                 in_channels: int = 128,
                 tasks: Optional[List[dict]] = None,
                 bbox_coder: Optional[dict] = None,
                 common_heads: Optional[dict] = None,
                 loss_cls: dict = dict(
                     type='mmdet.GaussianFocalLoss', reduction='mean', loss_weight=1.0),
                 loss_bbox: dict = dict(type='mmdet.L1Loss', reduction='mean', loss_weight=2.0),
                 loss_iou_weight: float = 1.0,
                 loss_iou_reg_weight: float = 2.0,
                 separate_head: dict = dict(
                     type='mmdet3d.SeparateHead', init_bias=-2.19, final_kernel=3),
                 share_conv_channel: int = 64,
                 num_heatmap_convs: int = 2,
                 conv_cfg: dict = dict(type='Conv2d'),
                 norm_cfg: dict = dict(type='BN2d'),
                 bias: str = 'auto',
                 norm_bbox: bool = True,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        if tasks is None:
            tasks = [dict(num_class=len(WAYMO_CLASSES), class_names=list(WAYMO_CLASSES))]
        assert len(tasks) == 1, 'CenterHeadIoU supports a single task (one heatmap for all classes)'
        if common_heads is None:
            common_heads = dict(center=(2, 2), center_z=(1, 2), dim=(3, 2), rot=(2, 2), iou=(1, 2))
        for name in REG_HEADS + ('iou', ):
            assert name in common_heads, f'common_heads needs a "{name}" branch'
        default_train = dict(
            point_cloud_range=WAYMO_PC_RANGE, voxel_size=WAYMO_VOXEL_SIZE,
            grid_size=WAYMO_GRID_SIZE,
            out_size_factor=2, gaussian_overlap=0.1, min_radius=2, max_objs=500, dense_reg=1,
            code_weights=[1.0] * 8)
        default_test = dict(
            nms_type='rotate', nms_thr=[0.75, 0.6, 0.55], pre_max_size=4096, post_max_size=500,
            iou_rectifier=[0.68, 0.71, 0.65])
        # top-K / score threshold / centre range: test_cfg if given, else the bbox_coder's
        coder_test = dict(score_threshold=0.1, max_num=500,
                          post_center_limit_range=[-80., -80., -10., 80., 80., 10.])
        # the BEV geometry decodes boxes too: test_cfg may carry it, as mmdet3d's init_model
        # (tools/demo.py, inference_detector) builds the model with train_cfg=None
        geometry = _geometry(dict(train_cfg) if train_cfg else {},
                             dict(test_cfg) if test_cfg else {}, default_train)
        train_cfg = {**default_train, **geometry, **(dict(train_cfg) if train_cfg else {})}
        test_cfg = {**default_test, **(dict(test_cfg) if test_cfg else {})}
        if bbox_coder is None:
            coder_test = {**coder_test, **{k: test_cfg[k] for k in coder_test if k in test_cfg}}
            bbox_coder = dict(
                type='mmdet3d.CenterPointBBoxCoder',
                pc_range=list(geometry['point_cloud_range'][:2]),
                voxel_size=list(geometry['voxel_size'][:2]),
                out_size_factor=geometry['out_size_factor'],
                post_center_range=list(coder_test['post_center_limit_range']),
                max_num=coder_test['max_num'], score_threshold=coder_test['score_threshold'],
                code_size=7)
        super().__init__(
            in_channels=in_channels, tasks=tasks, bbox_coder=bbox_coder,
            common_heads=copy.deepcopy(common_heads), loss_cls=loss_cls, loss_bbox=loss_bbox,
            separate_head=copy.deepcopy(separate_head), share_conv_channel=share_conv_channel,
            num_heatmap_convs=num_heatmap_convs, conv_cfg=conv_cfg, norm_cfg=norm_cfg, bias=bias,
            norm_bbox=norm_bbox, train_cfg=train_cfg, test_cfg=test_cfg, init_cfg=init_cfg,
            **kwargs)
        self.loss_iou_weight = loss_iou_weight
        self.loss_iou_reg_weight = loss_iou_reg_weight
        self.num_cls = self.num_classes[0]
        assert len(train_cfg['code_weights']) == 8

    def init_weights(self):
        """Also initialise the separate heads (Kaiming convs, heatmap bias ``init_bias``):
        mmengine does not recurse into the plain ``nn.ModuleList`` holding them."""
        super().init_weights()
        for task_head in self.task_heads:
            if hasattr(task_head, 'init_weights'):
                task_head.init_weights()
            # official SeparateHead: the heatmap branch keeps PyTorch's default conv init, the
            # other branches kaiming_normal_ in fan_in mode with zero bias. mmdet3d's fan_out
            # Kaiming gives heatmap logits of std ~6 (loss in the thousands at the start) and
            # regression outputs of std ~8 on a 2-channel branch.
            for name in task_head.heads:
                for m in getattr(task_head, name).modules():
                    if not isinstance(m, nn.Conv2d):
                        continue
                    if name == 'heatmap':
                        m.reset_parameters()
                    else:
                        nn.init.kaiming_normal_(m.weight)
                        if m.bias is not None:
                            nn.init.zeros_(m.bias)
            task_head.heatmap[-1].bias.data.fill_(task_head.init_bias)

    # ------------------------------------------------------------------ geometry helpers
    def _test_value(self, key: str, coder_attr: str):
        value = self.test_cfg.get(key, None)
        return getattr(self.bbox_coder, coder_attr) if value is None else value

    def _decode_at(self, preds: dict, ind: Tensor, width: int) -> Tensor:
        """Decode boxes ``[B, M, 7]`` (gravity-centre z) from the regression maps at flat
        indices ``ind`` ``[B, M]`` of a map of width ``width`` (train_cfg geometry)."""
        cfg = self.train_cfg
        stride = cfg['out_size_factor']
        reg = torch.cat([preds[k] for k in REG_HEADS], dim=1)
        reg = reg.permute(0, 2, 3, 1).reshape(reg.size(0), -1, reg.size(1))
        reg = self._gather_feat(reg, ind)
        xs = (ind % width).to(reg.dtype) + reg[..., 0]
        ys = torch.div(ind, width, rounding_mode='floor').to(reg.dtype) + reg[..., 1]
        x = xs * stride * cfg['voxel_size'][0] + cfg['point_cloud_range'][0]
        y = ys * stride * cfg['voxel_size'][1] + cfg['point_cloud_range'][1]
        dims = reg[..., 3:6].exp() if self.norm_bbox else reg[..., 3:6]
        # heading only feeds the (detached) IoU target; no gradient through atan2 (NaN at 0, 0)
        rot = torch.atan2(reg[..., 7].detach(), reg[..., 6].detach())
        return torch.cat([x[..., None], y[..., None], reg[..., 2:3], dims, rot[..., None]], -1)

    # ------------------------------------------------------------------ targets
    def get_targets(self, batch_gt_instances_3d: List[InstanceData]) -> Tuple[Tensor, ...]:
        """Batched targets: heatmaps ``[B, C, H, W]``, regression targets ``[B, M, 8]``
        (dx, dy, z, log l, log w, log h, cos, sin), flat indices ``[B, M]``, masks ``[B, M]``
        and the GT boxes ``[B, M, 7]`` (gravity centre) at the same slots."""
        outs = [self.get_targets_single(gt) for gt in batch_gt_instances_3d]
        return tuple(torch.stack(t) for t in zip(*outs))

    def get_targets_single(self, gt_instances_3d: InstanceData) -> Tuple[Tensor, ...]:
        """One sample's targets (see :meth:`get_targets`), every box at once: slot ``k`` holds box
        ``k`` (the first ``max_objs``); boxes with a label outside the classes or a non-positive
        length / width keep a zero slot with mask 0."""
        cfg = self.train_cfg
        labels = gt_instances_3d.labels_3d
        bboxes = gt_instances_3d.bboxes_3d
        device = labels.device
        boxes = torch.cat([bboxes.gravity_center, bboxes.tensor[:, 3:7]], dim=1).to(device)
        stride = cfg['out_size_factor']
        vx, vy = cfg['voxel_size'][0], cfg['voxel_size'][1]
        pcx, pcy = cfg['point_cloud_range'][0], cfg['point_cloud_range'][1]
        fm_w = int(cfg['grid_size'][0]) // stride
        fm_h = int(cfg['grid_size'][1]) // stride
        max_objs = cfg['max_objs'] * cfg['dense_reg']

        heatmap = boxes.new_zeros((self.num_cls, fm_h, fm_w))
        anno_box = boxes.new_zeros((max_objs, 8))
        gt_src = boxes.new_zeros((max_objs, 7))
        ind = labels.new_zeros(max_objs, dtype=torch.long)
        mask = labels.new_zeros(max_objs, dtype=torch.uint8)

        n = min(boxes.shape[0], max_objs)
        boxes, labels = boxes[:n], labels[:n]
        length = boxes[:, 3] / vx / stride
        width = boxes[:, 4] / vy / stride
        valid = (labels >= 0) & (labels < self.num_cls) & (length > 0) & (width > 0)
        radius = gaussian_radius_cornernet(width, length, cfg['gaussian_overlap'])
        radius = radius.nan_to_num(0).int().clamp(min=cfg['min_radius'])  # int(): truncation
        # OpenPCDet clamps centres into the map instead of dropping them
        cx = ((boxes[:, 0] - pcx) / vx / stride).clamp(min=0, max=fm_w - 0.5)
        cy = ((boxes[:, 1] - pcy) / vy / stride).clamp(min=0, max=fm_h - 0.5)
        center = torch.stack([cx, cy], 1).float()
        center_int = center.to(torch.int32)
        dims = boxes[:, 3:6].log() if self.norm_bbox else boxes[:, 3:6]
        slots = valid.nonzero()[:, 0]
        ind[slots] = (center_int[:, 1].long() * fm_w + center_int[:, 0].long())[slots]
        mask[slots] = 1
        anno_box[slots] = torch.cat([
            center - center_int.to(center.dtype), boxes[:, 2:3], dims,
            torch.cos(boxes[:, 6:7]), torch.sin(boxes[:, 6:7])], 1)[slots].to(anno_box.dtype)
        gt_src[slots] = boxes[slots]
        draw_heatmap_gaussians(heatmap, labels[slots], center_int[slots], radius[slots])
        return heatmap, anno_box, ind, mask, gt_src

    # ------------------------------------------------------------------ losses
    def loss_by_feat(self, preds_dicts: Tuple[List[dict]],
                     batch_gt_instances_3d: List[InstanceData], *args,
                     **kwargs) -> Dict[str, Tensor]:
        preds = preds_dicts[0][0]
        heatmap, anno_box, ind, mask, gt_src = self.get_targets(batch_gt_instances_3d)
        fm_h, fm_w = preds['heatmap'].shape[-2:]
        assert heatmap.shape[-2:] == (fm_h, fm_w), (
            f'feature map {tuple(preds["heatmap"].shape[-2:])} does not match the target map '
            f'{tuple(heatmap.shape[-2:])} (grid_size / out_size_factor)')

        # heatmap: Gaussian focal loss normalised by the number of peaks
        hm = preds['heatmap'].sigmoid().clamp(min=1e-4, max=1 - 1e-4)
        num_pos = heatmap.eq(1).float().sum().item()
        loss_hm = self.loss_cls(hm, heatmap, avg_factor=max(num_pos, 1))

        # L1 regression, sum over valid slots / number of objects
        pred = torch.cat([preds[k] for k in REG_HEADS], dim=1)
        pred = pred.permute(0, 2, 3, 1).reshape(pred.size(0), -1, pred.size(1))
        pred = self._gather_feat(pred, ind)
        num = mask.float().sum()
        weights = mask.unsqueeze(-1).float() * (~torch.isnan(anno_box)).float()
        weights = weights * weights.new_tensor(self.train_cfg['code_weights'])
        loss_bbox = self.loss_bbox(
            pred, torch.nan_to_num(anno_box), weights, avg_factor=num.clamp(min=1.0))

        losses = dict(loss_heatmap=loss_hm, loss_bbox=loss_bbox)
        valid = mask.bool()
        iou_map = preds['iou'].permute(0, 2, 3, 1).reshape(mask.size(0), -1, 1)
        iou_pred = self._gather_feat(iou_map, ind)[..., 0][valid]
        if valid.any():
            boxes_pred = self._decode_at(preds, ind, fm_w)[valid]
            boxes_gt = gt_src[valid]
            n = valid.sum().float().clamp(min=1e-4)
            # IoU branch: L1 towards 2 * IoU3D(detached decoded box, GT) - 1
            iou_target = 2 * paired_boxes_iou3d(boxes_pred.detach(), boxes_gt) - 1
            loss_iou = (iou_pred - iou_target).abs().sum() / n
            # DIoU regression loss on the (non-detached) decoded boxes
            diou = axis_aligned_diou3d(boxes_pred, boxes_gt)
            loss_iou_reg = (1.0 - diou).sum() / n
        else:  # keep the graph connected for DDP
            loss_iou = iou_pred.sum() * 0 + preds['iou'].sum() * 0
            loss_iou_reg = pred.sum() * 0
        losses['loss_iou'] = loss_iou * self.loss_iou_weight
        if self.loss_iou_reg_weight:
            losses['loss_iou_reg'] = loss_iou_reg * self.loss_iou_reg_weight
        return losses

    # ------------------------------------------------------------------ inference
    def predict_by_feat(self, preds_dicts: Tuple[List[dict]], batch_input_metas: List[dict],
                        *args, **kwargs) -> List[InstanceData]:
        preds = preds_dicts[0][0]
        coder = self.bbox_coder
        heat = preds['heatmap'].sigmoid()
        batch, _, fm_h, fm_w = heat.shape
        k = min(int(self._test_value('max_num', 'max_num')), fm_h * fm_w)
        scores, inds, clses, ys, xs = coder._topk(heat, K=k)

        def gather(name):
            return coder._transpose_and_gather_feat(preds[name], inds)  # [B, K, C]

        reg = gather('center')
        xs = xs.view(batch, k) + reg[..., 0]
        ys = ys.view(batch, k) + reg[..., 1]
        xs = xs * coder.out_size_factor * coder.voxel_size[0] + coder.pc_range[0]
        ys = ys * coder.out_size_factor * coder.voxel_size[1] + coder.pc_range[1]
        z = gather('center_z')[..., 0]
        dims = gather('dim')
        dims = dims.exp() if self.norm_bbox else dims
        rot = gather('rot')
        yaw = torch.atan2(rot[..., 1], rot[..., 0])
        iou = gather('iou')[..., 0]
        boxes = torch.cat([xs[..., None], ys[..., None], z[..., None], dims, yaw[..., None]], -1)
        labels = clses.view(batch, k).long()

        thr = self._test_value('score_threshold', 'score_threshold')
        center_range = self._test_value('post_center_limit_range', 'post_center_range')
        rectifier = self.test_cfg.get('iou_rectifier', None)

        results = []
        for i in range(batch):
            keep = torch.ones_like(scores[i], dtype=torch.bool)
            if thr is not None:
                keep &= scores[i] > thr
            if center_range is not None:
                rng = boxes.new_tensor(center_range)
                keep &= (boxes[i, :, :3] >= rng[:3]).all(-1) & (boxes[i, :, :3] <= rng[3:]).all(-1)
            b, s, l, q = boxes[i][keep], scores[i][keep], labels[i][keep], iou[i][keep]
            if rectifier is not None:
                s = rectify_scores(s, q, l, rectifier)
            sel = class_specific_nms(
                b, s, l, self.num_cls, self.test_cfg['nms_thr'],
                self.test_cfg.get('pre_max_size'), self.test_cfg.get('post_max_size'))
            b, s, l = b[sel], s[sel], l[sel]
            order = s.argsort(descending=True)
            b, s, l = b[order], s[order], l[order]
            b = b.clone()
            b[:, 2] = b[:, 2] - b[:, 5] * 0.5  # gravity centre -> bottom centre
            box_type = batch_input_metas[i].get('box_type_3d', LiDARInstance3DBoxes)
            inst = InstanceData()
            inst.bboxes_3d = box_type(b, box_dim=7)
            inst.scores_3d = s
            inst.labels_3d = l
            results.append(inst)
        return results
