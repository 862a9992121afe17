"""Tests of the TF-free Waymo metric. Every expected number is derived by hand in a comment.

Conventions used below: boxes are [x, y, z_center, l, w, h, yaw]; the official cutoffs are
0.00, 0.01, ..., 1.00 and a prediction is kept at cutoff c when score >= c.

Recurring hand results for ``compute_ap`` (C++ ComputeMeanAveragePrecision, delta 0.05):

* curve {(R=1, P=1), (R=0, P=1)} -> every point has P=1 -> AP = 1.
* curve {(R=1, P=p), (R=0, P=1)}: going down from R=1, points are inserted at
  0.95, 0.90, ..., 0.05 with the running max p, then R=0 gets max(1, p)=1, which is then
  replaced by the precision of the point above it (p) -> a flat curve at p -> AP = p.
* curve {(R=0.5, P=1), (R=0, P=1)} (max recall 0.5): flat P=1 from 0 to 0.5 -> AP = 0.5.
"""
import math

import numpy as np
import pytest
import torch

from mmattn.evaluation.functional import (OFFICIAL_SCORE_CUTOFFS, box3d_iou, compute_ap,
                                          frame_measurements, heading_accuracy, match_frame,
                                          prepare_gt_difficulty, waymo_ap)

CLASSES = ('Car', 'Pedestrian', 'Cyclist')
CAR, PED, CYC = 0, 1, 2


def _frame(pred=(), gt=(), gt_difficulty=None, gt_num_points=None):
    """pred: [(box, score, label)], gt: [(box, label)]."""
    f = dict(
        pred_boxes=np.array([p[0] for p in pred], dtype=np.float64).reshape(-1, 7),
        pred_scores=np.array([p[1] for p in pred], dtype=np.float32),
        pred_labels=np.array([p[2] for p in pred], dtype=np.int64),
        gt_boxes=np.array([g[0] for g in gt], dtype=np.float64).reshape(-1, 7),
        gt_labels=np.array([g[1] for g in gt], dtype=np.int64))
    if gt_difficulty is not None:
        f['gt_difficulty'] = np.array(gt_difficulty)
    if gt_num_points is not None:
        f['gt_num_points'] = np.array(gt_num_points)
    return f


def _unit(x=0.0, y=0.0, yaw=0.0):
    """A 1 x 1 x 1 box centred at (x, y, 0)."""
    return [x, y, 0.0, 1.0, 1.0, 1.0, yaw]


# ---------------------------------------------------------------------------------- IoU
def test_iou_identical_and_disjoint():
    a = [[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.3]]
    # identical: intersection = own volume = union -> 1
    assert box3d_iou(a, a)[0, 0] == pytest.approx(1.0, abs=1e-9)
    # centres 10 m apart, boxes at most 4.5 m across -> 0
    assert box3d_iou(a, [[11.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.3]])[0, 0] == 0.0
    # same footprint but z ranges [-0.25, 1.25] and [3, 4] do not overlap -> 0
    assert box3d_iou(a, [[1.0, 2.0, 3.5, 4.0, 2.0, 1.0, 0.3]])[0, 0] == 0.0
    # empty inputs give an empty matrix
    assert box3d_iou(np.zeros((0, 7)), a).shape == (0, 1)


def test_iou_rotated_90():
    # A 2x2 square rotated by 90 degrees covers the same square -> IoU 1.
    sq = [0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]
    sq90 = [0.0, 0.0, 0.0, 2.0, 2.0, 1.0, math.pi / 2]
    assert box3d_iou([sq], [sq90])[0, 0] == pytest.approx(1.0, abs=1e-9)
    # A 4x2 rectangle vs itself rotated 90 degrees: the overlap is the central 2x2 square
    # (area 4); union = 8 + 8 - 4 = 12 (equal heights cancel) -> 1/3.
    r = [0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.0]
    r90 = [0.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi / 2]
    assert box3d_iou([r], [r90])[0, 0] == pytest.approx(1 / 3, abs=1e-9)


