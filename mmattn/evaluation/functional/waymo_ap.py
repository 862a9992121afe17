"""A TensorFlow-free Waymo 3D detection metric (AP / APH at LEVEL_1 and LEVEL_2).

Pure numpy + scipy. It reproduces the semantics of the official C++ evaluator
(``waymo_open_dataset/metrics/{detection_metrics,metrics_utils,matcher,iou}.cc``)
as configured by OpenPCDet's ``waymo_eval.py`` (OBJECT_TYPE breakdown, difficulties
[1, 2], ``TYPE_HUNGARIAN`` matcher, 3D boxes, 101 score cutoffs 0.00 ... 1.00,
``desired_recall_delta`` 0.05). The code here is an independent re-implementation.

Box format everywhere: ``(N, 7)`` ``[x, y, z_center, length, width, height, heading]``,
heading counter-clockwise from +x (Waymo ``Label.Box``; mmdet3d ``LiDARInstance3DBoxes``
use the same yaw convention, but bottom-centre z, see ``WaymoMetric``).

Semantics, in order:

* **IoU.** 3D IoU of heading-rotated boxes: BEV convex polygon intersection area times
  the z-overlap, over the union of volumes. As in ``iou.cc``: any dimension <= 0.01 or
  >= 1e6 gives IoU 0; a union volume <= 1e-6 gives 0; the result is clamped to [0, 1].
* **Matching** is per frame and per class. For *every* score cutoff the predictions with
  ``score >= cutoff`` are matched anew (``ComputeDetectionMeasurementsPerBreakdownShard``
  calls ``Matcher::Match`` once per cutoff), so a prediction's TP/FP status can change
  with the cutoff. A pair can match when ``float32(iou) >= float32(threshold)``
  (``Matcher::CanMatch``); the Hungarian matcher maximises the sum of
  ``round(iou * 1e6)`` over matchable pairs (``QuantizedIoU``; non-matchable pairs weigh 0)
  and keeps only matchable pairs. We use ``scipy.optimize.linear_sum_assignment``; when
  several assignments have the same total weight the tie may be broken differently from
  the C++ Hungarian, which can only change results in exactly tied cases.
  ``matcher='score_first'`` gives the official ``TYPE_SCORE_FIRST`` greedy matcher.
* **GT difficulty** (``prepare_gt_difficulty``, what OpenPCDet's wrapper does before
  calling the op): with point counts, 0-point GT is dropped and difficulty 0 (UNKNOWN)
  becomes 1 if the box has > 5 points, else 2. Labeller-set 1/2 are kept. Without point
  counts, difficulty is used as given and UNKNOWN (0) compares as <= LEVEL_1, like the C++.
* **Counting at level L** (``ComputeDetectionMeasurementFromMatchingResult``): a matched
  prediction is a TP whatever its GT's difficulty (so a prediction matched to a LEVEL_2
  box is a TP at LEVEL_1 too), an unmatched prediction is an FP (there is no NLZ
  information here, so ``overlap_with_nlz`` is always false), an unmatched GT is an FN
  only if its difficulty <= L. ``min_heading_accuracy`` is the default -1 (no TP dropped).
* **P/R** (``ToDetectionMetrics``): P = TP / (TP + FP) (0 if no predictions),
  R = TP / (TP + FN) (0 if no GT); if R == 0 then P = 1. For APH the precision is
  ``sum(heading_accuracy) / (TP + FP)`` and the recall is the *plain* recall
  TP / (TP + FN): the current official code deliberately uses ``num_tps`` there ("none of
  the existing matcher implementations takes heading accuracy into account"). Heading
  accuracy is ``clamp(1 - |dtheta| / pi, 0, 1)`` with both headings wrapped to [-pi, pi)
  and |dtheta| folded into [0, pi].
* **AP** (``compute_ap`` = ``ComputeMeanAveragePrecision``): see that function. The
  C++ keeps the recall -> precision map in float32; we do the same, so results agree to
  float32 rounding (~1e-6).
* **Score cutoffs**: ``float32(i * 0.01)`` for i < 100, then 1.0 (OpenPCDet's config,
  stored as float32 in the proto); scores are compared as float32.
* **mAP / mAPH**: the mean over the evaluated classes (Vehicle/Car, Pedestrian, Cyclist;
  'Sign' is evaluated if asked for but left out of the mean), as mmdet3d/OpenPCDet do.

A class without any GT in the whole data set gets AP = APH = 0 (the P/R curve is the
single point (R=0, P=1) and its area is 0; the official C++ reads out of bounds there).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    'DEFAULT_IOU_THRESHOLDS', 'OFFICIAL_SCORE_CUTOFFS', 'box3d_iou', 'bev_intersection_area',
    'prepare_gt_difficulty', 'heading_accuracy', 'match_frame', 'frame_measurements',
    'compute_ap', 'waymo_ap'
]

DEFAULT_IOU_THRESHOLDS: Dict[str, float] = {
    'Vehicle': 0.7,
    'Car': 0.7,
    'Pedestrian': 0.5,
    'Cyclist': 0.5,
    'Sign': 0.5,
}

#: The 101 cutoffs of OpenPCDet's config, as the float32 values the proto holds.
OFFICIAL_SCORE_CUTOFFS = np.array([i * 0.01 for i in range(100)] + [1.0], dtype=np.float32)

_MIN_BOX_DIM = 1e-2
_MAX_BOX_DIM = 1e6
_EPS = 1e-6
_MAX_IOU_QUANT = 1000 * 1000
LEVELS = (1, 2)


# --------------------------------------------------------------------------------------
# Rotated IoU
# --------------------------------------------------------------------------------------
def _bev_corners(boxes: np.ndarray) -> np.ndarray:
    """(P, >=5) [x, y, l, w, yaw] -> (P, 4, 2) counter-clockwise corners."""
    x, y, l, w, yaw = (boxes[:, i] for i in range(5))
    dx = np.stack([l, -l, -l, l], axis=1) * 0.5
    dy = np.stack([w, w, -w, -w], axis=1) * 0.5
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack([x[:, None] + dx * c - dy * s, y[:, None] + dx * s + dy * c], axis=-1)


def _inside(points: np.ndarray, boxes: np.ndarray, tol: float) -> np.ndarray:
    """points (P, K, 2) inside (closed, with tolerance) boxes (P, 5) [x, y, l, w, yaw]."""
    rel = points - boxes[:, None, :2]
    c, s = np.cos(boxes[:, 4])[:, None], np.sin(boxes[:, 4])[:, None]
    lx = rel[..., 0] * c + rel[..., 1] * s
    ly = -rel[..., 0] * s + rel[..., 1] * c
    return ((np.abs(lx) <= boxes[:, None, 2] * 0.5 + tol)
            & (np.abs(ly) <= boxes[:, None, 3] * 0.5 + tol))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def bev_intersection_area(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise-aligned intersection area of rotated rectangles.

    Args:
        boxes_a, boxes_b: (P, 5) ``[x, y, length, width, yaw]``, row i of one against row i
            of the other.

    Returns:
        (P,) float64 areas.

    The intersection of two convex polygons is the convex hull of (corners of A inside B)
    + (corners of B inside A) + (edge/edge crossings). All candidates are gathered at once
    (24 per pair, masked), sorted by angle around their mean and integrated with the
    shoelace formula; invalid slots are replaced by the first valid point so that they add
    zero-length edges.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 5)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 5)
    num = a.shape[0]
    if num == 0:
        return np.zeros(0, dtype=np.float64)
    scale = np.maximum(np.maximum(a[:, 2:4].max(1), b[:, 2:4].max(1)), 1.0)
    tol = (1e-9 * scale)[:, None]
    ca, cb = _bev_corners(a), _bev_corners(b)  # (P, 4, 2)
    in_a = _inside(cb, a, tol)  # corners of B inside A
    in_b = _inside(ca, b, tol)
    # Edge/edge crossings: p + t r == q + u s.
    p = ca[:, :, None, :]
    r = (np.roll(ca, -1, axis=1) - ca)[:, :, None, :]
    q = cb[:, None, :, :]
    s = (np.roll(cb, -1, axis=1) - cb)[:, None, :, :]
    denom = _cross(r, s)  # (P, 4, 4)
    qp = q - p
    nonpar = np.abs(denom) > 1e-12 * (scale * scale)[:, None, None]
    safe = np.where(nonpar, denom, 1.0)
    t = _cross(qp, s) / safe
    u = _cross(qp, r) / safe
    e = 1e-9
    ok_x = nonpar & (t >= -e) & (t <= 1 + e) & (u >= -e) & (u <= 1 + e)
    xpts = (p + t[..., None] * r).reshape(num, 16, 2)
    pts = np.concatenate([ca, cb, xpts], axis=1)  # (P, 24, 2)
    mask = np.concatenate([in_b, in_a, ok_x.reshape(num, 16)], axis=1)
    count = mask.sum(1)
    centre = (pts * mask[..., None]).sum(1) / np.maximum(count, 1)[:, None]
    rel = pts - centre[:, None, :]
    ang = np.where(mask, np.arctan2(rel[..., 1], rel[..., 0]), np.inf)
    order = np.argsort(ang, axis=1, kind='stable')
    rel = np.take_along_axis(rel, order[..., None], axis=1)
    mask = np.take_along_axis(mask, order, axis=1)
    rel = np.where(mask[..., None], rel, rel[:, :1, :])
    nxt = np.roll(rel, -1, axis=1)
    area = 0.5 * np.abs(_cross(rel, nxt).sum(1))
    area[count < 3] = 0.0
    return area


def box3d_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """3D IoU matrix of heading-rotated boxes, official ``ComputeIoU3d`` semantics.

    Args:
        boxes_a: (N, 7) ``[x, y, z_center, l, w, h, yaw]``.
        boxes_b: (M, 7) same.

    Returns:
        (N, M) float64 IoU in [0, 1].
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    out = np.zeros((a.shape[0], b.shape[0]), dtype=np.float64)
    if out.size == 0:
        return out
    valid_a = np.all((a[:, 3:6] > _MIN_BOX_DIM) & (a[:, 3:6] < _MAX_BOX_DIM), axis=1)
    valid_b = np.all((b[:, 3:6] > _MIN_BOX_DIM) & (b[:, 3:6] < _MAX_BOX_DIM), axis=1)
    # z overlap (closed ranges) and a circumscribed-circle BEV pre-filter.
    za0, za1 = a[:, 2] - a[:, 5] * 0.5, a[:, 2] + a[:, 5] * 0.5
    zb0, zb1 = b[:, 2] - b[:, 5] * 0.5, b[:, 2] + b[:, 5] * 0.5
    zov = np.minimum(za1[:, None], zb1[None]) - np.maximum(za0[:, None], zb0[None])
    ra = 0.5 * np.hypot(a[:, 3], a[:, 4])
    rb = 0.5 * np.hypot(b[:, 3], b[:, 4])
    dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    cand = ((zov > 0) & (dist < ra[:, None] + rb[None] + 1e-6)
            & valid_a[:, None] & valid_b[None])
    ii, jj = np.nonzero(cand)
    vol_a = a[:, 3] * a[:, 4] * a[:, 5]
    vol_b = b[:, 3] * b[:, 4] * b[:, 5]
    for start in range(0, ii.size, chunk):
        i, j = ii[start:start + chunk], jj[start:start + chunk]
        inter_area = bev_intersection_area(a[i][:, [0, 1, 3, 4, 6]], b[j][:, [0, 1, 3, 4, 6]])
        inter = inter_area * zov[i, j]
        union = vol_a[i] + vol_b[j] - inter
        iou = np.where(union > _EPS, inter / np.where(union > _EPS, union, 1.0), 0.0)
        out[i, j] = np.clip(iou, 0.0, 1.0)
    return out


