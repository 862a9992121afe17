"""ScatterFormer BEV part: ``CascadeDEDBackbone`` and ``CenterHeadIoU`` (CPU, small maps)."""
import logging
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData

from mmattn.models.heads.scatterformer_head import (CenterHeadIoU, axis_aligned_diou3d,
                                                    class_specific_nms, draw_heatmap_gaussians,
                                                    paired_boxes_iou3d, rectify_scores)
from mmattn.models.necks.ded import CascadeDEDBackbone, DEDModule
from mmattn.registry import MODELS

# 64 x 64 voxel grid of 0.32 m -> 32 x 32 BEV map at stride 2 (0.64 m cells)
PC_RANGE = [-10.24, -10.24, -2.0, 10.24, 10.24, 4.0]
TRAIN_CFG = dict(
    point_cloud_range=PC_RANGE, voxel_size=[0.32, 0.32, 0.1875], grid_size=[64, 64, 32])
CELL = 0.64
FM = 32


@pytest.fixture(autouse=True)
def _quiet_init_logs():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# CascadeDEDBackbone
# ---------------------------------------------------------------------------------------------
def test_ded_build_structure_and_init():
    torch.manual_seed(0)
    model = MODELS.build(dict(type='mmattn.CascadeDEDBackbone'))
    assert isinstance(model, CascadeDEDBackbone)
    model.init_weights()
    assert len(model.layers) == 4
    ded = model.layers[0]
    assert [len(level) for level in ded.layers] == [2, 2, 2]  # level 0: 2 blocks; 1, 2: strided + 1
    assert ded.layers[1][0].conv1.stride == (2, 2)
    assert isinstance(ded.layers[1][0].downsample[0], nn.Conv2d)
    assert ded.layers[1][0].downsample[0].kernel_size == (1, 1)
    assert ded.layers[0][0].downsample is None
    up = ded.upsample_layers[0][0]
    assert isinstance(up, nn.ConvTranspose2d) and up.kernel_size == (2, 2) and up.stride == (2, 2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.eps == 1e-3 and m.momentum == 0.01
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
    # kaiming normal, fan_out: std = sqrt(2 / (out * k * k))
    w = ded.layers[0][0].conv1.weight
    assert abs(w.std().item() - math.sqrt(2.0 / (128 * 9))) < 0.1 * math.sqrt(2.0 / (128 * 9))


@pytest.mark.parametrize('hw', [(32, 32), (29, 31), (17, 30), (5, 3)])
def test_ded_shapes_odd_sizes(hw):
    torch.manual_seed(0)
    model = CascadeDEDBackbone(num_layers=2)
    x = torch.randn(2, 128, *hw)
    out = model([x])
    assert isinstance(out, tuple) and len(out) == 1
    assert out[0].shape == (2, 128, *hw)
    out2 = model(x)  # a bare tensor is accepted too
    assert out2[0].shape == (2, 128, *hw)


def test_ded_crop_is_exact_on_retained_pixels():
    """The crop of the up-sampled map: for an odd map, the retained outputs of a transposed conv
    equal those of the full even map, so the decoder is consistent with the strided encoder."""
    torch.manual_seed(0)
    ded = DEDModule(16, 16, num_sbb=(1, 1), down_strides=(1, 2)).eval()
    x = torch.randn(1, 16, 9, 7)
    y = ded(x)
    assert y.shape == x.shape
    feats0 = ded.layers[0](x)
    feats1 = ded.layers[1](feats0)
    ref = ded.norms[0](ded.upsample_layers[0](feats1)[..., :9, :7] + feats0)
    torch.testing.assert_close(y, ref)


def test_ded_backward_and_channel_change():
    torch.manual_seed(0)
    model = CascadeDEDBackbone(in_channels=32, out_channels=64, num_layers=2)
    x = torch.randn(2, 32, 15, 13, requires_grad=True)
    out = model((x, ))[0]
    assert out.shape == (2, 64, 15, 13)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, name


# ---------------------------------------------------------------------------------------------
# CenterHeadIoU helpers
# ---------------------------------------------------------------------------------------------
def _head(**kwargs):
    torch.manual_seed(0)
    head = MODELS.build(dict(type='mmattn.CenterHeadIoU', train_cfg=TRAIN_CFG, **kwargs))
    head.init_weights()
    return head


def _sample(boxes, labels):
    sample = Det3DDataSample()
    gt = InstanceData()
    gt.bboxes_3d = LiDARInstance3DBoxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 7))
    gt.labels_3d = torch.tensor(labels, dtype=torch.long)
    sample.gt_instances_3d = gt
    sample.set_metainfo(dict(box_type_3d=LiDARInstance3DBoxes))
    return sample


