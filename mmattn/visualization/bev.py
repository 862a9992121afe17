"""Bird's-eye-view rendering of a point cloud with ground-truth and predicted 3D boxes.

Uses matplotlib's object API with the Agg canvas directly, so it never touches the global pyplot
backend and works without a display.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional, Sequence, Union

import numpy as np

ArrayLike = Union[np.ndarray, 'torch.Tensor', Sequence]  # noqa: F821


def _to_numpy(x, name: str, min_cols: int) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, 'tensor'):            # mmdet3d BaseInstance3DBoxes / BasePoints
        x = x.tensor
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.reshape(0, min_cols)
    if x.ndim != 2 or x.shape[1] < min_cols:
        raise ValueError(f'{name} must have shape (N, >={min_cols}), got {x.shape}')
    return x


def box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """(M, >=7) boxes (x, y, z, l, w, h, yaw) -> (M, 4, 2) BEV corners, counter-clockwise,
    starting at the front-right corner (the first two are the front edge)."""
    x, y, l, w, yaw = boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], boxes[:, 6]
    local = np.array([[0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5]])
    dx = local[None, :, 0] * l[:, None]
    dy = local[None, :, 1] * w[:, None]
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack([x[:, None] + c * dx - s * dy, y[:, None] + s * dx + c * dy], -1)


def draw_bev(points: ArrayLike,
             pred_boxes: Optional[ArrayLike],
             gt_boxes: Optional[ArrayLike],
             out_file: str,
             point_cloud_range: Sequence[float],
             pred_scores: Optional[ArrayLike] = None,
             pred_labels: Optional[ArrayLike] = None,
             class_names: Optional[Sequence[str]] = None,
             score_thr: float = 0.0,
             dpi: int = 100,
             figsize: float = 8.0) -> str:
    """Draw a bird's-eye view PNG and return ``out_file``.

    Args:
        points: (N, >=3) points (x, y, z, ...), numpy, torch or mmdet3d points.
        pred_boxes: (M, >=7) predicted LiDAR boxes (x, y, z_bottom, l, w, h, yaw) or None;
            drawn red with a heading line and the score (and class name).
        gt_boxes: (K, >=7) ground-truth boxes or None; drawn green.
        out_file: the PNG path; its folder is created.
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max): the view and the height
            colour scale.
        pred_scores, pred_labels: (M,) per prediction, optional.
        class_names: names of the labels, optional.
        score_thr: predictions scoring below it are not drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pcr = [float(v) for v in point_cloud_range]
    if len(pcr) != 6:
        raise ValueError(f'point_cloud_range must have 6 values, got {point_cloud_range}')
    pts = _to_numpy(points, 'points', 3)
    preds = _to_numpy(pred_boxes, 'pred_boxes', 7)
    gts = _to_numpy(gt_boxes, 'gt_boxes', 7)
    scores = None if pred_scores is None else _to_numpy(
        np.asarray(pred_scores.detach().cpu() if hasattr(pred_scores, 'detach') else pred_scores,
                   dtype=np.float64).reshape(-1, 1), 'pred_scores', 1)[:, 0]
    labels = None if pred_labels is None else np.asarray(
        pred_labels.detach().cpu() if hasattr(pred_labels, 'detach') else pred_labels).reshape(-1)
    if preds is not None:
        keep = np.ones(len(preds), dtype=bool)
        if scores is not None:
            if len(scores) != len(preds):
                raise ValueError(f'{len(scores)} pred_scores for {len(preds)} pred_boxes')
            keep = scores >= score_thr
        if labels is not None and len(labels) != len(preds):
            raise ValueError(f'{len(labels)} pred_labels for {len(preds)} pred_boxes')

    fig = Figure(figsize=(figsize, figsize), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor('white')
    if pts is not None and len(pts):
        ax.scatter(pts[:, 0], pts[:, 1], c=np.clip(pts[:, 2], pcr[2], pcr[5]), cmap='viridis',
                   vmin=pcr[2], vmax=pcr[5], s=2.0, linewidths=0, marker='.')
    if gts is not None:
        for corners in box_corners_bev(gts):
            ax.fill(corners[:, 0], corners[:, 1], fill=False, edgecolor='limegreen', linewidth=1.5)
    if preds is not None:
        for i in np.flatnonzero(keep):
            box = preds[i]
            corners = box_corners_bev(box[None])[0]
            ax.fill(corners[:, 0], corners[:, 1], fill=False, edgecolor='red', linewidth=1.0)
            front = corners[:2].mean(0)
            ax.plot([box[0], front[0]], [box[1], front[1]], color='red', linewidth=1.0)
            text = []
            if labels is not None:
                lab = int(labels[i])
                text.append(class_names[lab] if class_names is not None
                            and 0 <= lab < len(class_names) else str(lab))
            if scores is not None:
                text.append(f'{scores[i]:.2f}')
            if text:
                ax.text(box[0], box[1], ' '.join(text), color='red', fontsize=6)
    ax.set_xlim(pcr[0], pcr[3])
    ax.set_ylim(pcr[1], pcr[4])
    ax.set_aspect('equal')
    ax.set_xlabel('x (m)')
    ax.set_ylabel('y (m)')
    fig.tight_layout()
    out_dir = osp.dirname(osp.abspath(out_file))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(out_file, facecolor='white')
    return out_file