# --------------------------------------------------------------------------------------
# GT preparation, heading accuracy, matching
# --------------------------------------------------------------------------------------
def prepare_gt_difficulty(difficulty: Optional[np.ndarray] = None,
                          num_points: Optional[np.ndarray] = None,
                          num_boxes: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """OpenPCDet-style GT difficulty preparation.

    Args:
        difficulty: (M,) labeller difficulty (0 UNKNOWN, 1 LEVEL_1, 2 LEVEL_2) or None
            (all UNKNOWN).
        num_points: (M,) lidar points in each box, or None (no remapping, nothing dropped).
        num_boxes: M, needed only when both arrays are None.

    Returns:
        ``(keep, difficulty)``: a (M,) bool mask of the GT to keep (0-point GT dropped when
        point counts are given) and the (K,) int difficulty of the kept boxes, where
        UNKNOWN became 1 (> 5 points) or 2 (<= 5 points) when point counts are given.
    """
    if difficulty is None and num_points is None:
        if num_boxes is None:
            raise ValueError('num_boxes is needed when difficulty and num_points are None')
        return np.ones(num_boxes, dtype=bool), np.zeros(num_boxes, dtype=np.int64)
    m = len(difficulty) if difficulty is not None else len(num_points)
    diff = (np.zeros(m, dtype=np.int64) if difficulty is None else
            np.asarray(difficulty, dtype=np.int64).reshape(-1).copy())
    if num_points is None:
        return np.ones(m, dtype=bool), diff
    pts = np.asarray(num_points).reshape(-1)
    if pts.shape[0] != m:
        raise ValueError(f'difficulty has {m} entries but num_points {pts.shape[0]}')
    unknown = diff == 0
    diff[unknown & (pts > 5)] = 1
    diff[unknown & (pts <= 5)] = 2
    keep = pts > 0
    return keep, diff[keep]


def _normalize_angle(rad: np.ndarray) -> np.ndarray:
    """Wrap to [-pi, pi)."""
    return np.mod(rad + np.pi, 2 * np.pi) - np.pi


def heading_accuracy(pred_heading: np.ndarray, gt_heading: np.ndarray) -> np.ndarray:
    """``1 - |dtheta| / pi`` with dtheta folded into [0, pi], clamped to [0, 1]."""
    diff = np.abs(_normalize_angle(np.asarray(pred_heading, dtype=np.float64))
                  - _normalize_angle(np.asarray(gt_heading, dtype=np.float64)))
    diff = np.where(diff > np.pi, 2 * np.pi - diff, diff)
    return np.clip(1.0 - diff / np.pi, 0.0, 1.0)


def match_frame(iou: np.ndarray, iou_threshold: float, matcher: str = 'hungarian',
                scores: Optional[np.ndarray] = None) -> np.ndarray:
    """Match the predictions (rows) of one frame/class to its GT (columns).

    Args:
        iou: (N, M) IoU matrix.
        iou_threshold: a pair can match when ``float32(iou) >= float32(iou_threshold)``.
        matcher: ``'hungarian'`` (official ``TYPE_HUNGARIAN``: max sum of quantised IoU) or
            ``'score_first'`` (official ``TYPE_SCORE_FIRST``: greedy by descending score).
        scores: (N,) prediction scores, needed by ``'score_first'``.

    Returns:
        (N,) int array: the matched GT column of each prediction, or -1.
    """
    n, m = iou.shape
    pd_match = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return pd_match
    iou32 = iou.astype(np.float32)
    can = iou32 >= np.float32(iou_threshold)
    if not can.any():
        return pd_match
    if matcher == 'hungarian':
        rows = np.nonzero(can.any(1))[0]
        cols = np.nonzero(can.any(0))[0]
        sub_can = can[np.ix_(rows, cols)]
        weight = np.where(sub_can, np.round(iou32[np.ix_(rows, cols)].astype(np.float64)
                                            * _MAX_IOU_QUANT), 0).astype(np.int64)
        r, c = linear_sum_assignment(weight, maximize=True)
        ok = sub_can[r, c]
        pd_match[rows[r[ok]]] = cols[c[ok]]
    elif matcher == 'score_first':
        if scores is None:
            raise ValueError("matcher='score_first' needs scores")
        taken = np.zeros(m, dtype=bool)
        # std::sort by descending score; ties keep index order here.
        for i in np.argsort(-np.asarray(scores, dtype=np.float32), kind='stable'):
            best, best_iou = -1, -1.0
            for j in range(m):
                if not taken[j] and can[i, j] and iou32[i, j] > best_iou:
                    best, best_iou = j, float(iou32[i, j])
            if best >= 0:
                taken[best] = True
                pd_match[i] = best
    else:
        raise ValueError(f'unknown matcher {matcher!r}')
    return pd_match


def frame_measurements(pred_boxes: np.ndarray,
                       pred_scores: np.ndarray,
                       gt_boxes: np.ndarray,
                       gt_difficulty: np.ndarray,
                       iou_threshold: float,
                       score_cutoffs: np.ndarray = OFFICIAL_SCORE_CUTOFFS,
                       matcher: str = 'hungarian',
                       levels: Sequence[int] = LEVELS) -> Dict[str, np.ndarray]:
    """TP / FP / FN / sum of heading accuracy of one frame and one class, per cutoff.

    Predictions are re-matched for every cutoff (on the ones with ``score >= cutoff``), as
    the official evaluator does; identical subsets are matched once.

    Returns:
        dict with ``tp``, ``fp``, ``sum_ha`` of shape (C,) and ``fn`` of shape (len(levels), C).
    """
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 7)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 7)
    scores = np.asarray(pred_scores, dtype=np.float32).reshape(-1)
    gt_difficulty = np.asarray(gt_difficulty, dtype=np.int64).reshape(-1)
    cutoffs = np.asarray(score_cutoffs, dtype=np.float32)
    num_c = cutoffs.shape[0]
    tp = np.zeros(num_c, dtype=np.int64)
    fp = np.zeros(num_c, dtype=np.int64)
    sum_ha = np.zeros(num_c, dtype=np.float64)
    fn = np.zeros((len(levels), num_c), dtype=np.int64)
    # The per-level FN mask for unmatched GT.
    fn_mask = np.stack([gt_difficulty <= lvl for lvl in levels]).reshape(len(levels), -1)

    keep = scores[None, :] >= cutoffs[:, None]  # (C, N)
    n_kept = keep.sum(1)
    if pred_boxes.shape[0] == 0 or gt_boxes.shape[0] == 0:
        fp[:] = n_kept
        fn[:] = fn_mask.sum(1)[:, None]
        return dict(tp=tp, fp=fp, fn=fn, sum_ha=sum_ha)
    iou = box3d_iou(pred_boxes, gt_boxes)
    ha_all = heading_accuracy(pred_boxes[:, 6][:, None], gt_boxes[:, 6][None])
    # Predictions that cannot match any GT never change the matching (both matchers only
    # use matchable pairs): the matching at a cutoff depends only on the kept matchable ones.
    matchable = np.nonzero((iou.astype(np.float32) >= np.float32(iou_threshold)).any(1))[0]
    keep_m = keep[:, matchable]
    cache: Dict[bytes, Tuple[int, float, np.ndarray]] = {}
    for ci in range(num_c):
        key = keep_m[ci].tobytes()
        if key not in cache:
            rows = matchable[keep_m[ci]]
            pd_match = match_frame(iou[rows], iou_threshold, matcher, scores[rows])
            matched = pd_match >= 0
            gt_matched = np.zeros(gt_boxes.shape[0], dtype=bool)
            gt_matched[pd_match[matched]] = True
            n_tp = int(matched.sum())
            s_ha = float(ha_all[rows[matched], pd_match[matched]].sum())
            cache[key] = (n_tp, s_ha, ((~gt_matched)[None] & fn_mask).sum(1))
        n_tp, s_ha, fns = cache[key]
        tp[ci], fp[ci], sum_ha[ci] = n_tp, n_kept[ci] - n_tp, s_ha
        fn[:, ci] = fns
    return dict(tp=tp, fp=fp, fn=fn, sum_ha=sum_ha)


