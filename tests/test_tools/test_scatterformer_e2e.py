"""ScatterFormer end to end on the bundled Waymo sample: a short run of the sample config (all 32
training frames, GT sampling, the one-cycle schedule over ITERS iterations) lowers the loss and
detects on the first 6 validation frames (non-zero L1 AP); tools/test.py evaluates with the Waymo
metric and draws BEV PNGs, tools/demo.py draws a point file, analyze_3d_boxes.py splits the AP."""
import glob
import os.path as osp

import cv2
import numpy as np
import pytest

import mmattn  # noqa: F401
from mmattn.testing.runs import one_cycle_schedule
from mmattn.utils.runner import build_runner

from ._utils import LIDAR_CONFIG, ROOT, data_options, iter_config, run_tool

pytestmark = pytest.mark.slow
ITERS = 240


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """ITERS iterations on the 32 training frames (batch 2, GT sampling and augmentation on, the
    sample config's one-cycle schedule compressed to ITERS), then validation on the first 6 val
    frames (one segment)."""
    work = str(tmp_path_factory.mktemp('scatterformer'))
    cfg = iter_config(LIDAR_CONFIG, work, ITERS, num_train=32, num_val=6, batch_size=2)
    cfg.param_scheduler = one_cycle_schedule(cfg.optim_wrapper.optimizer.lr, ITERS)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=ITERS)
    runner = build_runner(cfg)
    runner.train()
    losses = np.array(runner.message_hub.get_scalar('train/loss').data[0])
    metrics = {k: runner.message_hub.get_scalar(f'val/{k}').current()
               for k in ('Waymo/Car/L1 AP', 'Waymo/Pedestrian/L1 AP', 'Waymo/Cyclist/L1 AP')}
    return work, losses, metrics


def test_training_lowers_the_loss(trained):
    _, losses, _ = trained
    assert len(losses) == ITERS and np.isfinite(losses).all()
    first, last = losses[:4].mean(), losses[-4:].mean()
    assert last < 0.6 * first, f'loss went from {first:.3f} to {last:.3f}'


def test_short_run_detects_on_the_val_split(trained):
    """Non-zero AP on frames the model never saw (the cause of the old 0 AP and the long run's
    numbers: configs/scatterformer/README.md)."""
    _, _, metrics = trained
    # measured (2 threads, 2026-12-01, fifth session, the committed sample config): pedestrian L1
    # AP 0.523, cyclist 0.029, car 0.011 after 240 iterations on the 6 val frames (the model of the
    # first session: 0.456 / 0.027 / 0; after 120 iterations 0.159 alone, 0.042 inside the suite:
    # too close to the bound); the README's 1600-iteration runs: car 0.589 / 0.641 on 24 frames
    assert metrics['Waymo/Pedestrian/L1 AP'] > 0.1, metrics


def test_test_tool_reports_waymo_metrics_and_draws(trained, tmp_path):
    work, _, _ = trained
    show = str(tmp_path / 'show')
    res = run_tool(['tools/test.py', LIDAR_CONFIG, osp.join(work, f'iter_{ITERS}.pth'),
                    '--work-dir', str(tmp_path), '--show-dir', show, '--score-thr', '0.1',
                    '--cfg-options', *data_options(num_val=2)])
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    for key in ('Waymo/mAPH L2', 'Waymo/Car/L1 AP', 'Waymo/Cyclist/L2 APH'):
        assert key in out, out[-2000:]
    pngs = sorted(glob.glob(osp.join(show, '*.png')))
    assert len(pngs) == 2, pngs
    assert all(cv2.imread(p) is not None for p in pngs)


def _limegreen_pixels(png: str) -> int:
    img = cv2.imread(png).astype(int)  # BGR
    return int((np.abs(img - np.array([50, 205, 50])).max(-1) < 30).sum())