def test_iou_partial_overlap_by_hand():
    # A = 2x2x2 at (0,0,0): x,y in [-1,1], z in [-1,1].
    # B = 2x2x2 at (1,1,0.5): x,y in [0,2], z in [-0.5,1.5].
    # BEV overlap 1 x 1 = 1; z overlap [-0.5, 1] = 1.5 -> intersection 1.5.
    # union = 8 + 8 - 1.5 = 14.5 -> IoU = 1.5 / 14.5 = 3/29.
    a = [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]
    b = [1.0, 1.0, 0.5, 2.0, 2.0, 2.0, 0.0]
    assert box3d_iou([a], [b])[0, 0] == pytest.approx(3 / 29, abs=1e-9)
    # Square of side 2 vs the same square rotated 45 degrees: a regular octagon. Each corner
    # of the square sticks out sqrt(2) - 1 beyond the rotated square's edge, cutting off an
    # isosceles right triangle of area (sqrt(2)-1)^2 = 3 - 2 sqrt(2). Octagon area
    # = 4 - 4 (3 - 2 sqrt(2)) = 8 sqrt(2) - 8; IoU = I / (8 - I) = (sqrt2-1)/(2-sqrt2)
    # = 1/sqrt(2).
    c = [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, math.pi / 4]
    assert box3d_iou([a], [c])[0, 0] == pytest.approx(1 / math.sqrt(2), abs=1e-9)


def test_iou_matrix_matches_mmcv():
    mmcv_ops = pytest.importorskip('mmcv.ops')
    rng = np.random.default_rng(0)
    n = 60
    a = np.c_[rng.uniform(-5, 5, (n, 2)), np.zeros(n), rng.uniform(0.5, 4, (n, 2)),
              np.ones(n), rng.uniform(-np.pi, np.pi, n)]
    b = a.copy()
    b[:, :2] += rng.normal(0, 0.7, (n, 2))
    b[:, 3:5] *= rng.uniform(0.7, 1.3, (n, 2))
    b[:, 6] += rng.normal(0, 0.5, n)
    ours = box3d_iou(a, b)  # equal z ranges -> 3D IoU == BEV IoU
    # mmcv's rotated boxes are (x, y, w, h, angle); with clockwise=True its angle has the
    # same sense as our counter-clockwise yaw.
    ref = mmcv_ops.box_iou_rotated(
        torch.from_numpy(a[:, [0, 1, 3, 4, 6]]).float(),
        torch.from_numpy(b[:, [0, 1, 3, 4, 6]]).float(), clockwise=True).double().numpy()
    assert (ours > 0).sum() > n  # a meaningful number of overlapping pairs
    np.testing.assert_allclose(ours, ref, atol=1e-4)


# ----------------------------------------------------------------- heading / difficulty
def test_heading_accuracy():
    # |pi/2 - 0| = pi/2 -> 1 - 1/2 = 0.5
    assert heading_accuracy(math.pi / 2, 0.0) == pytest.approx(0.5)
    # pi and -pi are the same heading -> 1
    assert heading_accuracy(math.pi, -math.pi) == pytest.approx(1.0)
    # 3pi/4 vs -3pi/4: raw diff 3pi/2 > pi -> 2pi - 3pi/2 = pi/2 -> 0.5
    assert heading_accuracy(3 * math.pi / 4, -3 * math.pi / 4) == pytest.approx(0.5)
    # opposite headings -> 0
    assert heading_accuracy(math.pi, 0.0) == pytest.approx(0.0, abs=1e-12)


def test_prepare_gt_difficulty_remap_and_drop():
    # difficulty [0, 0, 2, 1, 0] with points [10, 5, 3, 1, 0]:
    #   0 & 10 pts -> 1 (> 5); 0 & 5 pts -> 2 (not > 5); labeller 2 kept; labeller 1 kept
    #   even with 1 point; 0 points -> dropped.
    keep, diff = prepare_gt_difficulty(np.array([0, 0, 2, 1, 0]), np.array([10, 5, 3, 1, 0]))
    assert keep.tolist() == [True, True, True, True, False]
    assert diff.tolist() == [1, 2, 2, 1]
    # No point counts: used as given, nothing dropped.
    keep, diff = prepare_gt_difficulty(np.array([0, 2]), None)
    assert keep.tolist() == [True, True] and diff.tolist() == [0, 2]
    # Only point counts: everything UNKNOWN -> remapped by points.
    keep, diff = prepare_gt_difficulty(None, np.array([6, 2]))
    assert keep.tolist() == [True, True] and diff.tolist() == [1, 2]


