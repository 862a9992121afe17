"""The main job: the smoke config really learns (its training loss falls on the sample data);
`make demo`'s config trains an mmattn backbone; run_demo's model report and inference step."""
import importlib.util
import os.path as osp

import cv2
import numpy as np
import pytest

import mmattn  # noqa: F401
from mmattn.utils.runner import build_runner, load_config

from ._utils import DET_CONFIG, ROOT, iter_config

DEMO_CONFIG = osp.join(ROOT, 'configs/sample/fcos_poolformer-s12-half_fpn_sample-coco.py')

pytestmark = pytest.mark.slow


def test_main_job_training_lowers_the_loss(tmp_path):
    cfg = iter_config(DET_CONFIG, str(tmp_path), 60, num_train=240, batch_size=4)
    cfg.optim_wrapper.optimizer.lr = 2e-3
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1000)
    runner = build_runner(cfg)
    runner.train()
    losses = np.array(runner.message_hub.get_scalar('train/loss').data[0])
    assert len(losses) == 60
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert np.isfinite(losses).all()
    assert last < 0.8 * first, f'loss went from {first:.3f} to {last:.3f}'


# ---------------------------------------------------------------- `make demo`: the mmattn detector
def _run_demo_module():
    """``tools/run_demo.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location('run_demo', osp.join(ROOT, 'tools/run_demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def demo_one_iteration(tmp_path_factory):
    """The demo config trained for one iteration on 4 images: (runner, checkpoint)."""
    work = str(tmp_path_factory.mktemp('demo_iter'))
    runner = build_runner(iter_config(DEMO_CONFIG, work, 1))
    runner.train()
    return runner, osp.join(work, 'iter_1.pth')


def test_make_demo_runs_the_mmattn_config():
    with open(osp.join(ROOT, 'Makefile')) as f:
        lines = [line for line in f if line.startswith('DEMO_CONFIG')]
    assert lines == [f'DEMO_CONFIG ?= {osp.relpath(DEMO_CONFIG, ROOT)}\n'], lines
    assert _run_demo_module().DEFAULT_CONFIG == osp.relpath(DEMO_CONFIG, ROOT)


def test_demo_config_trains_an_mmattn_backbone(demo_one_iteration):
    from mmattn.models.backbones.poolformer import PoolFormer
    runner, ckpt = demo_one_iteration
    model = runner.model
    assert type(model.backbone) is PoolFormer
    assert model.backbone.depths == [2, 2, 6, 2]
    assert model.backbone.embed_dims == [32, 64, 160, 256]
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 1 and np.isfinite(losses).all()
    assert osp.isfile(ckpt)
    info = _run_demo_module().describe_backbone(model, runner.cfg.model.backbone)
    assert info['type'] == 'mmattn.PoolFormer' and info['mmattn'] is True
    assert info['arch'] == dict(depths=[2, 2, 6, 2], embed_dims=[32, 64, 160, 256])
    assert info['embed_dims'] == [32, 64, 160, 256]
    assert 0 < info['backbone_params_m'] < info['detector_params_m']


def test_run_demo_records_the_op_backends():
    import torch

    from mmattn.ops.bra import bra_attention
    run_demo = _run_demo_module()
    q = torch.randn(1, 4, 3, 8)
    r_idx = torch.zeros(1, 4, 2, dtype=torch.long)
    with run_demo.record_op_backends() as used:
        bra_attention(q, q, q, r_idx, 2, 0.5, backend='torch')
        bra_attention(q, q, q, r_idx, 2, 0.5, backend='reference')
    assert used == {'bra_attention': {'torch', 'reference'}}
    with run_demo.record_op_backends() as used:
        pass
    assert used == {}


def test_run_demo_inference_step_writes_three_pngs(demo_one_iteration, tmp_path):
    _, ckpt = demo_one_iteration
    run_demo = _run_demo_module()
    cfg = load_config(DEMO_CONFIG)
    images = run_demo.val_images(cfg, 3)
    assert len(set(images)) == 3
    pngs = run_demo.run_inference(DEMO_CONFIG, ckpt, images, str(tmp_path / 'inference'))
    assert [osp.basename(p) for p in pngs] == [
        osp.splitext(osp.basename(i))[0] + '.png' for i in images]
    for png, image in zip(pngs, images):
        drawn, src = cv2.imread(png), cv2.imread(image)
        assert drawn is not None and drawn.shape[0] == src.shape[0]
        assert drawn.shape[1] >= src.shape[1]
