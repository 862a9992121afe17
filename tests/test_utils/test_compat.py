"""mmattn.utils.compat: each patch applies only when its target is broken, logs once, and is shown
both ways (the unpatched code really fails, the patched code works); numpy is left alone."""
import copy
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

import mmattn  # noqa: F401
from mmattn.utils import compat

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_patches_are_probed_once():
    applied = compat.apply_all()
    assert set(applied) <= {'cpu_distributed', 'cityscapes_in1d', 'onecycle_state'}
    assert compat.apply_all() == applied == compat.APPLIED  # idempotent
    # on this stack (no GPU, numpy 2.4, mmengine 0.10.7) every target is broken
    assert ('cpu_distributed' in applied) == compat.cpu_distributed_needed()
    assert ('cityscapes_in1d' in applied) == (getattr(np, 'in1d', None) is None)
    assert 'onecycle_state' in applied


@pytest.mark.slow
def test_each_applied_patch_is_logged_once():
    code = ('import mmattn, mmengine\nfrom mmattn.utils import compat\n'
            'compat.apply_all(); compat.apply_all()\nprint("APPLIED", compat.APPLIED)')
    res = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    for name in compat.APPLIED:
        assert out.count(f"applied {name!r}") == 1, out


def test_numpy_namespace_is_untouched():
    assert getattr(np, 'in1d', None) is not compat.in1d
    if 'cityscapes_in1d' in compat.APPLIED:
        assert not hasattr(np, 'in1d')


def _label_png(path, array):
    from PIL import Image
    Image.fromarray(array.astype(np.uint8)).save(path)
    return str(path)


@pytest.mark.skipif(hasattr(np, 'in1d'), reason='this numpy still has in1d: nothing to patch')
def test_cityscapes_pixel_accuracy(tmp_path, monkeypatch):
    """cityscapesscripts' evaluatePair (what mmseg's CityscapesMetric runs) with the pixel
    accuracy switched on, as mmseg does: fails on plain numpy 2.4, works patched."""
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval
    mmattn.setup_openmmlab()  # as importing mmengine.runner does (this test may run alone)
    assert 'cityscapes_in1d' in compat.APPLIED
    gt = np.full((4, 6), 7)  # road
    gt[0, :] = 0  # unlabeled: ignored in eval
    pred = gt.copy()
    pred[0, :2] = 7
    pred[1, :3] = 8  # sidewalk
    gt_file = _label_png(tmp_path / 'a_gtFine_labelIds.png', gt)
    pred_file = _label_png(tmp_path / 'a_pred.png', pred)
    args = copy.copy(cs_eval.args)
    args.evalInstLevelScore, args.evalPixelAccuracy, args.quiet = False, True, True

    def evaluate():
        stats = {}
        cs_eval.evaluatePair(pred_file, gt_file, cs_eval.generateMatrix(args),
                             cs_eval.generateInstanceStats(args), stats, args)
        return stats[pred_file]

    stats = evaluate()
    # cityscapesscripts' definition (invert=True: its "not ignored" pixels are the ignored ones)
    evaluated = [label.id for label in cs_eval.labels if label.id >= 0 and not label.ignoreInEval]
    mask = np.isin(gt, evaluated, invert=True)
    assert stats['nbNotIgnoredPixels'] == np.count_nonzero(mask) == 6
    assert stats['nbCorrectPixels'] == np.count_nonzero(mask & (pred != gt)) == 2
    monkeypatch.setattr(cs_eval, 'np', np)  # unpatched
    with pytest.raises(AttributeError, match='in1d'):
        evaluate()


@pytest.mark.skipif(hasattr(np, 'in1d'), reason='this numpy still has in1d: nothing to patch')
def test_cityscapes_instance_level_module_is_patched_too():
    import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cs_inst
    mmattn.setup_openmmlab()  # as importing mmengine.runner does (this test may run alone)
    assert 'cityscapes_in1d' in compat.APPLIED
    a = np.array([[1, 5], [7, 2]])
    assert cs_inst.np.in1d(a, [2, 7]).tolist() == [False, False, True, True]
    assert cs_inst.np.in1d(a, [2, 7], invert=True).tolist() == [True, True, False, False]
    assert cs_inst.np.isin is np.isin  # the rest is numpy's


def test_mmengine_package_lookup_needs_no_patch():
    """The pinned setuptools (< 81) still ships pkg_resources: mmengine's own lookup works and
    ``mmdet::`` / ``mmseg::`` bases load, so mmattn does not replace it."""
    from mmengine.config import Config
    from mmengine.utils import is_installed
    from mmengine.utils.package_utils import get_installed_path
    assert is_installed('mmdet') and is_installed('mmsegmentation')
    assert get_installed_path('mmsegmentation').endswith('mmseg')
    assert 'importlib_package_lookup' not in compat.APPLIED
    cfg = Config.fromfile(osp.join(ROOT, 'configs/sample/fcos_r18_fpn_sample-coco.py'))
    assert cfg.model.type == 'FCOS'


@pytest.mark.skipif(torch.cuda.is_available(), reason='the patch only acts without a GPU')
def test_cpu_distributed_init(monkeypatch):
    """mmengine's pytorch launcher selects a CUDA device unconditionally; patched, gloo works."""
    import mmengine.dist.utils as dist_utils
    assert 'cpu_distributed' in compat.APPLIED
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', '29531')
    with pytest.raises(RuntimeError, match='NVIDIA driver|CUDA|cuda'):
        compat.ORIGINALS['mmengine.dist.utils._init_dist_pytorch']('gloo')
    with pytest.raises(RuntimeError, match='gloo'):
        dist_utils._init_dist_pytorch('nccl')
    dist_utils.init_dist('pytorch', backend='gloo')
    try:
        assert torch.distributed.get_backend() == 'gloo'
        assert torch.distributed.get_world_size() == 1
    finally:
        torch.distributed.destroy_process_group()


def test_onecycle_scheduler_state_loads_with_weights_only(tmp_path):
    """A one-cycle scheduler's state (in every checkpoint of a ScatterFormer run): unpatched it
    pickles the scheduler object, which mmattn's weights_only loader refuses; patched it is plain
    values, loads, and the restored scheduler continues with the same learning rates."""
    from mmengine.optim.scheduler.param_scheduler import OneCycleParamScheduler

    from mmattn.utils.checkpoint import CheckpointError, load_file

    def scheduler():
        opt = torch.optim.AdamW([torch.zeros(2, requires_grad=True)], lr=1e-3)
        return opt, OneCycleParamScheduler(opt, 'lr', eta_max=6e-3, total_steps=20,
                                           anneal_strategy='cos')

    assert 'onecycle_state' in compat.APPLIED
    opt, sched = scheduler()
    for _ in range(5):
        opt.step()
        sched.step()
    old = compat.ORIGINALS['mmengine.optim.OneCycleParamScheduler.state_dict'](sched)
    torch.save({'param_schedulers': [old]}, tmp_path / 'old.pth')
    with pytest.raises(CheckpointError, match='OneCycleParamScheduler'):
        load_file(str(tmp_path / 'old.pth'))
    torch.save({'param_schedulers': [sched.state_dict()]}, tmp_path / 'new.pth')
    state = load_file(str(tmp_path / 'new.pth'))['param_schedulers'][0]
    opt2, sched2 = scheduler()
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    for _ in range(5):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert opt2.param_groups[0]['lr'] == opt.param_groups[0]['lr']