# -------------------------------------------------------------------------- compute_ap
def test_compute_ap_by_hand():
    # {(1, 1), (0, 1)}: flat at 1 -> 1
    assert compute_ap([1.0, 1.0], [1.0, 0.0]) == pytest.approx(1.0)
    # {(R=1, P=0.5)}: inserted 0.95..0.05 at 0.5; R=0 point replaced by 0.5 -> AP 0.5
    # (without the R=0 replacement it would be 0.5 + 0.05 * (0.5 + 1) / 2 - 0.05 * 0.5
    # = 0.5125).
    assert compute_ap([0.5], [1.0]) == pytest.approx(0.5, abs=1e-6)
    # {(R=1, P=2/3), (R=0.5, P=1)}: from R=1 down to 0.55 P = 2/3 (inserted points carry
    # the running max of the higher recalls), 0.55 -> 0.5 trapezoid (2/3 + 1)/2, then P=1
    # down to 0: 0.45 * 2/3 + 0.05 * 5/6 + 0.5 = 0.3 + 0.041666.. + 0.5 = 0.841666..
    assert compute_ap([2 / 3, 1.0], [1.0, 0.5]) == pytest.approx(0.3 + 0.05 * 5 / 6 + 0.5,
                                                                  abs=1e-6)
    # Same with a recall delta of 1 (no inserted points): trapezoid 0.5 * (2/3 + 1) / 2
    # = 0.416666.. plus 0.5 -> 0.916666..
    assert compute_ap([2 / 3, 1.0], [1.0, 0.5], recall_delta=1.0) == pytest.approx(
        0.5 * (2 / 3 + 1) / 2 + 0.5, abs=1e-6)
    # Only the (0, 1) point -> no area -> 0; empty input -> 0.
    assert compute_ap([1.0], [0.0]) == 0.0
    assert compute_ap([], []) == 0.0


# ------------------------------------------------------------------------- whole metric
def test_single_perfect_prediction():
    # One GT, one exact prediction (score 0.9): cutoffs <= 0.9 give (R=1, P=1), higher
    # ones (R=0, P=1) -> AP 1; heading exact -> APH 1. Both levels (GT difficulty 0 with no
    # point counts counts as <= L1).
    box = [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.4]
    res = waymo_ap([_frame(pred=[(box, 0.9, CAR)], gt=[(box, CAR)])], CLASSES)
    for lvl in ('L1', 'L2'):
        assert res['Car'][lvl][0] == pytest.approx(1.0)
        assert res['Car'][lvl][1] == pytest.approx(1.0)
    # Pedestrian and Cyclist have no GT -> 0; mAP = (1 + 0 + 0) / 3.
    assert res['Pedestrian']['L1'] == (0.0, 0.0)
    assert res['mAP']['L1'] == pytest.approx(1 / 3)
    assert res['mAPH']['L2'] == pytest.approx(1 / 3)


def test_heading_off_by_half_pi_halves_aph():
    # A 2x2 square rotated by pi/2 has the same footprint -> IoU 1 -> TP (AP 1), heading
    # accuracy 1 - (pi/2)/pi = 0.5 -> P_ha = 0.5 at R = 1 -> APH = 0.5 (= 0.5 AP).
    gt = [0.0, 0.0, 0.0, 2.0, 2.0, 1.5, 0.0]
    pd = [0.0, 0.0, 0.0, 2.0, 2.0, 1.5, math.pi / 2]
    res = waymo_ap([_frame(pred=[(pd, 0.8, CAR)], gt=[(gt, CAR)])], CLASSES)
    ap, aph = res['Car']['L1']
    assert ap == pytest.approx(1.0)
    assert aph == pytest.approx(0.5 * ap, abs=1e-6)