def test_demo_draws_bev_png_with_ground_truth(trained, tmp_path):
    work, _, _ = trained
    point_file = sorted(glob.glob(osp.join(
        ROOT, 'data/waymo_sample/kitti_format/training/velodyne/1*.bin')))[0]
    stem = osp.splitext(osp.basename(point_file))[0]
    counts = []
    for ann in (None, 'data/waymo_sample/kitti_format/waymo_infos_val.pkl'):
        out = str(tmp_path / ('gt' if ann else 'pred'))
        res = run_tool(['tools/demo.py', point_file, LIDAR_CONFIG, '--weights',
                        osp.join(work, f'iter_{ITERS}.pth'), '--out-dir', out,
                        '--pred-score-thr', '0.1'] + (['--ann-file', ann] if ann else []))
        assert res.returncode == 0, res.stderr[-3000:]
        img = cv2.imread(osp.join(out, stem + '.png'))
        assert img is not None and img.shape[0] > 200
        counts.append(_limegreen_pixels(osp.join(out, stem + '.png')))
    # the ground-truth boxes (limegreen outlines) appear only with --ann-file
    assert counts[1] > counts[0] + 50, counts


def test_analyze_3d_boxes_on_the_checkpoint(trained, tmp_path):
    """tools/analysis_tools/analyze_3d_boxes.py: AP as scored, with oracle ranking and with the
    rectifier swept, and the nearest-box errors, on the 6 val frames the fixture validated on."""
    import importlib.util
    work, _, _ = trained
    spec = importlib.util.spec_from_file_location(
        'analyze_3d_boxes', osp.join(ROOT, 'tools/analysis_tools/analyze_3d_boxes.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tool.main([LIDAR_CONFIG, osp.join(work, f'iter_{ITERS}.pth'), '--max-frames', '6',
                     '--alphas', '0', '1', '--work-dir', str(tmp_path),
                     '--cfg-options', 'test_dataloader.num_workers=0',
                     'test_dataloader.persistent_workers=False'])
    assert set(out['ap']) == {'as scored', 'oracle ranking', 'rectifier alpha 0',
                              'rectifier alpha 1'}
    for res in out['ap'].values():
        assert 0 <= res['Waymo/Pedestrian/L1 AP'] <= 1
    # the 240-iteration model finds pedestrians (see test_short_run_detects_on_the_val_split)
    assert out['ap']['oracle ranking']['Waymo/Pedestrian/L1 AP'] > 0
    assert out['errors']['Pedestrian']['n'] > 0
    assert set(out['errors']['Pedestrian']['fixed']) == {'xy', 'z', 'l', 'w', 'h', 'yaw'}


def test_demo_rejects_a_bad_point_file(tmp_path):
    bad = tmp_path / 'bad.bin'
    np.arange(7, dtype=np.float32).tofile(bad)
    res = run_tool(['tools/demo.py', str(bad), LIDAR_CONFIG, '--out-dir', str(tmp_path)])
    assert res.returncode != 0
    assert 'bad.bin' in res.stderr and 'multiple' in res.stderr, res.stderr[-1500:]


def test_demo_warns_on_empty_and_non_finite_point_files(tmp_path):
    empty, nans = tmp_path / 'empty.bin', tmp_path / 'nans.bin'
    empty.write_bytes(b'')
    points = np.fromfile(sorted(glob.glob(osp.join(
        ROOT, 'data/waymo_sample/kitti_format/training/velodyne/1*.bin')))[0],
        dtype=np.float32).reshape(-1, 6)[:200].copy()
    points[:5, 0] = np.nan
    points.tofile(nans)
    res = run_tool(['tools/demo.py', str(tmp_path), LIDAR_CONFIG, '--out-dir',
                    str(tmp_path / 'out')])
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'empty.bin: the point cloud is empty (0 points)' in res.stderr, res.stderr[-2000:]
    assert 'nans.bin: 5 of 200 points have NaN / inf values' in res.stderr, res.stderr[-2000:]
    assert osp.isfile(tmp_path / 'out' / 'empty.png') and osp.isfile(tmp_path / 'out' / 'nans.png')
