"""``mmattn.WaymoMetric``: TensorFlow-free Waymo 3D AP/APH (LEVEL_1, LEVEL_2).

Consumes mmdet3d 1.4 data samples and evaluates with
:func:`mmattn.evaluation.functional.waymo_ap` (official semantics, see its docstring).

Per sample it reads:

* ``pred_instances_3d``: ``bboxes_3d`` (``LiDARInstance3DBoxes``, bottom-centre z: converted
  to centre z via ``.gravity_center``), ``scores_3d``, ``labels_3d``;
* ``eval_ann_info``: ``gt_bboxes_3d`` (``LiDARInstance3DBoxes`` or an (M, 7) array with
  bottom-centre z), ``gt_labels_3d`` and the optional per-instance ``difficulty`` (Waymo
  ``detection_difficulty_level``) and ``num_lidar_pts``.

Yaw is used as the Waymo heading (both counter-clockwise from +x in the vehicle frame),
l/w/h as length/width/height.

Usage in a config::

    val_evaluator = dict(type='mmattn.WaymoMetric')
"""
from __future__ import annotations

import os
import os.path as osp
import re
import subprocess
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from mmattn.registry import METRICS

from ..functional.waymo_ap import prepare_gt_difficulty, waymo_ap

# Waymo label.proto Label.Type values.
_WAYMO_TYPE = {'Vehicle': 1, 'Car': 1, 'Pedestrian': 2, 'Sign': 3, 'Cyclist': 4}
_WAYMO_TYPE_NAME = {1: 'VEHICLE', 2: 'PEDESTRIAN', 3: 'SIGN', 4: 'CYCLIST'}


def _to_numpy(x) -> np.ndarray:
    if x is None:
        return None
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _boxes_to_center_z(boxes) -> np.ndarray:
    """mmdet3d boxes (bottom-centre z) -> (N, 7) [x, y, z_center, l, w, h, yaw] float64."""
    if boxes is None:
        return np.zeros((0, 7), dtype=np.float64)
    if hasattr(boxes, 'gravity_center'):  # BaseInstance3DBoxes
        tensor = _to_numpy(boxes.tensor).astype(np.float64).reshape(-1, boxes.tensor.shape[-1])
        centre = _to_numpy(boxes.gravity_center).astype(np.float64).reshape(-1, 3)
        out = tensor[:, :7].copy()
        out[:, :3] = centre
        return out
    arr = _to_numpy(boxes).astype(np.float64)
    arr = arr.reshape(-1, arr.shape[-1]) if arr.size else np.zeros((0, 7))
    out = arr[:, :7].copy()
    out[:, 2] += out[:, 5] * 0.5  # bottom-centre -> centre, as LiDARInstance3DBoxes does
    return out


def _get(obj, key, default=None):
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default) if hasattr(obj, key) else default