def test_fp_scored_above_a_tp():
    # Two pedestrians; TP1 (0.9) on GT1, an FP (0.8) far away, TP2 (0.7) on GT2.
    #   c <= 0.70:        TP 2, FP 1, FN 0 -> P 2/3, R 1
    #   0.71 <= c <= 0.80: TP 1, FP 1, FN 1 -> P 1/2, R 1/2
    #   0.81 <= c <= 0.90: TP 1, FP 0, FN 1 -> P 1,   R 1/2
    #   c >= 0.91:        R 0 -> P 1
    # Max precision per recall: {0: 1, 0.5: 1, 1: 2/3} -> as in test_compute_ap_by_hand:
    # AP = 0.45 * 2/3 + 0.05 * (2/3 + 1)/2 + 0.5 * 1 = 0.841666..; headings exact -> APH same.
    g1, g2, far = _unit(0, 0), _unit(10, 0), _unit(20, 20)
    frame = _frame(pred=[(g1, 0.9, PED), (far, 0.8, PED), (g2, 0.7, PED)],
                   gt=[(g1, PED), (g2, PED)])
    res = waymo_ap([frame], CLASSES, return_curves=True)
    expected = 0.45 * 2 / 3 + 0.05 * (2 / 3 + 1) / 2 + 0.5
    assert res['Pedestrian']['L1'][0] == pytest.approx(expected, abs=1e-6)
    assert res['Pedestrian']['L1'][1] == pytest.approx(expected, abs=1e-6)
    curves = res['curves']['Pedestrian']
    # cutoff index 50 (0.50): all three kept; 75 (0.75): TP1 + FP; 85: TP1 only.
    assert (curves['tp'][[50, 75, 85, 95]].tolist(), curves['fp'][[50, 75, 85, 95]].tolist()) \
        == ([2, 1, 1, 0], [1, 1, 0, 0])


def test_missed_level2_gt_counts_only_at_level2():
    # GT A (difficulty 1) found exactly (score 0.9); GT B (difficulty 2) missed.
    #   L1: B is harder than L1 -> not an FN: TP 1, FP 0, FN 0 -> AP 1.
    #   L2: FN 1 -> R 1/2, P 1 -> AP 0.5 (flat P=1 up to R=0.5).
    a, b = _unit(0, 0), _unit(5, 5)
    frame = _frame(pred=[(a, 0.9, CYC)], gt=[(a, CYC), (b, CYC)], gt_difficulty=[1, 2])
    res = waymo_ap([frame], CLASSES)
    assert res['Cyclist']['L1'] == pytest.approx((1.0, 1.0))
    assert res['Cyclist']['L2'] == pytest.approx((0.5, 0.5), abs=1e-6)


def test_prediction_matched_to_level2_gt_is_tp_at_level1():
    # The only GT is LEVEL_2 and is found: a matched prediction is a TP at every level, so
    # at L1: TP 1, FP 0, FN 0 -> P 1, R 1 -> AP 1 (not an FP, which would give AP 0).
    a = _unit(3, 3)
    res = waymo_ap([_frame(pred=[(a, 0.6, PED)], gt=[(a, PED)], gt_difficulty=[2])], CLASSES)
    assert res['Pedestrian']['L1'] == pytest.approx((1.0, 1.0))
    assert res['Pedestrian']['L2'] == pytest.approx((1.0, 1.0))
    # Without the prediction the L2 GT is ignored at L1 (no TP, no FN) -> R = 0 -> AP 0; at
    # L2 it is an FN -> R = 0 -> AP 0.
    res = waymo_ap([_frame(gt=[(a, PED)], gt_difficulty=[2])], CLASSES)
    assert res['Pedestrian']['L1'] == (0.0, 0.0)
    assert res['Pedestrian']['L2'] == (0.0, 0.0)


def test_difficulty_zero_remapped_by_point_count():
    # Two UNKNOWN-difficulty GT: A with 6 points (-> L1, found), B with 5 points (-> L2,
    # missed). L1: A TP, B not an FN -> AP 1; L2: R 1/2 -> AP 0.5.
    a, b = _unit(0, 0), _unit(5, 0)
    frame = _frame(pred=[(a, 0.9, PED)], gt=[(a, PED), (b, PED)],
                   gt_difficulty=[0, 0], gt_num_points=[6, 5])
    res = waymo_ap([frame], CLASSES)
    assert res['Pedestrian']['L1'][0] == pytest.approx(1.0)
    assert res['Pedestrian']['L2'][0] == pytest.approx(0.5, abs=1e-6)


