"""Pure numpy/scipy evaluation functions."""
from .waymo_ap import (DEFAULT_IOU_THRESHOLDS, OFFICIAL_SCORE_CUTOFFS, bev_intersection_area,
                       box3d_iou, compute_ap, frame_measurements, heading_accuracy, match_frame,
                       prepare_gt_difficulty, waymo_ap)

__all__ = [
    'DEFAULT_IOU_THRESHOLDS', 'OFFICIAL_SCORE_CUTOFFS', 'bev_intersection_area', 'box3d_iou',
    'compute_ap', 'frame_measurements', 'heading_accuracy', 'match_frame',
    'prepare_gt_difficulty', 'waymo_ap'
]
