"""Test-time drawing of detections to lossless PNG files."""
import os.path as osp
from typing import Optional, Sequence

import mmcv
from mmdet.engine.hooks import DetVisualizationHook
from mmdet.structures import DetDataSample
from mmengine.fileio import get
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmengine.utils import mkdir_or_exist

from mmattn.registry import HOOKS


@HOOKS.register_module()
class PNGDetVisualizationHook(DetVisualizationHook):
    """mmdet's ``DetVisualizationHook`` that writes each test image as ``<image stem>.png``
    (ground truth left, predictions right) into ``test_out_dir``.

    ``test_out_dir`` may be absolute; a relative one goes under ``<work_dir>/<timestamp>/`` (once,
    not re-joined on every iteration as in mmdet 3.3).
    """

    def _out_dir(self, runner: Runner) -> Optional[str]:
        if self.test_out_dir is None:
            return None
        if not osp.isabs(self.test_out_dir):
            self.test_out_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
        mkdir_or_exist(self.test_out_dir)
        return self.test_out_dir

    def after_test_iter(self, runner: Runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence[DetDataSample]) -> None:
        if self.draw is False:
            return
        out_dir = self._out_dir(runner)
        for data_sample in outputs:
            self._test_index += 1
            img_path = data_sample.img_path
            img = mmcv.imfrombytes(get(img_path, backend_args=self.backend_args),
                                   channel_order='rgb')
            name = osp.splitext(osp.basename(img_path))[0] + '.png'
            self._visualizer.add_datasample(
                name if self.show else 'test_img',
                img,
                data_sample=data_sample,
                show=self.show,
                wait_time=self.wait_time,
                pred_score_thr=self.score_thr,
                out_file=osp.join(out_dir, name) if out_dir else None,
                step=self._test_index)


@HOOKS.register_module()
class BEVVisualizationHook(Hook):
    """Draws each test sample's point cloud, predicted (red) and ground-truth (green) 3D boxes in
    bird's-eye view to ``<test_out_dir>/<point file stem>.png`` (matplotlib; no open3d).

    Args:
        draw: draw at all (``tools/test.py --show-dir`` switches it on).
        test_out_dir: output folder; a relative one goes under ``<work_dir>/<timestamp>/``.
        score_thr: predictions scoring lower are not drawn.
        point_cloud_range: view extent; by default the model's voxel encoder's range.
    """

    def __init__(self, draw: bool = False, test_out_dir: Optional[str] = None,
                 score_thr: float = 0.3, point_cloud_range: Optional[Sequence[float]] = None,
                 **kwargs):
        self.draw, self.test_out_dir, self.score_thr = draw, test_out_dir, score_thr
        self.point_cloud_range = point_cloud_range

    def after_test_iter(self, runner: Runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence) -> None:
        if not self.draw or self.test_out_dir is None:
            return
        from mmattn.visualization import draw_bev
        if not osp.isabs(self.test_out_dir):
            self.test_out_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
        mkdir_or_exist(self.test_out_dir)
        pcr = self.point_cloud_range
        if pcr is None:  # the voxel encoder's (mmdet3d slots), else a points-in backbone's VFE
            vfe = getattr(runner.model, 'voxel_encoder', None) or getattr(
                getattr(runner.model, 'backbone', None), 'vfe', None)
            pcr = getattr(vfe, 'point_cloud_range', None)
        classes = (runner.model.dataset_meta or {}).get('classes') if hasattr(
            runner.model, 'dataset_meta') else None
        points = data_batch['inputs']['points']
        for pts, sample in zip(points, outputs):
            pred = sample.pred_instances_3d
            gt = sample.get('eval_ann_info', {}) or {}
            name = osp.splitext(osp.basename(sample.lidar_path))[0] + '.png'
            draw_bev(pts, pred.bboxes_3d, gt.get('gt_bboxes_3d'), osp.join(self.test_out_dir, name),
                     point_cloud_range=pcr if pcr is not None else [-80, -80, -5, 80, 80, 5],
                     pred_scores=pred.scores_3d, pred_labels=pred.labels_3d, class_names=classes,
                     score_thr=self.score_thr)