def test_zero_point_gt_dropped():
    # GT A (10 pts) found, GT B (0 pts) missed. B is dropped -> L2: TP 1, FN 0 -> AP 1.
    # (If B were kept it would be an L2 FN and give AP 0.5.)
    a, b = _unit(0, 0), _unit(5, 0)
    frame = _frame(pred=[(a, 0.9, PED)], gt=[(a, PED), (b, PED)], gt_num_points=[10, 0])
    assert waymo_ap([frame], CLASSES)['Pedestrian']['L2'][0] == pytest.approx(1.0)
    # A prediction on a dropped 0-point GT is an FP: TP 0, FP 1, no GT -> AP 0.
    frame = _frame(pred=[(b, 0.9, PED)], gt=[(b, PED)], gt_num_points=[0])
    assert waymo_ap([frame], CLASSES)['Pedestrian']['L2'] == (0.0, 0.0)


def test_hungarian_differs_from_greedy():
    # Unit pedestrians shifted along x only, so IoU = o / (2 - o) with o = 1 - |dx|.
    #   GT1 x=0, GT2 x=0.5; pred A x=0.2 (score 0.9), pred B x=-0.1 (score 0.8).
    #   A-GT1: o 0.8 -> 2/3;   A-GT2: o 0.7 -> 7/13 ~ 0.538 (both >= 0.5)
    #   B-GT1: o 0.9 -> 9/11;  B-GT2: o 0.4 -> 0.25 (< 0.5)
    # Hungarian: A-GT2 + B-GT1 = 1.357 > A-GT1 alone = 0.667 -> 2 TPs.
    # Score-first greedy: A takes its best GT1, B has nothing left -> 1 TP, 1 FP.
    gt = [_unit(0.0), _unit(0.5)]
    pd = [_unit(0.2), _unit(-0.1)]
    iou = box3d_iou(pd, gt)
    np.testing.assert_allclose(iou, [[2 / 3, 7 / 13], [9 / 11, 0.25]], atol=1e-9)
    assert match_frame(iou, 0.5).tolist() == [1, 0]
    assert match_frame(iou, 0.5, 'score_first', np.array([0.9, 0.8])).tolist() == [0, -1]
    frame = _frame(pred=[(pd[0], 0.9, PED), (pd[1], 0.8, PED)], gt=[(g, PED) for g in gt])
    # Hungarian, re-matched per cutoff: c <= 0.8: TP 2 -> (R 1, P 1); 0.81..0.9: only A,
    # matched to GT1 -> (R 0.5, P 1) -> AP 1.
    assert waymo_ap([frame], CLASSES)['Pedestrian']['L1'][0] == pytest.approx(1.0)
    # Greedy: c <= 0.8: TP 1, FP 1 -> (R 0.5, P 0.5); 0.81..0.9: (R 0.5, P 1): max
    # recall 0.5 with P 1 -> AP 0.5.
    res = waymo_ap([frame], CLASSES, matcher='score_first')
    assert res['Pedestrian']['L1'][0] == pytest.approx(0.5, abs=1e-6)


def test_iou_threshold_per_class():
    # Shift a unit box by 0.3: IoU = 0.7 / 1.3 ~ 0.538: a TP for a pedestrian (0.5) but an
    # FP for a car (0.7): Car TP 0, FP 1, FN 1 -> R 0 -> AP 0.
    gt, pd = _unit(0.0), _unit(0.3)
    res = waymo_ap([_frame(pred=[(pd, 0.9, PED), (pd, 0.9, CAR)], gt=[(gt, PED), (gt, CAR)])],
                   CLASSES)
    assert res['Pedestrian']['L1'][0] == pytest.approx(1.0)
    assert res['Car']['L1'][0] == 0.0


def test_empty_predictions_and_frames():
    # GT but no predictions anywhere: R 0 at every cutoff -> AP 0, APH 0.
    frames = [_frame(gt=[(_unit(), CAR)]), _frame()]
    res = waymo_ap(frames, CLASSES)
    assert res['Car']['L1'] == (0.0, 0.0) and res['mAP']['L2'] == 0.0
    # No frames at all -> all 0.
    res = waymo_ap([], CLASSES)
    assert res['mAP'] == {'L1': 0.0, 'L2': 0.0}
    # Only predictions, no GT: AP 0 (no recall to gain), no crash.
    res = waymo_ap([_frame(pred=[(_unit(), 0.5, CAR)])], CLASSES)
    assert res['Car']['L1'] == (0.0, 0.0)


