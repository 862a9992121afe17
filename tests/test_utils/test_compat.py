"""Each compatibility patch in mmattn.utils.compat, and proof that the unpatched code fails."""
import pickle
import sys

import numpy as np
import pytest
import torch

import mmattn  # noqa: F401
from mmattn.utils import compat


def test_patches_applied_once():
    assert compat.apply_all() == ['checkpoint_weights_only', 'importlib_package_lookup',
                                  'cpu_distributed', 'numpy_in1d']
    assert compat.apply_all() == compat.APPLIED  # idempotent


def _runner_like_checkpoint(path):
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(1.5)
    torch.save({'meta': {'epoch': 1, 'seed': np.int64(3)},
                'state_dict': {'w': torch.ones(2)},
                'message_hub': {'log_scalars': {'loss': buf}, 'runtime_info': {
                    'arr': np.arange(3)}}}, path)


def test_checkpoint_loads_with_history_buffer(tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader
    path = str(tmp_path / 'epoch_1.pth')
    _runner_like_checkpoint(path)
    # Unpatched: torch >= 2.6 defaults to weights_only=True and rejects mmengine's own objects.
    with pytest.raises(pickle.UnpicklingError):
        compat.ORIGINALS['mmengine.runner.checkpoint.load_from_local'](path, 'cpu')
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert ckpt['message_hub']['log_scalars']['loss'].current() == 1.5
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))


def test_checkpoint_errors_name_the_file(tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        CheckpointLoader.load_checkpoint(missing)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_text('not a checkpoint')
    with pytest.raises(RuntimeError, match='garbage.pth'):
        CheckpointLoader.load_checkpoint(str(garbage))


@pytest.fixture
def no_pkg_resources(monkeypatch):
    """Make ``import pkg_resources`` fail, as with setuptools >= 82."""
    monkeypatch.setitem(sys.modules, 'pkg_resources', None)


def test_package_lookup_without_pkg_resources(no_pkg_resources):
    with pytest.raises(ImportError):
        compat.ORIGINALS['mmengine.utils.package_utils.is_installed']('mmdet')
    assert compat.is_installed('mmdet')
    assert compat.is_installed('mmsegmentation') and compat.is_installed('mmseg')
    assert not compat.is_installed('surely-not-a-package-xyz')
    assert compat.package2module('mmsegmentation') == 'mmseg'
    assert compat.get_installed_path('mmsegmentation').endswith('mmseg')


@pytest.mark.parametrize('base,key', [
    ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'RetinaNet'),
    ('mmseg::_base_/models/fpn_r50.py', 'EncoderDecoder'),
])
def test_external_base_configs_without_pkg_resources(tmp_path, no_pkg_resources, base, key):
    from mmengine.config import Config
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(f"_base_ = ['{base}']\n")
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.model.type == key


def test_mmattn_scope_is_known_to_mmengine():
    from mmengine.config.utils import MODULE2PACKAGE
    assert MODULE2PACKAGE['mmattn'] == 'mmattn'


def test_numpy_in1d_restored(monkeypatch):
    """cityscapesscripts calls np.in1d (removed in numpy 2.4) in its pixel-accuracy scores."""
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval
    a = np.array([[1, 5], [7, 2]])
    assert np.in1d(a, [2, 7]).tolist() == [False, False, True, True]
    assert np.in1d(a, [2, 7], invert=True).tolist() == [True, True, False, False]
    monkeypatch.delattr(np, 'in1d')
    with pytest.raises(AttributeError):
        cs_eval.np.in1d(a, [2])


@pytest.mark.skipif(torch.cuda.is_available(), reason='the patch only acts without a GPU')
def test_cpu_distributed_init(monkeypatch):
    """mmengine's pytorch launcher selects a CUDA device unconditionally; patched, gloo works."""
    import mmengine.dist.utils as dist_utils
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
