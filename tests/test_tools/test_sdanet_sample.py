"""SDANet's CPU sample config trains on data/pidray_sample/ and one ``tools/test.py`` run reports
bbox and segm AP of the easy, hard and hidden subsets, their mean (overall) and the pooled set."""
import os.path as osp
import re

import pytest

import mmattn  # noqa: F401
from mmattn.testing.runs import short_run_config
from mmattn.utils.runner import build_runner

from ._utils import ROOT, run_tool

pytestmark = pytest.mark.slow
CONFIG = osp.join(ROOT, 'configs/sdanet/sdanet_cascade-mask-rcnn_r18_fpn_sample-pidray.py')


def test_sample_trains_and_one_test_run_reports_every_subset(tmp_path):
    cfg = short_run_config(CONFIG, str(tmp_path), iters=4, num_train=8, validate=False)
    cfg.model.test_cfg.rcnn.score_thr = 0.0   # 4 iterations: keep the low-score detections
    for key in ('val_dataloader', 'test_dataloader'):   # a ConcatDataset: 2 images per subset
        cfg[key].dataset.pop('indices')
        for sub in cfg[key].dataset.datasets:
            sub.indices = 2
    runner = build_runner(cfg)
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 4 and all(v == v for v in losses)
    ckpt = osp.join(str(tmp_path), 'iter_4.pth')
    assert osp.isfile(ckpt)
    dumped = osp.join(str(tmp_path), 'short_config.py')
    cfg.dump(dumped)
    res = run_tool(['tools/test.py', dumped, ckpt, '--work-dir', str(tmp_path / 'test')],
                   timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for subset in ('easy', 'hard', 'hidden', 'overall', 'pooled'):
        for kind in ('bbox', 'segm'):
            assert re.search(rf'{subset}/coco/{kind}_mAP: -?\d', out), (subset, kind, out[-3000:])
    table = out[out.index('PIDray AP (IoU .50:.95)'):].splitlines()
    assert table[1].split() == ['subset', 'bbox', 'segm']
    assert [line.split()[0] for line in table[2:7]] == ['easy', 'hard', 'hidden', 'overall',
                                                        'pooled']