@pytest.mark.parametrize('matcher', ['hungarian', 'score_first'])
def test_frame_measurements_equal_naive_per_cutoff_matching(matcher):
    # Consistency (not hand-derived): the cached implementation must equal re-matching all
    # kept predictions at every cutoff, straight from the definition.
    rng = np.random.default_rng(3)
    m = 12
    gt = np.c_[rng.uniform(-4, 4, (m, 2)), np.zeros(m), rng.uniform(0.8, 2, (m, 2)),
               np.ones(m), rng.uniform(-np.pi, np.pi, m)]
    pd = np.r_[gt + np.c_[rng.normal(0, 0.15, (m, 2)), np.zeros((m, 4)),
                          rng.normal(0, 0.3, m)],
               np.c_[rng.uniform(-4, 4, (8, 2)), np.zeros(8), rng.uniform(0.8, 2, (8, 2)),
                     np.ones(8), rng.uniform(-np.pi, np.pi, 8)]]
    scores = rng.uniform(0, 1, len(pd)).astype(np.float32)
    diff = rng.integers(1, 3, m)
    got = frame_measurements(pd, scores, gt, diff, 0.5, matcher=matcher)
    iou = box3d_iou(pd, gt)
    ha = heading_accuracy(pd[:, 6][:, None], gt[:, 6][None])
    for ci, c in enumerate(OFFICIAL_SCORE_CUTOFFS):
        sel = np.nonzero(scores >= c)[0]
        match = match_frame(iou[sel], 0.5, matcher, scores[sel])
        ok = match >= 0
        unmatched = np.ones(m, bool)
        unmatched[match[ok]] = False
        assert got['tp'][ci] == ok.sum() and got['fp'][ci] == (~ok).sum()
        assert got['sum_ha'][ci] == pytest.approx(ha[sel[ok], match[ok]].sum())
        assert got['fn'][:, ci].tolist() == [(unmatched & (diff <= 1)).sum(),
                                             unmatched.sum()]


# ------------------------------------------------------------------------- WaymoMetric
def _sample(pred_boxes, scores, labels, gt_boxes, gt_labels, num_pts, sample_idx):
    from mmdet3d.structures import LiDARInstance3DBoxes
    return dict(
        sample_idx=sample_idx,
        pred_instances_3d=dict(
            bboxes_3d=LiDARInstance3DBoxes(torch.tensor(pred_boxes, dtype=torch.float32)
                                           .reshape(-1, 7)),
            scores_3d=torch.tensor(scores, dtype=torch.float32),
            labels_3d=torch.tensor(labels, dtype=torch.long)),
        eval_ann_info=dict(
            gt_bboxes_3d=LiDARInstance3DBoxes(torch.tensor(gt_boxes, dtype=torch.float32)
                                              .reshape(-1, 7)),
            gt_labels_3d=np.array(labels if gt_labels is None else gt_labels, dtype=np.int64),
            num_lidar_pts=np.array(num_pts)))


