"""Test-time drawing of detections to lossless PNG files."""
import os.path as osp
from typing import Optional, Sequence

import mmcv
from mmdet.engine.hooks import DetVisualizationHook
from mmdet.structures import DetDataSample
from mmengine.fileio import get
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
