"""The built wheel, installed into a fresh venv that sees only mmattn's core and ``seg`` extra
packages (and what they depend on), builds PoolFormer in an mmseg config.

The fresh venv takes the pinned stack from this environment instead of downloading it: a folder
of links to the installed files of exactly the distributions in the dependency closure of
``mmattn[seg]`` (read from their metadata), added by a ``.pth``; mmdet, mmdet3d ... are absent.
"""
import importlib.metadata
import os
import os.path as osp
import re
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
pytestmark = pytest.mark.slow

PROBE = r'''
import sys
import mmattn
import mmattn.models  # noqa: F401
assert 'site-packages' in mmattn.__file__ and {root!r} not in mmattn.__file__, mmattn.__file__
for m in ('mmdet', 'mmdet3d'):
    try:
        __import__(m)
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError(f'{{m}} is importable in the seg-only venv')
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS
cfg = Config.fromfile({config!r})
cfg.model.backbone.init_cfg = None
with DefaultScope.overwrite_default_scope('mmseg'):
    model = MODELS.build(cfg.model).eval()
assert type(model.backbone).__name__ == 'PoolFormer', type(model.backbone)
with torch.no_grad():
    out = model(torch.zeros(1, 3, 64, 128), mode='tensor')
assert tuple(out.shape) == (1, 19, 16, 32), tuple(out.shape)
assert 'mmdet' not in sys.modules and 'mmdet3d' not in sys.modules
print('SEG OK')
'''


def _closure(requirements, extras=()):
    """Names of the installed distributions ``requirements`` need, transitively (markers of this
    interpreter; requested ``extras`` of the first level)."""
    from packaging.requirements import Requirement
    seen, todo = set(), [(r, set(extras)) for r in requirements]
    while todo:
        req, req_extras = todo.pop()
        req = Requirement(req) if isinstance(req, str) else req
        if req.marker is not None and not any(
                req.marker.evaluate({'extra': e}) for e in (req_extras or {''})):
            continue
        name = re.sub(r'[-_.]+', '-', req.name).lower()
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [(r, set(req.extras)) for r in (dist.requires or [])]
    return seen


def _top_level(dist) -> set:
    """The site-packages entries (package folders, module files, ``.libs``) a distribution
    installed, from its RECORD."""
    names = set()
    for f in dist.files or []:
        top = f.parts[0]
        if not top.startswith('.') and not top.endswith(('.dist-info', '.pth', '.data')) \
                and top != '__pycache__':
            names.add(top)
    return names


def test_wheel_with_seg_extra_builds_poolformer_in_mmseg(tmp_path):
    wheel_dir = tmp_path / 'wheel'
    res = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                          '-w', str(wheel_dir), ROOT], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel, ) = wheel_dir.glob('mmattn-*.whl')
    with zipfile.ZipFile(wheel) as zf:
        tops = {n.split('/')[0] for n in zf.namelist()}
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith('/METADATA'))).decode()
    assert 'kernels' not in tops and 'mmattn' in tops, tops
    requires = [line.split(':', 1)[1].strip() for line in metadata.splitlines()
                if line.startswith('Requires-Dist:')]
    for extra in ('det', 'seg', '3d', 'kernels'):
        assert f'Provides-Extra: {extra}' in metadata
    assert any(r.startswith('timm') for r in requires)

    # what mmattn[seg] needs, transitively, from this environment; nothing else is visible
    from packaging.requirements import Requirement
    wanted = [Requirement(r) for r in requires]
    core = [r for r in wanted if r.marker is None]
    seg = [r for r in wanted if r.marker is not None and r.marker.evaluate({'extra': 'seg'})]
    keep = _closure(core + seg, extras=('seg', ))
    assert {'mmsegmentation', 'mmengine', 'mmcv', 'timm', 'torch'} <= keep, keep
    assert 'mmdet' not in keep and 'mmdet3d' not in keep, keep
    keep |= {'setuptools'}  # pkg_resources: mmengine's lookup of mmseg:: bases
    site_packages = sysconfig.get_paths()['purelib']
    stack = tmp_path / 'stack'
    stack.mkdir()
    linked = set()
    for dist in importlib.metadata.distributions():
        name = re.sub(r'[-_.]+', '-', dist.metadata['Name']).lower()
        if name not in keep or osp.dirname(str(dist._path)) != site_packages:
            continue
        for top in _top_level(dist) | {osp.basename(str(dist._path))}:
            if top not in linked and osp.exists(osp.join(site_packages, top)):
                os.symlink(osp.join(site_packages, top), stack / top)
                linked.add(top)
    assert {'mmseg', 'mmengine', 'mmcv', 'timm', 'torch'} <= linked
    assert not {'mmdet', 'mmdet3d', 'mmattn'} & linked

    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True,
                   timeout=300)
    py = str(venv / 'bin' / 'python')
    site = subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(osp.join(site, 'seg_stack.pth'), 'w') as f:
        f.write(str(stack) + '\n')
    # this environment's pip installs the wheel into the fresh venv's site-packages
    res = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index',
                          '--target', site, str(wheel)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]

    config = osp.join(ROOT, 'configs/poolformer/fpn_poolformer-s12_4xb2-80k_cityscapes-512x1024.py')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env['OMP_NUM_THREADS'] = '1'
    res = subprocess.run([py, '-c', PROBE.format(root=ROOT, config=config)], cwd=str(tmp_path),
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and 'SEG OK' in res.stdout, res.stderr[-3000:]
