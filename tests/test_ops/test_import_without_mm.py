"""Issue 19: ``mmattn.ops`` runs with torch + triton alone, and the backbones the GPU kit needs
(BiFormer, ScatterFormer) import and run with mmengine alone (no mmcv, no OpenCV); ``import
mmattn`` still sets up the OpenMMLab stack when that is imported.

Each check runs in a fresh interpreter whose ``sys.meta_path`` starts with a finder that makes the
named packages unimportable (as on a bare GPU machine), then asserts that none of them was loaded.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCKER = r'''
import importlib.abc, json, sys
BLOCKED = set(sys.argv[1].split(','))


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f'No module named {name!r} (blocked)', name=name)


sys.meta_path.insert(0, Blocked())
'''

OPS = BLOCKER + r'''
import torch
import mmattn.ops
from mmattn.ops import dispatch
from mmattn.ops.bra import HAS_TRITON, bra_attention, topk_routing
from mmattn.ops.sla import cu_seqlens_from_counts, scattered_linear_attention

q = torch.randn(1, 4, 6, 32, requires_grad=True)
r_idx = topk_routing(q.detach().mean(2), q.detach().mean(2), 2, 0.5)
bra_attention(q, q, q, r_idx, 2, 0.5).sum().backward()
x = torch.randn(9, 2, 16, requires_grad=True)
cu_seqlens = cu_seqlens_from_counts(torch.tensor([4, 0, 5]))
scattered_linear_attention(x, x, x, cu_seqlens).sum().backward()
print(json.dumps(dict(loaded=sorted({m.split('.')[0] for m in sys.modules} & BLOCKED),
                      triton=HAS_TRITON,
                      grads=bool(q.grad.abs().sum() > 0 and x.grad is not None))))
'''

BACKBONES = BLOCKER + r'''
import torch
from mmattn.models.backbones.biformer import BiFormer
from mmattn.models.backbones.scatterformer import ScatterFormerBackbone

model = BiFormer(arch=dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 256, 512)), n_win=2,
                 topks=(1, 2, 4, -2), backend='torch')
outs = model(torch.randn(1, 3, 64, 64))
sf = ScatterFormerBackbone(point_cloud_range=[-6.4, -6.4, -2.0, 6.4, 6.4, 4.0],
                           voxel_size=[0.32, 0.32, 0.1875], dim=32, num_heads=2, depths=(1, 1),
                           win_size=4, pool_heads=2, sla_backend='torch')
pts = torch.cat([torch.rand(200, 3) * 10 - 5, torch.rand(200, 2)], 1)
bev = sf([pts])
print(json.dumps(dict(loaded=sorted({m.split('.')[0] for m in sys.modules} & BLOCKED),
                      shapes=[list(o.shape) for o in outs] + [list(bev.shape)],
                      stem_norm=type(model.downsample_layers[0][1]).__name__)))
'''


def run(script: str, blocked) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    env.pop('TRITON_INTERPRET', None)
    proc = subprocess.run([sys.executable, '-c', script, ','.join(blocked)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_blocker_blocks():
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, '-c', BLOCKER + 'import mmengine', 'mmengine'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "No module named 'mmengine' (blocked)" in proc.stderr


def test_ops_import_with_torch_and_triton_only():
    out = run(OPS, ['mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmdet3d', 'timm', 'einops', 'scipy'])
    assert out['loaded'] == [] and out['grads']


@pytest.mark.slow
def test_backbones_import_with_mmengine_alone():
    """BiFormer (its stem norm built by torch without mmcv) and ScatterFormer, forward."""
    out = run(BACKBONES, ['mmcv', 'mmdet', 'mmseg', 'mmdet3d', 'cv2', 'matplotlib'])
    assert out['loaded'] == []
    assert out['stem_norm'] == 'BatchNorm2d'
    assert out['shapes'][:4] == [[1, 64, 16, 16], [1, 128, 8, 8], [1, 256, 4, 4], [1, 512, 2, 2]]
    assert out['shapes'][4][:2] == [1, 32]


HOOKS = r'''
import json, sys
if sys.argv[1] == 'runner-first':
    import mmengine.runner
import mmattn
import mmattn.ops.bra
state = [('mmengine' in sys.modules, mmattn._versions_checked, mmattn._patched)]
import mmengine
state.append(('mmengine' in sys.modules, mmattn._versions_checked, mmattn._patched))
import mmengine.runner.checkpoint as ckpt
from mmattn.utils import checkpoint as safe
state.append(('mmengine.runner' in sys.modules, mmattn._versions_checked, mmattn._patched,
              ckpt.CheckpointLoader._schemes.get('') is safe._load_local))
print(json.dumps(state))
'''


@pytest.mark.slow
def test_mm_setup_runs_when_mmengine_is_imported():
    """``import mmattn`` imports no mmengine; ``import mmengine`` then runs the version check
    and ``import mmengine.runner`` the compatibility patches (safe checkpoint loading included)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    after_runner = [True, True, True, True]
    for order, expected in (
            ('mmattn-first', [[False, False, False], [True, True, False], after_runner]),
            ('runner-first', [[True, True, True], [True, True, True], after_runner])):
        proc = subprocess.run([sys.executable, '-c', HOOKS, order], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected, order


NO_TRITON = BLOCKER + r'''
import torch
from mmattn.ops import bra, sla
q = torch.randn(1, 4, 6, 32)
r_idx = bra.topk_routing(q.mean(2), q.mean(2), 2, 0.5)
auto = bra.bra_attention(q, q, q, r_idx, 2, 0.5).shape == (1, 4, 6, 32)
try:
    bra.bra_attention(q, q, q, r_idx, 2, 0.5, backend='triton')
    message = None
except ValueError as err:
    message = str(err)
print(json.dumps(dict(has_triton=[bra.HAS_TRITON, sla.HAS_TRITON], auto=auto, message=message)))
'''


def test_without_triton_auto_uses_torch():
    out = run(NO_TRITON, ['triton'])
    assert out['has_triton'] == [False, False] and out['auto']
    assert "backend='triton' cannot run" in out['message'] and 'not installed' in out['message']


BROKEN_KERNEL = r'''
import importlib.abc, importlib.machinery, importlib, sys


class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Our kernel module, with a bug: an ImportError raised while it executes."""

    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1] + '.triton':
            return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("cannot import name 'missing_helper' from 'triton.language' (bug)")


sys.meta_path.insert(0, Broken())
importlib.import_module(sys.argv[1])
'''


@pytest.mark.slow
@pytest.mark.parametrize('op', ['bra', 'sla'])
def test_a_broken_kernel_module_is_not_no_triton(op):
    """Only a missing ``triton`` package means "no Triton": an ImportError raised inside our own
    kernel module propagates (instead of silently falling back to the torch backend)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, '-c', BROKEN_KERNEL, f'mmattn.ops.{op}'], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ImportError: cannot import name 'missing_helper'" in proc.stderr