@METRICS.register_module()
class WaymoMetric(BaseMetric):
    """Waymo 3D detection AP/APH at LEVEL_1/LEVEL_2, without TensorFlow.

    Args:
        iou_thresholds: per-class-name overrides of the official thresholds
            (Vehicle/Car 0.7, Pedestrian 0.5, Cyclist 0.5).
        matcher: ``'hungarian'`` (official) or ``'score_first'``.
        official_bin: optional path to the official ``compute_detection_metrics_main``
            binary. When given, predictions and GT are also written as
            ``metrics_pb2.Objects`` protos (needs the ``waymo_open_dataset`` package, e.g.
            ``pip install --no-deps waymo-open-dataset-tf-2-12-0 protobuf``), the binary is
            run and its AP/APH are returned under ``official/...`` keys.
        cross_check: compare the official numbers with ours and raise if any differs by more
            than ``cross_check_tol``. Needs ``official_bin``.
        cross_check_tol: tolerance of ``cross_check``.
        collect_device, prefix, collect_dir: see :class:`mmengine.evaluator.BaseMetric`.
    """
    default_prefix: Optional[str] = 'Waymo'

    def __init__(self,
                 iou_thresholds: Optional[Dict[str, float]] = None,
                 matcher: str = 'hungarian',
                 official_bin: Optional[str] = None,
                 cross_check: bool = False,
                 cross_check_tol: float = 1e-3,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.iou_thresholds = iou_thresholds
        self.matcher = matcher
        self.official_bin = official_bin
        self.cross_check = cross_check
        self.cross_check_tol = cross_check_tol
        if cross_check and official_bin is None:
            raise ValueError('cross_check=True needs official_bin (the path to the official '
                             'compute_detection_metrics_main binary)')
        if official_bin is not None:
            try:
                from waymo_open_dataset import label_pb2  # noqa: F401
                from waymo_open_dataset.protos import metrics_pb2  # noqa: F401
            except ImportError as e:
                raise ImportError(
                    'WaymoMetric(official_bin=...) / cross_check=True need the official '
                    '`waymo_open_dataset` protos, which are not importable here: install them '
                    'with `pip install --no-deps waymo-open-dataset-tf-2-12-0 protobuf` '
                    '(TensorFlow is not needed for the protos). The TF-free metric itself '
                    'does not need them: leave official_bin=None.') from e
            if not osp.isfile(official_bin):
                raise FileNotFoundError(f'official_bin {official_bin!r} does not exist')

    # ------------------------------------------------------------------ process
    def process(self, data_batch, data_samples: Sequence) -> None:
        for sample in data_samples:
            pred = _get(sample, 'pred_instances_3d')
            pred_boxes = _boxes_to_center_z(_get(pred, 'bboxes_3d'))
            scores = _to_numpy(_get(pred, 'scores_3d'))
            labels = _to_numpy(_get(pred, 'labels_3d'))
            scores = (np.zeros(0, np.float32) if scores is None else
                      scores.astype(np.float32).reshape(-1))
            labels = (np.zeros(0, np.int64) if labels is None else
                      labels.astype(np.int64).reshape(-1))
            ann = _get(sample, 'eval_ann_info')
            if ann is None:
                raise KeyError('WaymoMetric needs data_sample["eval_ann_info"] with the ground '
                               'truth (gt_bboxes_3d, gt_labels_3d)')
            gt_boxes = _boxes_to_center_z(_get(ann, 'gt_bboxes_3d'))
            gt_labels = _to_numpy(_get(ann, 'gt_labels_3d'))
            gt_labels = (np.zeros(0, np.int64) if gt_labels is None else
                         gt_labels.astype(np.int64).reshape(-1))
            difficulty = _to_numpy(_get(ann, 'difficulty'))
            num_pts = _to_numpy(_get(ann, 'num_lidar_pts'))
            frame = dict(
                sample_idx=_get(sample, 'sample_idx', len(self.results)),
                pred_boxes=pred_boxes,
                pred_scores=scores,
                pred_labels=labels,
                gt_boxes=gt_boxes,
                gt_labels=gt_labels)
            if difficulty is not None:
                frame['gt_difficulty'] = difficulty.astype(np.int64).reshape(-1)
            if num_pts is not None:
                frame['gt_num_points'] = num_pts.astype(np.int64).reshape(-1)
            self.results.append(frame)

    # ------------------------------------------------------------------ compute
    def _classes(self) -> List[str]:
        meta = self.dataset_meta or {}
        classes = meta.get('classes')
        if not classes:
            raise ValueError("WaymoMetric needs dataset_meta['classes'], e.g. "
                             "('Car', 'Pedestrian', 'Cyclist')")
        return list(classes)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        classes = self._classes()
        res = waymo_ap(results, classes, iou_thresholds=self.iou_thresholds,
                       matcher=self.matcher)
        metrics: Dict[str, float] = {}
        for cls in classes:
            for lvl in ('L1', 'L2'):
                ap, aph = res[cls][lvl]
                metrics[f'{cls}/{lvl} AP'] = float(ap)
                metrics[f'{cls}/{lvl} APH'] = float(aph)
        for lvl in ('L1', 'L2'):
            metrics[f'mAP {lvl}'] = float(res['mAP'][lvl])
            metrics[f'mAPH {lvl}'] = float(res['mAPH'][lvl])
        logger.info('\n' + self.format_table(res, classes))
        if self.official_bin is not None:
            official = self._run_official(results, classes)
            metrics.update({f'official/{k}': v for k, v in official.items()})
            if self.cross_check:
                bad = [(k, metrics[k], v) for k, v in official.items()
                       if k in metrics and abs(metrics[k] - v) > self.cross_check_tol]
                if bad:
                    raise AssertionError(f'WaymoMetric differs from the official evaluator: '
                                         f'{bad}')
                logger.info(f'WaymoMetric cross-check passed ({len(official)} values)')
        return metrics

    @staticmethod
    def format_table(res: dict, classes: Sequence[str]) -> str:
        rows = [('Class', 'L1 AP', 'L1 APH', 'L2 AP', 'L2 APH')]
        for cls in classes:
            rows.append((cls, *(f'{v:.4f}' for lvl in ('L1', 'L2') for v in res[cls][lvl])))
        rows.append(('mean', f"{res['mAP']['L1']:.4f}", f"{res['mAPH']['L1']:.4f}",
                     f"{res['mAP']['L2']:.4f}", f"{res['mAPH']['L2']:.4f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        line = '+'.join('-' * (w + 2) for w in widths)
        out = [line]
        for i, r in enumerate(rows):
            out.append('|'.join(f' {c:<{w}} ' for c, w in zip(r, widths)))
            if i in (0, len(rows) - 2):
                out.append(line)
        out.append(line)
        return '\n'.join(out)

    # ------------------------------------------------------------------ official
    def _run_official(self, results: list, classes: Sequence[str]) -> Dict[str, float]:
        """Write protos, run ``compute_detection_metrics_main`` and parse its output."""
        from waymo_open_dataset import label_pb2
        from waymo_open_dataset.protos import metrics_pb2

        def objects(is_gt: bool):
            objs = metrics_pb2.Objects()
            for fi, fr in enumerate(results):
                keep = np.ones(len(fr['gt_labels']), dtype=bool)
                if is_gt:
                    boxes, labels = fr['gt_boxes'], fr['gt_labels']
                    scores = np.ones(len(labels), np.float32)
                    keep, diff = prepare_gt_difficulty(fr.get('gt_difficulty'),
                                                       fr.get('gt_num_points'),
                                                       num_boxes=len(labels))
                    boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
                else:
                    boxes, labels, scores = fr['pred_boxes'], fr['pred_labels'], fr['pred_scores']
                for j in range(len(labels)):
                    if not 0 <= labels[j] < len(classes):
                        continue
                    o = metrics_pb2.Object()
                    o.context_name = str(fr.get('sample_idx', fi))
                    o.frame_timestamp_micros = fi
                    b = label_pb2.Label.Box()
                    (b.center_x, b.center_y, b.center_z, b.length, b.width, b.height,
                     b.heading) = (float(v) for v in boxes[j][:7])
                    o.object.box.CopyFrom(b)
                    o.object.type = _WAYMO_TYPE[classes[labels[j]]]
                    o.object.id = f'{fi}_{j}'
                    o.score = float(scores[j])
                    if is_gt:
                        o.object.detection_difficulty_level = int(diff[j])
                    objs.objects.append(o)
            return objs

        with tempfile.TemporaryDirectory() as tmp:
            pd_path, gt_path = osp.join(tmp, 'pred.bin'), osp.join(tmp, 'gt.bin')
            for path, is_gt in ((pd_path, False), (gt_path, True)):
                with open(path, 'wb') as f:
                    f.write(objects(is_gt).SerializeToString())
            out = subprocess.run([self.official_bin, pd_path, gt_path], capture_output=True,
                                 text=True, check=True, env=dict(os.environ)).stdout
        parsed: Dict[str, float] = {}
        names = {_WAYMO_TYPE[c]: c for c in classes if c in _WAYMO_TYPE}
        pat = re.compile(r'OBJECT_TYPE_TYPE_(\w+?)_LEVEL_(\d): \[mAP ([\d.eE+-]+)\] '
                         r'\[mAPH ([\d.eE+-]+)\]')
        for m in pat.finditer(out):
            type_id = {v: k for k, v in _WAYMO_TYPE_NAME.items()}.get(m.group(1))
            if type_id in names:
                cls = names[type_id]
                parsed[f'{cls}/L{m.group(2)} AP'] = float(m.group(3))
                parsed[f'{cls}/L{m.group(2)} APH'] = float(m.group(4))
        return parsed