# a car at (1.0, 2.0), bottom z -1.0, l 4.5, w 2.0, h 1.6, yaw 0.3
CAR = [1.0, 2.0, -1.0, 4.5, 2.0, 1.6, 0.3]
CAR_CX = (1.0 + 10.24) / CELL   # 17.5625
CAR_CY = (2.0 + 10.24) / CELL   # 19.125


def _zero_preds(batch=1):
    heads = dict(heatmap=3, center=2, center_z=1, dim=3, rot=2, iou=1)
    return {k: torch.zeros(batch, c, FM, FM) for k, c in heads.items()}


def test_head_structure_and_defaults():
    head = _head()
    assert isinstance(head, CenterHeadIoU)
    assert head.class_names == [['Car', 'Pedestrian', 'Cyclist']]
    assert head.shared_conv.conv.out_channels == 64 and head.shared_conv.conv.kernel_size == (3, 3)
    th = head.task_heads[0]
    for name, c in dict(heatmap=3, center=2, center_z=1, dim=3, rot=2, iou=1).items():
        branch = getattr(th, name)
        assert branch[0].conv.kernel_size == (3, 3) and branch[0].bn is not None
        assert branch[-1].out_channels == c and branch[-1].kernel_size == (3, 3)
    torch.testing.assert_close(th.heatmap[-1].bias.data, torch.full((3, ), -2.19))
    assert (th.dim[-1].bias.data == 0).all()
    assert head.test_cfg['nms_thr'] == [0.75, 0.6, 0.55]
    assert head.test_cfg['iou_rectifier'] == [0.68, 0.71, 0.65]
    assert head.test_cfg['pre_max_size'] == 4096 and head.test_cfg['post_max_size'] == 500
    assert head.train_cfg['max_objs'] == 500 and head.train_cfg['min_radius'] == 2
    assert head.train_cfg['gaussian_overlap'] == 0.1 and head.train_cfg['out_size_factor'] == 2
    assert head.bbox_coder.max_num == 500 and head.bbox_coder.score_threshold == 0.1
    assert head.bbox_coder.post_center_range == [-80., -80., -10., 80., 80., 10.]
    assert head.bbox_coder.out_size_factor == 2 and head.bbox_coder.pc_range == [-10.24, -10.24]
    # a user bbox_coder config drives top-K / threshold when test_cfg does not set them
    coder = dict(type='mmdet3d.CenterPointBBoxCoder', pc_range=[-10.24, -10.24],
                 voxel_size=[0.32, 0.32], out_size_factor=2,
                 post_center_range=[-5, -5, -5, 5, 5, 5],
                 max_num=7, score_threshold=0.3, code_size=7)
    head2 = MODELS.build(dict(type='mmattn.CenterHeadIoU', train_cfg=TRAIN_CFG, bbox_coder=coder))
    assert head2._test_value('max_num', 'max_num') == 7
    assert head2._test_value('score_threshold', 'score_threshold') == 0.3
    out = head([torch.randn(2, 128, FM, FM)])
    assert out[0][0]['heatmap'].shape == (2, 3, FM, FM)
    assert out[0][0]['iou'].shape == (2, 1, FM, FM)


