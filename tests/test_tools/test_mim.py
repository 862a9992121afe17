"""openmim's convention on the built wheel: ``mim search mmattn`` and ``mim download mmattn
--config NAME`` read the package data ``mmattn/.mim/`` (configs and ``model-index.yml``, added by
``setup.py``'s ``build_py`` at build time).

The wheel is built from this checkout and installed with ``pip install --target`` into a folder
put first on ``PYTHONPATH`` (so ``mmattn`` and its metadata come from the wheel, the rest of the
stack from this environment). mim 0.3.9 looks for the package data next to the installed
distribution, which an editable (PEP 660) install does not have: the wheel is what users get.
Downloads go through an HTTP(S) proxy on a closed local port, so the machine is offline for mim
whatever its network.
"""
import json
import os
import os.path as osp
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        subprocess.run([sys.executable, '-c', 'import mim'], capture_output=True).returncode != 0,
        reason='openmim is not installed (pinned in tools/setup_env.sh)'),
]


def _model_index() -> dict:
    """Name -> metafile entry, for every model that model-index.yml imports."""
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    models = {}
    for path in index['Import']:
        for model in yaml.safe_load((ROOT / path).read_text())['Models']:
            models[model['Name']] = model
    return models


@pytest.fixture(scope='module')
def wheel_site(tmp_path_factory) -> Path:
    """A folder holding the installed wheel (``mmattn/`` and its ``dist-info``)."""
    tmp = tmp_path_factory.mktemp('mim')
    res = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                          '-q', '-w', str(tmp / 'wheel'), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel, ) = (tmp / 'wheel').glob('mmattn-*.whl')
    site = tmp / 'site'
    res = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target',
                          str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (site / 'mmattn' / '.mim' / 'model-index.yml').is_file()
    assert not (ROOT / 'mmattn' / '.mim' / 'configs').is_dir() or \
        (ROOT / 'mmattn' / '.mim' / 'configs').is_symlink()  # no copies in the source tree
    return site


@pytest.fixture
def offline_env(wheel_site):
    """Environment for the ``mim`` subprocess: the wheel first on the path, proxies on a port
    that refuses connections (bound, not listening)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    proxy = f'http://127.0.0.1:{sock.getsockname()[1]}'
    env = {k: v for k, v in os.environ.items() if k.lower() not in ('no_proxy', 'pythonpath')}
    env.update(PYTHONPATH=str(wheel_site), HTTP_PROXY=proxy, HTTPS_PROXY=proxy,
               http_proxy=proxy, https_proxy=proxy, OMP_NUM_THREADS='1')
    yield env
    sock.close()


def _mim(args, env, cwd):
    return subprocess.run([sys.executable, '-m', 'mim', *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_mim_search_lists_every_model_index_entry(offline_env, wheel_site, tmp_path):
    out = tmp_path / 'search.json'
    res = _mim(['search', 'mmattn', '--field', 'config', 'weight', '--json', str(out)],
               offline_env, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(out.read_text())  # {field: {name: value}}
    index = _model_index()
    assert set(found['config']) == set(index) and len(index) >= 40
    for name, entry in index.items():
        assert found['config'][name] == entry['Config'], name
        assert (wheel_site / 'mmattn' / '.mim' / entry['Config']).is_file(), name
        assert found['weight'].get(name) == entry.get('Weights'), name


def test_mim_download_offline_fails_naming_the_url(offline_env, tmp_path):
    name = 'mask-rcnn_agent-swin-t_fpn_ms-crop-1x_coco'
    url = _model_index()[name]['Weights']
    assert url.startswith('https://cloud.tsinghua.edu.cn/')
    dest = tmp_path / 'dest'
    dest.mkdir()
    res = _mim(['download', 'mmattn', '--config', name, '--dest', str(dest)], offline_env, tmp_path)
    assert res.returncode != 0
    # requests' error names host and path; mim 0.3.9 then ends in its own TypeError
    assert "host='cloud.tsinghua.edu.cn'" in res.stderr and '/f/258e208469084e6abf26/?dl=1' in \
        res.stderr, res.stderr[-3000:]
    assert list(dest.iterdir()) == []  # no config dumped, no partial checkpoint


def test_mim_download_with_file_dropped_dumps_the_config(offline_env, tmp_path):
    """mim skips the download when ``--dest`` already holds a file named after the URL's last
    segment, then writes the resolved config ``NAME.py``."""
    from mmengine.config import Config
    name = 'retinanet_poolformer-s12_fpn_1x_coco'
    entry = _model_index()[name]
    dest = tmp_path / 'dest'
    dest.mkdir()
    dropped = dest / entry['Weights'].split('/')[-1]
    dropped.write_bytes(b'not read by mim')
    res = _mim(['download', 'mmattn', '--config', name, '--dest', str(dest)], offline_env, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f'{dropped.name} exists in' in res.stdout and f'Successfully dumped {name}.py' in \
        res.stdout, res.stdout
    dumped = Config.fromfile(str(dest / f'{name}.py'))
    original = Config.fromfile(str(ROOT / entry['Config']))
    assert dumped.model.to_dict() == original.model.to_dict()
    assert dumped.model.backbone.type == 'mmattn.PoolFormer'
    assert osp.getsize(dropped) == len(b'not read by mim')