# --------------------------------------------------------------------------------------
# AP
# --------------------------------------------------------------------------------------
def compute_ap(precisions: Sequence[float],
               recalls: Sequence[float],
               recall_delta: float = 0.05) -> float:
    """``ComputeMeanAveragePrecision`` of the official evaluator.

    1. Map each recall to the max precision seen at that recall, with (R=0, P=1) added.
    2. Walk from high to low recall, carrying the running max precision; whenever the gap
       to the next (lower) recall exceeds ``recall_delta`` (+1e-6), insert points every
       ``recall_delta`` below the last recall carrying the running max so far (i.e. the
       precision of the higher-recall side).
    3. Give the R=0 point the precision of the point just above it.
    4. Integrate trapezoidally.

    Keys and running values are float32 like the C++ ``std::map<float, float>``.
    """
    if len(precisions) != len(recalls):
        raise ValueError('precisions and recalls differ in length')
    if not 0.0 < recall_delta <= 1.0:
        raise ValueError('recall_delta must be in (0, 1]')
    if len(precisions) == 0:
        return 0.0
    f32 = np.float32
    rp: Dict[float, float] = {f32(0.0): f32(1.0)}
    for p, r in zip(np.asarray(precisions, dtype=np.float32),
                    np.asarray(recalls, dtype=np.float32)):
        rp[r] = max(rp.get(r, f32(0.0)), p)
    keys = sorted(rp)
    if len(keys) < 2:
        return 0.0
    delta = f32(recall_delta)
    pr: List[Tuple[float, float]] = []  # (precision, recall), recall descending
    last_recall = keys[0]  # as in the C++: the smallest recall
    max_p = f32(0.0)
    for r in reversed(keys):
        while float(last_recall) - float(r) > float(delta) + 1e-6:
            last_recall = f32(last_recall - delta)
            pr.append((max_p, last_recall))
        max_p = max(rp[r], max_p)
        pr.append((max_p, r))
        last_recall = r
    pr[-1] = (pr[-2][0], pr[-1][1])
    area = 0.0
    for (p0, r0), (p1, r1) in zip(pr[:-1], pr[1:]):
        area += 0.5 * (float(r0) - float(r1)) * (float(p0) + float(p1))
    return float(f32(area))