def test_head_init_follows_official_separate_head():
    """hm: PyTorch's default conv init + bias -2.19; other branches kaiming_normal_ (fan_in)."""
    th = _head().task_heads[0]
    w = th.heatmap[-1].weight  # 3 x 64 x 3 x 3: default init is U(-b, b), b = 1 / sqrt(576)
    assert w.abs().max() <= 1 / math.sqrt(64 * 9) + 1e-6
    for name in ('center', 'dim', 'rot', 'iou'):
        w = getattr(th, name)[-1].weight
        expected = math.sqrt(2 / (64 * 9))  # kaiming_normal_ fan_in, gain sqrt(2)
        assert 0.8 * expected < w.std().item() < 1.2 * expected, (name, w.std().item())
    # so the initial heatmap logits stay near the bias
    head = _head().eval()
    logits = head([torch.randn(1, 128, FM, FM)])[0][0]['heatmap']
    assert logits.std().item() < 1.5 and abs(logits.mean().item() + 2.19) < 1.0


def test_targets_hand_placed_box():
    head = _head()
    heatmap, anno_box, ind, mask, gt_src = head.get_targets([_sample([CAR], [0]).gt_instances_3d])
    assert heatmap.shape == (1, 3, FM, FM)
    ix, iy = int(CAR_CX), int(CAR_CY)
    assert (ix, iy) == (17, 19)
    assert heatmap[0, 0, iy, ix] == 1
    assert heatmap[0, 0].eq(1).sum() == 1
    assert heatmap[0, 1:].abs().sum() == 0
    # min radius 2: the Gaussian reaches 2 cells away
    assert heatmap[0, 0, iy, ix + 2] > 0 and heatmap[0, 0, iy - 2, ix] > 0
    assert ind[0, 0] == iy * FM + ix and mask[0, 0] == 1 and mask[0, 1:].sum() == 0
    expected = torch.tensor([
        CAR_CX - ix, CAR_CY - iy, -1.0 + 0.8, math.log(4.5), math.log(2.0), math.log(1.6),
        math.cos(0.3), math.sin(0.3)])
    torch.testing.assert_close(anno_box[0, 0], expected)
    torch.testing.assert_close(gt_src[0, 0], torch.tensor([1.0, 2.0, -0.2, 4.5, 2.0, 1.6, 0.3]))


def _targets_box_by_box(head, gt):
    """The per-box loop of OpenPCDet's / mmdet3d's CenterHead targets (mmdet3d's
    ``gaussian_radius`` on one box at a time): the oracle of the batched ``get_targets_single``."""
    from mmdet3d.models.utils import draw_heatmap_gaussian, gaussian_radius
    cfg = head.train_cfg
    boxes = torch.cat([gt.bboxes_3d.gravity_center, gt.bboxes_3d.tensor[:, 3:7]], 1)
    stride, (vx, vy) = cfg['out_size_factor'], cfg['voxel_size'][:2]
    pcx, pcy = cfg['point_cloud_range'][:2]
    fm_w, fm_h = cfg['grid_size'][0] // stride, cfg['grid_size'][1] // stride
    m = cfg['max_objs']
    heatmap = torch.zeros(head.num_cls, fm_h, fm_w)
    anno, src = torch.zeros(m, 8), torch.zeros(m, 7)
    ind, mask = torch.zeros(m, dtype=torch.long), torch.zeros(m, dtype=torch.uint8)
    for k in range(min(len(boxes), m)):
        cls_id, box = int(gt.labels_3d[k]), boxes[k]
        length, width = box[3] / vx / stride, box[4] / vy / stride
        if not (0 <= cls_id < head.num_cls and length > 0 and width > 0):
            continue
        radius = max(cfg['min_radius'],
                     int(gaussian_radius((width, length), min_overlap=cfg['gaussian_overlap'])))
        cx = ((box[0] - pcx) / vx / stride).clamp(min=0, max=fm_w - 0.5)
        cy = ((box[1] - pcy) / vy / stride).clamp(min=0, max=fm_h - 0.5)
        center = torch.stack([cx, cy]).float()
        c_int = center.to(torch.int32)
        draw_heatmap_gaussian(heatmap[cls_id], c_int, radius)
        ind[k], mask[k] = int(c_int[1]) * fm_w + int(c_int[0]), 1
        anno[k] = torch.cat([center - c_int.float(), box[2:3], box[3:6].log(),
                             torch.cos(box[6:7]), torch.sin(box[6:7])])
        src[k] = box
    return heatmap, anno, ind, mask, src