def test_waymo_metric_end_to_end():
    pytest.importorskip('mmdet3d')
    from mmattn.evaluation.metrics import WaymoMetric
    from mmattn.registry import METRICS
    metric = METRICS.build(dict(type='mmattn.WaymoMetric'))
    assert isinstance(metric, WaymoMetric)
    metric.dataset_meta = dict(classes=CLASSES)
    car = [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3]  # bottom-centre z = 0
    ped = [10.0, 0.0, 0.0, 1.0, 1.0, 2.0, 0.0]
    ped_flipped = [10.0, 0.0, 0.0, 1.0, 1.0, 2.0, math.pi]
    cyc1 = [0.0, 10.0, 0.0, 2.0, 1.0, 1.5, 0.0]
    cyc2 = [5.0, 5.0, 0.0, 2.0, 1.0, 1.5, 0.0]
    # Frame 1: car exact (0.9), pedestrian with heading off by pi (0.7), cyclist exact
    # (0.8). Points 100 / 50 / 20 -> all L1.
    s1 = _sample([car, ped_flipped, cyc1], [0.9, 0.7, 0.8], [CAR, PED, CYC], [car, ped, cyc1],
                 [CAR, PED, CYC], [100, 50, 20], 0)
    # Frame 2: one cyclist with 3 points (-> L2), no predictions.
    s2 = _sample([], [], [], [cyc2], [CYC], [3], 1)
    # Frame 3: nothing at all.
    s3 = _sample([], [], [], [], [], [], 2)
    metric.process({}, [s1, s2])
    metric.process({}, [s3])
    # bottom-centre z 0 with height 1.5 -> centre z 0.75
    assert metric.results[0]['gt_boxes'][0, 2] == pytest.approx(0.75)
    assert metric.results[0]['pred_boxes'][0, 2] == pytest.approx(0.75)
    out = metric.compute_metrics(metric.results)
    # Car: one exact TP -> AP = APH = 1 at both levels.
    # Pedestrian: same footprint (a 1x1 square turned by pi) -> TP, AP 1; heading
    #   accuracy 1 - pi/pi = 0 -> P_ha 0 at R 1 -> flat 0 after the R=0 replacement -> APH 0.
    # Cyclist: L1: frame-2 box is L2 -> not an FN -> AP = APH = 1; L2: R 1/2 -> 0.5.
    expected = {
        'Car/L1 AP': 1.0, 'Car/L1 APH': 1.0, 'Car/L2 AP': 1.0, 'Car/L2 APH': 1.0,
        'Pedestrian/L1 AP': 1.0, 'Pedestrian/L1 APH': 0.0,
        'Pedestrian/L2 AP': 1.0, 'Pedestrian/L2 APH': 0.0,
        'Cyclist/L1 AP': 1.0, 'Cyclist/L1 APH': 1.0,
        'Cyclist/L2 AP': 0.5, 'Cyclist/L2 APH': 0.5,
        'mAP L1': 1.0,  # (1 + 1 + 1) / 3
        'mAPH L1': 2 / 3,  # (1 + 0 + 1) / 3
        'mAP L2': 5 / 6,  # (1 + 1 + 0.5) / 3
        'mAPH L2': 0.5,  # (1 + 0 + 0.5) / 3
    }
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, abs=1e-5), k
    # Through BaseMetric.evaluate the keys get the default 'Waymo/' prefix.
    metric.process({}, [s1, s2, s3])
    assert metric.evaluate(3)['Waymo/mAPH L2'] == pytest.approx(0.5, abs=1e-5)


def test_waymo_metric_vehicle_name_and_empty():
    pytest.importorskip('mmdet3d')
    from mmattn.evaluation.metrics import WaymoMetric
    metric = WaymoMetric()
    metric.dataset_meta = dict(classes=('Vehicle', 'Pedestrian', 'Cyclist'))
    car = [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3]
    # One vehicle GT, empty predictions -> everything 0, no crash.
    metric.process({}, [_sample([], [], [], [car], [0], [10], 0)])
    out = metric.compute_metrics(metric.results)
    assert out['Vehicle/L1 AP'] == 0.0 and out['mAPH L2'] == 0.0


def test_waymo_metric_accepts_det3d_data_samples():
    # The same one-car frame as a Det3DDataSample and as its to_dict(): the car is an exact
    # TP in both frames -> Car AP 1; Pedestrian/Cyclist have no GT -> 0; mAP = 1/3.
    pytest.importorskip('mmdet3d')
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData

    from mmattn.evaluation.metrics import WaymoMetric
    boxes = LiDARInstance3DBoxes(torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3]]))
    sample = Det3DDataSample(metainfo=dict(sample_idx=5))
    sample.pred_instances_3d = InstanceData(
        bboxes_3d=boxes, scores_3d=torch.tensor([0.9]), labels_3d=torch.tensor([0]))
    sample.eval_ann_info = dict(gt_bboxes_3d=boxes, gt_labels_3d=np.array([0]),
                                num_lidar_pts=np.array([10]), difficulty=np.array([0]))
    metric = WaymoMetric()
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [sample])
    metric.process({}, [sample.to_dict()])
    assert [r['sample_idx'] for r in metric.results] == [5, 5]
    out = metric.compute_metrics(metric.results)
    assert out['Car/L1 AP'] == pytest.approx(1.0) and out['mAP L2'] == pytest.approx(1 / 3)


def test_official_options_need_the_package():
    from mmattn.evaluation.metrics import WaymoMetric
    with pytest.raises(ValueError, match='official_bin'):
        WaymoMetric(cross_check=True)
    try:
        import waymo_open_dataset  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match='waymo-open-dataset'):
            WaymoMetric(official_bin='/nonexistent/compute_detection_metrics_main')
    else:  # pragma: no cover - only where the package is installed
        with pytest.raises(FileNotFoundError):
            WaymoMetric(official_bin='/nonexistent/compute_detection_metrics_main')