def _pr_curves(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray,
               sum_ha: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ToDetectionMetrics``: (precision, precision_ha, recall) per cutoff."""
    tp = tp.astype(np.float64)
    n_pd = tp + fp
    n_gt = tp + fn
    prec = np.where(n_pd > 0, tp / np.maximum(n_pd, 1), 0.0).astype(np.float32)
    prec_ha = np.where(n_pd > 0, sum_ha / np.maximum(n_pd, 1), 0.0).astype(np.float32)
    rec = np.where(n_gt > 0, tp / np.maximum(n_gt, 1), 0.0).astype(np.float32)
    prec[rec == 0] = 1.0
    prec_ha[rec == 0] = 1.0
    return prec, prec_ha, rec


# --------------------------------------------------------------------------------------
# Whole data set
# --------------------------------------------------------------------------------------
def _iou_threshold_for(name: str, iou_thresholds: Optional[Mapping[str, float]]) -> float:
    table = dict(DEFAULT_IOU_THRESHOLDS)
    if iou_thresholds:
        table.update(iou_thresholds)
    if name not in table:
        raise KeyError(f'no IoU threshold for class {name!r}; pass iou_thresholds')
    return float(table[name])


def waymo_ap(frames: Sequence[Mapping[str, np.ndarray]],
             classes: Sequence[str],
             iou_thresholds: Optional[Mapping[str, float]] = None,
             score_cutoffs: np.ndarray = OFFICIAL_SCORE_CUTOFFS,
             recall_delta: float = 0.05,
             matcher: str = 'hungarian',
             mean_classes: Optional[Sequence[str]] = None,
             return_curves: bool = False) -> Dict:
    """Waymo AP / APH per class at LEVEL_1 and LEVEL_2, plus their class means.

    Args:
        frames: one mapping per frame with
            ``pred_boxes`` (N, 7), ``pred_scores`` (N,), ``pred_labels`` (N,) int indices
            into ``classes``; ``gt_boxes`` (M, 7), ``gt_labels`` (M,); optional
            ``gt_difficulty`` (M,) and ``gt_num_points`` (M,) (see
            :func:`prepare_gt_difficulty`). Boxes are ``[x, y, z_center, l, w, h, yaw]``.
            Labels outside ``[0, len(classes))`` (e.g. -1) are ignored.
        classes: class names, e.g. ``('Car', 'Pedestrian', 'Cyclist')``.
        iou_thresholds: overrides of :data:`DEFAULT_IOU_THRESHOLDS` by class name.
        score_cutoffs: the cutoffs (default: the official 101).
        recall_delta: ``desired_recall_delta`` of the AP integration.
        matcher: ``'hungarian'`` (official default) or ``'score_first'``.
        mean_classes: classes averaged into mAP/mAPH; default: all of ``classes`` except
            'Sign'.
        return_curves: also return the per-class counts and P/R curves under ``'curves'``.

    Returns:
        ``{cls: {'L1': (AP, APH), 'L2': (AP, APH)}, ..., 'mAP': {'L1': x, 'L2': y},
        'mAPH': {'L1': x, 'L2': y}}`` (+ ``'curves'``).
    """
    classes = list(classes)
    thresholds = [_iou_threshold_for(c, iou_thresholds) for c in classes]
    cutoffs = np.asarray(score_cutoffs, dtype=np.float32)
    num_c = cutoffs.shape[0]
    acc = {
        c: dict(tp=np.zeros(num_c, np.int64), fp=np.zeros(num_c, np.int64),
                fn=np.zeros((len(LEVELS), num_c), np.int64), sum_ha=np.zeros(num_c))
        for c in classes
    }
    for frame in frames:
        pb = np.asarray(frame.get('pred_boxes', np.zeros((0, 7))), np.float64).reshape(-1, 7)
        ps = np.asarray(frame.get('pred_scores', np.zeros(0)), np.float32).reshape(-1)
        pl = np.asarray(frame.get('pred_labels', np.zeros(0)), np.int64).reshape(-1)
        gb = np.asarray(frame.get('gt_boxes', np.zeros((0, 7))), np.float64).reshape(-1, 7)
        gl = np.asarray(frame.get('gt_labels', np.zeros(0)), np.int64).reshape(-1)
        if not (pb.shape[0] == ps.shape[0] == pl.shape[0]):
            raise ValueError('pred_boxes, pred_scores and pred_labels differ in length')
        if gb.shape[0] != gl.shape[0]:
            raise ValueError('gt_boxes and gt_labels differ in length')
        diff, npts = frame.get('gt_difficulty'), frame.get('gt_num_points')
        keep, gdiff = prepare_gt_difficulty(
            None if diff is None else np.asarray(diff).reshape(-1),
            None if npts is None else np.asarray(npts).reshape(-1), num_boxes=gb.shape[0])
        gb, gl = gb[keep], gl[keep]
        for k, (cls, thr) in enumerate(zip(classes, thresholds)):
            pm, gm = pl == k, gl == k
            if not pm.any() and not gm.any():
                continue
            m = frame_measurements(pb[pm], ps[pm], gb[gm], gdiff[gm], thr, cutoffs, matcher)
            for key in ('tp', 'fp', 'fn', 'sum_ha'):
                acc[cls][key] += m[key]
    result: Dict = {}
    curves: Dict = {}
    for cls in classes:
        a = acc[cls]
        result[cls] = {}
        curves[cls] = dict(a)
        for li, lvl in enumerate(LEVELS):
            prec, prec_ha, rec = _pr_curves(a['tp'], a['fp'], a['fn'][li], a['sum_ha'])
            ap = compute_ap(prec, rec, recall_delta)
            aph = compute_ap(prec_ha, rec, recall_delta)
            result[cls][f'L{lvl}'] = (ap, aph)
            curves[cls][f'L{lvl}'] = dict(precision=prec, precision_ha=prec_ha, recall=rec)
    if mean_classes is None:
        mean_classes = [c for c in classes if c != 'Sign'] or classes
    result['mAP'], result['mAPH'] = {}, {}
    for lvl in LEVELS:
        key = f'L{lvl}'
        if mean_classes:
            result['mAP'][key] = float(np.mean([result[c][key][0] for c in mean_classes]))
            result['mAPH'][key] = float(np.mean([result[c][key][1] for c in mean_classes]))
        else:
            result['mAP'][key] = result['mAPH'][key] = 0.0
    if return_curves:
        result['curves'] = curves
    return result