def test_batched_targets_equal_the_box_by_box_loop():
    """60 random boxes (some off the map, so clamped; labels -1 / 3 and zero sizes skipped) and a
    max_objs cut: heatmaps, indices, masks equal; regression targets to float rounding."""
    head = MODELS.build(dict(type='mmattn.CenterHeadIoU', train_cfg={**TRAIN_CFG, 'max_objs': 50}))
    g = torch.Generator().manual_seed(3)
    n = 60
    boxes = torch.cat([torch.rand(n, 2, generator=g) * 30 - 15, torch.rand(n, 1, generator=g) - 2,
                       torch.rand(n, 3, generator=g) * 4 + 0.3,
                       torch.rand(n, 1, generator=g) * 6 - 3], 1)
    boxes[5, 3] = 0.0  # zero length
    labels = torch.randint(0, 3, (n, ), generator=g)
    labels[7], labels[9] = -1, 3
    gt = _sample(boxes.tolist(), labels.tolist()).gt_instances_3d
    got = head.get_targets_single(gt)
    expected = _targets_box_by_box(head, gt)
    assert int(expected[3].sum()) == 47 and int(got[3].sum()) == 47  # 50 - 3 skipped
    for name, a, b in zip(('heatmap', 'anno_box', 'ind', 'mask', 'gt_src'), got, expected):
        if name == 'anno_box':  # vectorised log / cos / sin may differ in the last bit
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)
        else:
            assert torch.equal(a, b), name


def test_gaussians_drawn_at_once_equal_mmdet3d_box_by_box():
    """300 overlapping boxes of radius 0-6 in 3 classes, many at or past the map's edges: the
    batched drawing gives mmdet3d's ``draw_heatmap_gaussian`` loop to the bit."""
    from mmdet3d.models.utils import draw_heatmap_gaussian
    g = torch.Generator().manual_seed(5)
    n, h, w = 300, 23, 31
    labels = torch.randint(0, 3, (n, ), generator=g)
    centers = torch.stack([torch.randint(-2, w + 2, (n, ), generator=g),
                           torch.randint(-2, h + 2, (n, ), generator=g)], 1).clamp(min=0)
    centers = torch.minimum(centers, torch.tensor([w - 1, h - 1])).int()
    radius = torch.randint(0, 7, (n, ), generator=g).int()
    expected = torch.zeros(3, h, w)
    for c, xy, r in zip(labels.tolist(), centers.tolist(), radius.tolist()):
        draw_heatmap_gaussian(expected[c], xy, r)
    got = draw_heatmap_gaussians(torch.zeros(3, h, w), labels, centers, radius)
    assert torch.equal(got, expected) and int((expected == 1).sum()) > 200
    empty = draw_heatmap_gaussians(torch.zeros(3, h, w), labels[:0], centers[:0], radius[:0])
    assert not empty.any()


