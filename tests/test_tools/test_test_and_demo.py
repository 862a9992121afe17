"""tools/test.py evaluates a checkpoint and draws PNGs; tools/demo.py draws PNGs for images."""
import glob
import os.path as osp

import cv2
import pytest

import mmattn  # noqa: F401
from mmattn.utils.runner import build_runner

from ._utils import DET_CONFIG, ROOT, SEG_CONFIG, data_options, iter_config, run_tool

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('config,metric', [(DET_CONFIG, 'coco/bbox_mAP'), (SEG_CONFIG, 'mIoU')],
                         ids=['det', 'seg'])
def test_test_tool_evaluates_and_draws(tmp_path, config, metric):
    work = str(tmp_path / 'work')
    build_runner(iter_config(config, work, 1)).train()
    show = str(tmp_path / 'show')
    res = run_tool(['tools/test.py', config, osp.join(work, 'iter_1.pth'), '--work-dir', work,
                    '--show-dir', show, '--cfg-options', *data_options(num_val=2)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert metric in res.stdout + res.stderr
    pngs = glob.glob(osp.join(show, '**', '*.png'), recursive=True)
    assert len(pngs) == 2, pngs
    assert all(cv2.imread(p) is not None for p in pngs)


@pytest.mark.parametrize('config,image', [
    (DET_CONFIG, 'data/coco_sample/val2017'),
    (SEG_CONFIG, None),
], ids=['det', 'seg'])
def test_demo_draws_pngs(tmp_path, config, image):
    if image is None:
        image = sorted(glob.glob(osp.join(ROOT, 'data/cityscapes_sample/leftImg8bit/val/*/*.png')))[0]
    else:
        image = sorted(glob.glob(osp.join(ROOT, image, '*.jpg')))[0]
    res = run_tool(['tools/demo.py', image, config, '--out-dir', str(tmp_path)])
    assert res.returncode == 0, res.stderr[-3000:]
    out = osp.join(tmp_path, osp.splitext(osp.basename(image))[0] + '.png')
    img = cv2.imread(out)
    src = cv2.imread(image)
    assert img is not None and img.shape[0] == src.shape[0] and img.shape[1] >= src.shape[1]


def test_demo_rejects_missing_image(tmp_path):
    res = run_tool(['tools/demo.py', str(tmp_path / 'nope.jpg'), DET_CONFIG])
    assert res.returncode != 0 and 'input image not found' in res.stderr
