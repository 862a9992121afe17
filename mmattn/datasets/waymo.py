"""Waymo in mmdet3d 1.4's info layout, with what ScatterFormer's training and L1/L2 evaluation need.

Reads ``waymo_infos_{train,val}.pkl`` = ``dict(metainfo=..., data_list=[...])`` as written by
mmdet3d's ``tools/create_data.py waymo`` or by
``tools/dataset_converters/openpcdet_waymo2mmattn.py`` (which keeps NLZ points and the labeller's
difficulty). Per frame::

    lidar_points=dict(lidar_path='{a}{bbb}{ccc}.bin', num_pts_feats=6),
    instances=[dict(bbox_3d=[x, y, z_bottom, l, w, h, yaw], bbox_label_3d=0|1|2,
                    num_lidar_pts=int, difficulty=0|1|2 (optional)), ...]

Unlike ``mmdet3d.datasets.WaymoDataset`` (a ``KittiDataset``: camera-frame conversions, 2D boxes,
an import of the waymo tooling for evaluation), this is a plain, lidar-only ``Det3DDataset``:

* ``ann_info`` / ``eval_ann_info`` hold ``gt_bboxes_3d`` (``LiDARInstance3DBoxes``, bottom centre,
  origin (0.5, 0.5, 0)), ``gt_labels_3d`` and also ``difficulty`` and ``num_lidar_pts``
  (int64 arrays; -1 = unknown point count) for the L1/L2 metric;
* ``filter_empty_boxes`` (training only, default True) drops boxes with 0 points, like OpenPCDet's
  ``FILTER_EMPTY_BOXES_FOR_TRAIN``; ``filter_empty_gt`` keeps mmdet3d's meaning (training frames
  left without boxes are replaced by another frame);
* malformed info files raise :class:`WaymoInfoError` naming the file and the key / index; a
  missing point file or one whose size is not a multiple of ``num_pts_feats`` float32 values is
  reported, with its path, before the pipeline runs. An empty point file is valid.

Points are loaded by the pipeline, e.g. ScatterFormer's::

    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=6, use_dim=5,
         norm_intensity=True, norm_elongation=True)     # tanh on intensity and elongation
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Callable, List, Optional, Union

import numpy as np
from mmdet3d.datasets import Det3DDataset
from mmdet3d.structures import Box3DMode, LiDARInstance3DBoxes
from mmengine import print_log
from mmengine.fileio import load

from mmattn.registry import DATASETS


class WaymoInfoError(ValueError):
    """A malformed Waymo info file, or a point file that does not match it."""


@DATASETS.register_module()
class WaymoDataset(Det3DDataset):
    """Lidar-only Waymo dataset over mmdet3d 1.4 infos (see the module docstring).

    Args:
        data_root (str): dataset root, e.g. ``data/waymo/kitti_format``.
        ann_file (str): info file, relative to ``data_root``.
        data_prefix (dict): ``pts`` folder of the point files. Defaults to
            ``dict(pts='training/velodyne')``.
        pipeline (list): data pipeline.
        modality (dict): only ``use_lidar=True`` is supported.
        box_type_3d (str): 'LiDAR'.
        filter_empty_gt (bool): training: replace frames without boxes (after the pipeline).
        filter_empty_boxes (bool): training: drop boxes whose ``num_lidar_pts`` is 0.
        test_mode (bool): test / validation mode.
        load_interval (int): keep every ``load_interval``-th frame.
        check_points_file (bool): check the point file's existence and size before the pipeline
            (local files only).
    """
    METAINFO = {
        'classes': ('Car', 'Pedestrian', 'Cyclist'),
        'palette': [(0, 120, 255), (0, 232, 157), (255, 205, 85)],
    }
    BOX_DIM = 7

    def __init__(self,
                 data_root: Optional[str] = None,
                 ann_file: str = '',
                 data_prefix: dict = dict(pts='training/velodyne'),
                 pipeline: List[Union[dict, Callable]] = [],
                 modality: dict = dict(use_lidar=True),
                 box_type_3d: str = 'LiDAR',
                 filter_empty_gt: bool = True,
                 filter_empty_boxes: bool = True,
                 test_mode: bool = False,
                 load_interval: int = 1,
                 check_points_file: bool = True,
                 **kwargs) -> None:
        if load_interval < 1:
            raise ValueError(f'load_interval must be >= 1, got {load_interval}')
        self.filter_empty_boxes = filter_empty_boxes
        self.load_interval = load_interval
        self.check_points_file = check_points_file
        super().__init__(
            data_root=data_root,
            ann_file=ann_file,
            data_prefix=data_prefix,
            pipeline=pipeline,
            modality=modality,
            box_type_3d=box_type_3d,
            filter_empty_gt=filter_empty_gt,
            test_mode=test_mode,
            **kwargs)

    # ---------------------------------------------------------------------------- info file

    def load_data_list(self) -> List[dict]:
        """Load and validate the info file; parse each frame."""
        ann_file = self.ann_file
        if not osp.isfile(ann_file):
            raise FileNotFoundError(f'Waymo info file not found: {ann_file}')
        try:
            annotations = load(ann_file)
        except Exception as e:   # unpicklable / truncated
            raise WaymoInfoError(f'{ann_file}: cannot be read as an info file ({e!r})') from e
        if not isinstance(annotations, dict):
            raise WaymoInfoError(f'{ann_file}: expected dict(metainfo=..., data_list=[...]), '
                                 f'got {type(annotations).__name__}')
        for key, kind in (('metainfo', dict), ('data_list', list)):
            if key not in annotations:
                raise WaymoInfoError(f'{ann_file}: missing key {key!r} (mmdet3d 1.x infos hold '
                                     'dict(metainfo=..., data_list=[...]))')
            if not isinstance(annotations[key], kind):
                raise WaymoInfoError(f'{ann_file}: {key!r} must be a {kind.__name__}, got '
                                     f'{type(annotations[key]).__name__}')
        raw_data_list = annotations['data_list']
        for i, info in enumerate(raw_data_list):
            self._check_info(info, i)
        for k, v in annotations['metainfo'].items():
            self._metainfo.setdefault(k, v)
        raw_data_list = raw_data_list[::self.load_interval]
        if self.load_interval > 1:
            print_log(f'Waymo: keeping every {self.load_interval}-th frame '
                      f'({len(raw_data_list)} frames)', logger='current')
        return [self.parse_data_info(info) for info in raw_data_list]

    def _check_info(self, info, i: int) -> None:
        where = f'{self.ann_file}: data_list[{i}]'
        if not isinstance(info, dict):
            raise WaymoInfoError(f'{where} must be a dict, got {type(info).__name__}')
        lidar = info.get('lidar_points')
        if not isinstance(lidar, dict) or 'lidar_path' not in lidar:
            raise WaymoInfoError(f"{where}: missing 'lidar_points' / 'lidar_points.lidar_path'")
        nfeat = lidar.get('num_pts_feats', 6)
        if not isinstance(nfeat, (int, np.integer)) or nfeat < 3:
            raise WaymoInfoError(f"{where}: 'lidar_points.num_pts_feats' must be an int >= 3, "
                                 f'got {nfeat!r}')
        instances = info.get('instances', [])
        if not isinstance(instances, list):
            raise WaymoInfoError(f"{where}: 'instances' must be a list")
        for j, inst in enumerate(instances):
            at = f'{where}.instances[{j}]'
            if not isinstance(inst, dict):
                raise WaymoInfoError(f'{at} must be a dict, got {type(inst).__name__}')
            for key in ('bbox_3d', 'bbox_label_3d'):
                if key not in inst:
                    raise WaymoInfoError(f'{at}: missing key {key!r}')
            try:
                box = np.asarray(inst['bbox_3d'], dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise WaymoInfoError(f"{at}: 'bbox_3d' is not numeric") from e
            if box.shape != (self.BOX_DIM, ):
                raise WaymoInfoError(
                    f"{at}: 'bbox_3d' must have {self.BOX_DIM} values [x, y, z_bottom, l, w, h, "
                    f'yaw], got shape {box.shape}')
            if not np.isfinite(box).all():
                raise WaymoInfoError(f"{at}: 'bbox_3d' has non-finite values")
            label = inst['bbox_label_3d']
            if not isinstance(label, (int, np.integer)) or label not in self.label_mapping:
                raise WaymoInfoError(f"{at}: 'bbox_label_3d' {label!r} is not one of "
                                     f'{sorted(self.label_mapping)}')

    def parse_data_info(self, info: dict) -> dict:
        info = super().parse_data_info(info)
        info['num_pts_feats'] = int(info['lidar_points'].get('num_pts_feats', 6))
        return info

    # ---------------------------------------------------------------------------- annotations

    def parse_ann_info(self, info: dict) -> dict:
        """``instances`` -> gt_bboxes_3d, gt_labels_3d, difficulty, num_lidar_pts (filtered)."""
        instances = info.get('instances', [])
        n = len(instances)
        boxes = np.array([inst['bbox_3d'] for inst in instances],
                         dtype=np.float32).reshape(n, self.BOX_DIM)
        labels = np.array([self.label_mapping[int(inst['bbox_label_3d'])] for inst in instances],
                          dtype=np.int64).reshape(n)
        difficulty = np.array([int(inst.get('difficulty', 0)) for inst in instances],
                              dtype=np.int64).reshape(n)
        num_pts = np.array([int(inst.get('num_lidar_pts', -1)) for inst in instances],
                           dtype=np.int64).reshape(n)
        keep = labels > -1
        if self.filter_empty_boxes and not self.test_mode:
            keep &= num_pts != 0
        labels = labels[keep]
        for label in labels:
            self.num_ins_per_cat[label] += 1
        gt_bboxes_3d = LiDARInstance3DBoxes(boxes[keep], box_dim=self.BOX_DIM,
                                            origin=(0.5, 0.5, 0))
        if self.box_mode_3d != Box3DMode.LIDAR:
            gt_bboxes_3d = gt_bboxes_3d.convert_to(self.box_mode_3d)
        return dict(
            gt_bboxes_3d=gt_bboxes_3d,
            gt_labels_3d=labels,
            difficulty=difficulty[keep],
            num_lidar_pts=num_pts[keep])

    # ---------------------------------------------------------------------------- points

    def _check_points(self, info: dict) -> None:
        path = info['lidar_points']['lidar_path']
        if self.backend_args is not None or '://' in str(path):
            return
        if not osp.isfile(path):
            raise FileNotFoundError(f'Waymo point file not found: {path} (sample_idx '
                                    f"{info.get('sample_idx')}, from {self.ann_file})")
        nfeat = info['num_pts_feats']
        size = os.path.getsize(path)
        if size % (4 * nfeat):
            raise WaymoInfoError(
                f'{path}: {size} bytes is not a whole number of float32 points with '
                f'{nfeat} features (expected a multiple of {4 * nfeat} bytes)')

    def prepare_data(self, index: int) -> Union[dict, None]:
        if self.check_points_file:
            self._check_points(self.get_data_info(index))
        return super().prepare_data(index)