def test_loss_finite_backward_with_empty_image():
    head = _head()
    x = torch.randn(2, 128, FM, FM, requires_grad=True)
    samples = [_sample([CAR, [-3.0, 4.0, -1.0, 0.8, 0.8, 1.8, 1.0]], [0, 1]), _sample([], [])]
    losses = head.loss([x], samples)
    assert set(losses) == {'loss_heatmap', 'loss_bbox', 'loss_iou', 'loss_iou_reg'}
    for v in losses.values():
        assert torch.isfinite(v).all()
    sum(losses.values()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert head.task_heads[0].iou[-1].weight.grad.abs().sum() > 0


def test_loss_all_empty_gt():
    head = _head()
    x = torch.randn(2, 128, FM, FM, requires_grad=True)
    losses = head.loss([x], [_sample([], []), _sample([], [])])
    for k in ('loss_bbox', 'loss_iou', 'loss_iou_reg'):
        assert losses[k].item() == 0
    assert losses['loss_heatmap'].item() > 0
    sum(losses.values()).backward()
    assert torch.isfinite(x.grad).all()


def test_iou_branch_and_diou_loss_hand_computed():
    """Prediction = GT shifted by half a length along its (x) axis: IoU3D = 1/3."""
    head = _head()
    gt_box = [1.0, 2.0, -1.0, 4.5, 2.0, 1.6, 0.0]
    preds = _zero_preds()
    ix, iy = 17, 19
    shift = 4.5 / 2
    preds['center'][0, 0, iy, ix] = (1.0 + shift + 10.24) / CELL - ix
    preds['center'][0, 1, iy, ix] = CAR_CY - iy
    preds['center_z'][0, 0, iy, ix] = -0.2
    preds['dim'][0, :, iy, ix] = torch.tensor([4.5, 2.0, 1.6]).log()
    preds['rot'][0, 0, iy, ix] = 1.0
    preds['iou'][0, 0, iy, ix] = 0.0
    for v in preds.values():
        v.requires_grad_(True)
    losses = head.loss_by_feat(([preds], ), [_sample([gt_box], [0]).gt_instances_3d])
    iou = 1.0 / 3.0
    # IoU target 2 * 1/3 - 1 = -1/3, prediction 0, one object, weight 1
    assert losses['loss_iou'].item() == pytest.approx(abs(0.0 - (2 * iou - 1)), abs=1e-4)
    # DIoU (axis aligned): IoU - d^2 / c^2, enclosing box 1.5 l x w x h
    c2 = (1.5 * 4.5) ** 2 + 2.0 ** 2 + 1.6 ** 2
    diou = iou - shift ** 2 / c2
    assert losses['loss_iou_reg'].item() == pytest.approx(2.0 * (1 - diou), abs=1e-4)
    # L1 regression: only the x offset is off, by shift / cell; loc weight 2
    assert losses['loss_bbox'].item() == pytest.approx(2.0 * shift / CELL, abs=1e-4)
    sum(losses.values()).backward()
    # the IoU target is detached: the IoU loss alone does not reach the box branches
    head2 = _head()
    for v in preds.values():
        v.grad = None
    loss_iou = head2.loss_by_feat(([preds], ), [_sample([gt_box], [0]).gt_instances_3d])['loss_iou']
    loss_iou.backward()
    assert preds['iou'].grad.abs().sum() > 0
    assert preds['center'].grad is None or preds['center'].grad.abs().sum() == 0


def test_loss_degenerate_predictions_have_finite_grads():
    """All-zero maps (rot = (0, 0) -> atan2(0, 0)) must not produce NaN gradients."""
    head = _head()
    preds = {k: v.requires_grad_(True) for k, v in _zero_preds(2).items()}
    samples = [_sample([CAR], [0]).gt_instances_3d, _sample([], []).gt_instances_3d]
    losses = head.loss_by_feat(([preds], ), samples)
    sum(losses.values()).backward()
    for k, v in preds.items():
        assert torch.isfinite(v.grad).all(), k


def test_paired_iou3d_hand_computed():
    a = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 2.0, 0.0]] * 3)
    b = torch.tensor([
        [0.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0],      # z shift by h/2: 1/3
        [2.0, 0.0, 0.0, 4.0, 2.0, 2.0, 0.0],      # x shift by l/2: 1/3
        [0.0, 0.0, 0.0, 4.0, 2.0, 2.0, 0.0]])     # identical: 1
    torch.testing.assert_close(paired_boxes_iou3d(a, b), torch.tensor([1 / 3, 1 / 3, 1.0]),
                               atol=1e-4, rtol=0)
    # rotated: a 4 x 2 box vs the same rotated by 90 deg about a shifted centre
    r = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 2.0, 0.1]])
    r_rot = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 2.0, 0.1 + math.pi / 2]])
    torch.testing.assert_close(paired_boxes_iou3d(r, r_rot), torch.tensor([4.0 / 12.0]),
                               atol=1e-4, rtol=0)
    assert paired_boxes_iou3d(a[:0], b[:0]).shape == (0, )


def test_diou_identical_and_hand_case():
    a = torch.tensor([[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.7]])
    torch.testing.assert_close(axis_aligned_diou3d(a, a), torch.ones(1))
    # heading is ignored
    torch.testing.assert_close(axis_aligned_diou3d(a, a + torch.tensor([0, 0, 0, 0, 0, 0, 1.0])),
                               torch.ones(1))
    p = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    q = torch.tensor([[1.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    torch.testing.assert_close(axis_aligned_diou3d(p, q), torch.tensor([1 / 3 - 1 / 17]))
    # disjoint, far apart: DIoU clamps at -1 at most
    far = torch.tensor([[100.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    assert -1.0 <= axis_aligned_diou3d(p, far).item() < -0.9


def test_rectified_score_formula():
    scores = torch.tensor([0.5, 0.8, 0.9, 0.3])
    iou_preds = torch.tensor([0.2, -3.0, 5.0, 0.0])
    labels = torch.tensor([0, 2, 1, 1])
    alphas = [0.68, 0.71, 0.65]
    out = rectify_scores(scores, iou_preds, labels, alphas)
    expected = torch.tensor([
        0.5 ** (1 - 0.68) * 0.6 ** 0.68,
        0.0,                               # iou clamped to 0
        0.9 ** (1 - 0.71) * 1.0 ** 0.71,   # iou clamped to 1
        0.3 ** (1 - 0.71) * 0.5 ** 0.71])
    torch.testing.assert_close(out, expected)


def test_class_specific_nms():
    box = [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.05]
    near = [0.1, 0.05, 0.0, 4.0, 2.0, 1.5, 0.07]
    boxes = torch.tensor([box, near])
    scores = torch.tensor([0.9, 0.8])
    # different classes: both kept
    keep = class_specific_nms(boxes, scores, torch.tensor([0, 1]), 3, [0.75, 0.6, 0.55])
    assert sorted(keep.tolist()) == [0, 1]
    # same class: the lower score is suppressed
    keep = class_specific_nms(boxes, scores, torch.tensor([2, 2]), 3, [0.75, 0.6, 0.55])
    assert keep.tolist() == [0]
    # class-specific thresholds: IoU ~ 0.667 survives 0.75 (class 0) but not 0.6 (class 1)
    shifted = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.02],
                            [0.8, 0.0, 0.0, 4.0, 2.0, 1.5, 0.02]])
    iou = paired_boxes_iou3d(shifted[:1], shifted[1:]).item()
    assert 0.6 < iou < 0.75
    assert sorted(class_specific_nms(shifted, scores, torch.tensor([0, 0]), 3,
                                     [0.75, 0.6, 0.55]).tolist()) == [0, 1]
    assert class_specific_nms(shifted, scores, torch.tensor([1, 1]), 3,
                              [0.75, 0.6, 0.55]).tolist() == [0]
    # post_max_size
    far = torch.tensor([box, [10.0, 0, 0, 4, 2, 1.5, 0], [-10.0, 0, 0, 4, 2, 1.5, 0]])
    keep = class_specific_nms(far, torch.tensor([0.5, 0.9, 0.7]), torch.tensor([0, 0, 0]), 3, 0.5,
                              post_max_size=2)
    assert keep.tolist() == [1, 2]
    empty = class_specific_nms(far[:0], scores[:0], torch.zeros(0, dtype=torch.long), 3, 0.5)
    assert empty.numel() == 0


def test_predict_planted_peak():
    head = _head().eval()
    preds = _zero_preds()
    preds['heatmap'].fill_(-10.0)
    ix, iy, cls = 20, 10, 1
    preds['heatmap'][0, cls, iy, ix] = 5.0
    preds['center'][0, :, iy, ix] = torch.tensor([0.3, 0.6])
    preds['center_z'][0, 0, iy, ix] = 0.5
    preds['dim'][0, :, iy, ix] = torch.tensor([0.8, 0.9, 1.7]).log()
    preds['rot'][0, :, iy, ix] = torch.tensor([0.6, 0.8])  # cos, sin
    preds['iou'][0, 0, iy, ix] = 0.6                        # iou (0.6 + 1) / 2 = 0.8
    head.forward = lambda feats: ([preds], )                # plant the maps behind predict()
    sample = _sample([], [])
    results = head.predict([torch.zeros(1, 128, FM, FM)], [sample])
    assert len(results) == 1
    res = results[0]
    assert isinstance(res.bboxes_3d, LiDARInstance3DBoxes)
    assert res.bboxes_3d.tensor.shape == (1, 7)
    expected = torch.tensor([
        (ix + 0.3) * CELL - 10.24, (iy + 0.6) * CELL - 10.24, 0.5 - 1.7 / 2, 0.8, 0.9, 1.7,
        math.atan2(0.8, 0.6)])
    torch.testing.assert_close(res.bboxes_3d.tensor[0], expected, atol=1e-5, rtol=1e-5)
    a = 0.71
    score = torch.sigmoid(torch.tensor(5.0)) ** (1 - a) * 0.8 ** a
    torch.testing.assert_close(res.scores_3d, score.view(1))
    assert res.labels_3d.tolist() == [cls]


def test_predict_runs_on_network_output():
    head = _head().eval()
    with torch.no_grad():  # confident heatmaps: every cell clears the 0.1 score threshold
        head.task_heads[0].heatmap[-1].bias.fill_(3.0)
        results = head.predict([torch.randn(2, 128, FM, FM)], [_sample([], []), _sample([], [])])
    assert len(results) == 2
    for res in results:
        n = res.scores_3d.shape[0]
        assert res.bboxes_3d.tensor.shape == (n, 7) and res.labels_3d.shape == (n, )
        assert 0 < n <= 500, n
        assert (res.labels_3d >= 0).all() and (res.labels_3d < 3).all()
        assert set(res.labels_3d.tolist()) == {0, 1, 2}  # class-specific NMS keeps every class
        assert (res.scores_3d >= 0).all() and (res.scores_3d[:-1] >= res.scores_3d[1:]).all()
        assert torch.isfinite(res.bboxes_3d.tensor).all()


def test_geometry_without_train_cfg_comes_from_test_cfg():
    """mmdet3d's init_model (tools/demo.py, inference_detector) builds the model with
    train_cfg=None: the boxes must still decode on the config's grid, not the Waymo default
    (the sample's demo drew 1 box of score 0.27 where tools/test.py found the cars)."""
    geo = dict(point_cloud_range=PC_RANGE, voxel_size=[0.32, 0.32, 0.1875], out_size_factor=2)
    head = CenterHeadIoU(in_channels=16, train_cfg=None, test_cfg=geo)
    assert list(head.bbox_coder.pc_range) == PC_RANGE[:2]
    assert head.train_cfg['point_cloud_range'] == PC_RANGE
    with pytest.raises(ValueError, match=r'train_cfg.point_cloud_range = .* but test_cfg'):
        CenterHeadIoU(in_channels=16, train_cfg=TRAIN_CFG,
                      test_cfg={**geo, 'point_cloud_range': [-20.0, -20.0, -2.0, 20.0, 20.0, 4.0]})


@pytest.mark.parametrize('config', ['scatterformer_sample-waymo.py', 'scatterformer_nuscenes.py',
                                    'scatterformer_8xb4-24e_waymo-3d-3class.py'])
def test_config_decodes_on_its_grid_without_train_cfg(config):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs/scatterformer', config))
    init_default_scope('mmdet3d')
    expected = list(cfg.model.train_cfg.point_cloud_range[:2])
    head_cfg = dict(cfg.model.bbox_head, train_cfg=None, test_cfg=cfg.model.test_cfg)
    head = MODELS.build(head_cfg)
    assert list(head.bbox_coder.pc_range) == expected
    assert list(head.bbox_coder.voxel_size) == list(cfg.model.train_cfg.voxel_size[:2])
