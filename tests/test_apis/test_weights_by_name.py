"""Models by name (``mmattn.apis``): a model-index name -> download -> SHA-256 check -> conversion
-> cached checkpoint -> a model that gives the official outputs; corrupted downloads, offline
machines, files dropped into the cache by hand, Google Drive links without gdown, and
``tools/demo.py IMAGE --model NAME``; mmseg and mmdet3d samples from config paths.

The published file is made like sail-sg's RetinaNet + PoolFormer-S12 checkpoint (mmdet 2.19,
``FORK_LAST3``: no ``backbone.norm0``): the official backbone weights of the
``poolformer_s12.dense`` fixture under ``backbone.``, neck / head weights of the model of the
sample config (with a 32-channel FPN and head, to keep the file small; classification bias 0 so
that there are detections), and mmdet 2.x's ``meta['CLASSES']``. A real HTTP server
(``http.server`` in a thread) serves it and counts the requests.
"""
import glob
import hashlib
import http.server
import io
import os
import os.path as osp
import runpy
import sys
import threading
from typing import Dict

import cv2
import pytest
import torch
import yaml

import mmattn
from mmattn.apis import (WeightsUnavailableError, cache_dir, find_model, inference, init_model,
                         load_model_index, resolve)
from mmattn.testing import load_fixture, max_rel_error, state_dict_from_fixture
from mmattn.utils.checkpoint import CheckpointError, get_family, load_file

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SAMPLE_CONFIG = osp.join(ROOT, 'configs/poolformer/retinanet_poolformer-s12_fpn_sample-coco.py')
NAME = 'retinanet_poolformer-s12_fpn_sample-coco'
CLASSES = ('circle', 'triangle', 'square', 'star', 'cross')
IMAGE = sorted(glob.glob(osp.join(ROOT, 'data/coco_sample/val2017/*.jpg')))[0]
LANDED = ('poolformer', 'biformer', 'agent_swin', 'slab_swin', 'scatterformer')
TOL = 1e-4


class Server:
    """``http.server`` in a thread serving ``files`` (``{'/path': bytes}``); ``hits`` counts the
    requests per path."""

    def __init__(self, files: Dict[str, bytes]) -> None:
        self.files, self.hits = files, {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):

            def do_GET(self):  # noqa: N802 - http.server's name
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.httpd.server_port}{path}'

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope='module')
def config(tmp_path_factory) -> str:
    """The sample RetinaNet + PoolFormer-S12 config with a 32-channel FPN and head."""
    path = tmp_path_factory.mktemp('config') / 'retinanet_poolformer-s12_fpn-32_sample-coco.py'
    path.write_text(f'_base_ = [{SAMPLE_CONFIG!r}]\n'
                    'model = dict(neck=dict(out_channels=32), bbox_head=dict(in_channels=32, '
                    'feat_channels=32, stacked_convs=1))\n')
    return str(path)


@pytest.fixture(scope='module')
def official(config):
    """``(bytes of the official-layout file, its state_dict, the dense fixture)``."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    mmattn.setup_openmmlab()
    init_default_scope('mmdet')
    fx = load_fixture('poolformer_s12.dense')
    torch.manual_seed(0)
    detector = MODELS.build(Config.fromfile(config).model)
    sd = {k: v for k, v in detector.state_dict().items() if not k.startswith('backbone.')}
    sd['bbox_head.retina_cls.bias'] = torch.zeros_like(sd['bbox_head.retina_cls.bias'])
    sd.update({'backbone.' + k: v for k, v in state_dict_from_fixture(fx).items()
               if not k.startswith('norm0.')})
    buf = io.BytesIO()
    torch.save({'state_dict': sd, 'meta': {'CLASSES': CLASSES, 'mmdet_version': '2.19.0'}}, buf)
    return buf.getvalue(), sd, fx


@pytest.fixture
def server(official):
    data = official[0]
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    srv = Server({'/retinanet_poolformer_s12.pth': data, '/corrupt.pth': bytes(bad)})
    yield srv
    srv.close()


def write_index(tmp_path, monkeypatch, config, **fields) -> None:
    """A model index of one entry ``NAME`` (``config``) with ``fields``; the cache in
    ``tmp_path/cache``."""
    entry = dict(Name=NAME, Config=config, **fields)
    (tmp_path / 'meta.yml').write_text(yaml.safe_dump({'Models': [entry]}))
    (tmp_path / 'model-index.yml').write_text(yaml.safe_dump({'Import': ['meta.yml']}))
    monkeypatch.setenv('MMATTN_MODEL_INDEX', str(tmp_path / 'model-index.yml'))
    monkeypatch.setenv('MMATTN_CACHE', str(tmp_path / 'cache'))


def cached_files(tmp_path):
    return sorted(os.listdir(tmp_path / 'cache' / 'checkpoints')) \
        if osp.isdir(tmp_path / 'cache' / 'checkpoints') else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_name_download_hash_convert_outputs_and_cache(tmp_path, monkeypatch, capfd, config,
                                                     official, server):
    data, official_sd, fx = official
    url = server.url('/retinanet_poolformer_s12.pth')
    write_index(tmp_path, monkeypatch, config, Weights=url, SHA256=sha(data),
                Converter='poolformer')

    im = init_model(NAME)
    assert server.hits == {'/retinanet_poolformer_s12.pth': 1}
    assert f'{NAME}.pth: 100%' in capfd.readouterr().err  # the progress bar
    assert im.checkpoint == osp.join(cache_dir(), NAME + '.mmattn.pth')
    assert cached_files(tmp_path) == [NAME + '.mmattn.pth', NAME + '.pth', NAME + '.pth.sha256']
    converted = load_file(im.checkpoint)
    assert converted['meta']['model'] == 'poolformer' and converted['meta']['prefix'] == 'backbone.'
    # the whole detector was converted: neck and head are the file's, backbone gives the fixture's
    own = im.model.state_dict()
    for k in ('neck.lateral_convs.0.conv.weight', 'bbox_head.retina_cls.weight'):
        assert torch.equal(own[k], official_sd[k]), k
    assert im.model.dataset_meta['classes'] == CLASSES  # mmdet 2.x meta carried over
    im.model.backbone.eval()
    with torch.no_grad():
        for size, x in fx['inputs'].items():
            err = max_rel_error(im.model.backbone(x), fx['outputs'][size][1:])
            assert err <= TOL, f'{size}: {err:.2e}'

    sample = inference(im, IMAGE)
    assert type(sample).__name__ == 'DetDataSample'
    pred = sample.pred_instances
    assert len(pred) > 0 and pred.bboxes.shape == (len(pred), 4)
    assert pred.labels.max() < len(CLASSES)
    samples = inference(im, [IMAGE, IMAGE])
    assert len(samples) == 2 and torch.equal(samples[0].pred_instances.scores,
                                             sample.pred_instances.scores)

    # cache reuse: no request, no conversion
    mtime = os.stat(im.checkpoint).st_mtime_ns
    again = resolve(NAME)
    assert again.checkpoint == im.checkpoint and again.config == config
    assert server.hits == {'/retinanet_poolformer_s12.pth': 1}
    assert os.stat(im.checkpoint).st_mtime_ns == mtime


def test_corrupted_download_fails_the_hash_and_is_not_cached(tmp_path, monkeypatch, config,
                                                             official, server):
    data = official[0]
    write_index(tmp_path, monkeypatch, config, Weights=server.url('/corrupt.pth'),
                SHA256=sha(data), Converter='poolformer')
    with pytest.raises(CheckpointError, match=f'expected {sha(data)}.*not cached'):
        resolve(NAME)
    assert server.hits == {'/corrupt.pth': 1}
    assert cached_files(tmp_path) == []
    # a second try downloads again (nothing bad was kept)
    with pytest.raises(CheckpointError, match='not cached'):
        resolve(NAME)
    assert server.hits == {'/corrupt.pth': 2}


def test_offline_error_names_url_and_cache_path_then_a_dropped_file_is_used(
        tmp_path, monkeypatch, config, official, server):
    data, _, _ = official
    url = server.url('/retinanet_poolformer_s12.pth')
    server.close()  # nothing listens there any more: an offline machine
    write_index(tmp_path, monkeypatch, config, Weights=url, SHA256=sha(data),
                Converter='poolformer')
    dst = osp.join(str(tmp_path / 'cache' / 'checkpoints'), NAME + '.pth')
    with pytest.raises(WeightsUnavailableError) as e:
        resolve(NAME)
    assert url in str(e.value) and dst in str(e.value) and sha(data) in str(e.value)
    assert cached_files(tmp_path) == []

    (tmp_path / 'cache' / 'checkpoints' / (NAME + '.pth')).write_bytes(data)  # by hand
    got = resolve(NAME)
    assert got.checkpoint == osp.join(cache_dir(), NAME + '.mmattn.pth')
    assert load_file(got.checkpoint)['meta']['source_sha256'] == sha(data)


def test_dropped_file_with_another_hash_is_refused(tmp_path, monkeypatch, config, official):
    data = official[0]
    write_index(tmp_path, monkeypatch, config, Weights='http://127.0.0.1:9/x.pth',
                SHA256=sha(b'x'), Converter='poolformer')
    os.makedirs(tmp_path / 'cache' / 'checkpoints')
    path = tmp_path / 'cache' / 'checkpoints' / (NAME + '.pth')
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f'{path} has SHA-256 {sha(data)}, expected'):
        resolve(NAME)


def test_google_drive_link_without_gdown(tmp_path, monkeypatch, config):
    url = 'https://drive.google.com/file/d/1GKx4jbxdO4ClagPXXt7CoomrV4pOpqul/view?usp=sharing'
    write_index(tmp_path, monkeypatch, config, Weights=url, SHA256='unknown',
                Converter='poolformer')
    monkeypatch.setitem(sys.modules, 'gdown', None)  # not installed
    with pytest.raises(WeightsUnavailableError) as e:
        resolve(NAME)
    msg = str(e.value)
    assert 'pip install gdown' in msg and url in msg
    assert osp.join(cache_dir(), NAME + '.pth') in msg


def test_entry_without_hash_or_converter_loads_the_file_as_is(tmp_path, monkeypatch, config,
                                                              official, server):
    """A metafile without ``SHA256`` / ``Converter`` (families that have not added them): the
    file is used as published; a config path resolves to its entry."""
    data = official[0]
    write_index(tmp_path, monkeypatch, config,
                Weights=server.url('/retinanet_poolformer_s12.pth'))
    entry = find_model(config)
    assert entry.name == NAME and entry.sha256 is None and entry.converter is None
    got = resolve(config)
    assert got.checkpoint == osp.join(cache_dir(), NAME + '.pth')
    assert open(got.checkpoint, 'rb').read() == data
    assert resolve(config, weights=got.checkpoint).checkpoint == got.checkpoint
    by_url = resolve(config, weights=server.url('/retinanet_poolformer_s12.pth'))
    assert by_url.checkpoint == osp.join(cache_dir(), 'retinanet_poolformer_s12.pth')
    assert server.hits == {'/retinanet_poolformer_s12.pth': 2}
    with pytest.raises(KeyError, match='close names: ' + NAME):
        resolve(NAME[:-2])


def test_landed_metafiles_say_hash_and_converter():
    index = load_model_index(osp.join(ROOT, 'model-index.yml'))
    with_weights = [e for e in index.values()
                    if any(f'configs/{f}/metafile.yml' in e.metafile for f in LANDED)
                    and e.weights]
    assert len(with_weights) == 14  # 11 PoolFormer, 3 Agent-Swin
    for e in with_weights:
        assert osp.isfile(e.config), e.config
        assert 'SHA256' in e.raw, e.name  # 64 hex digits or 'unknown' (checked when read)
        assert e.converter and get_family(e.converter).name == e.converter, e.name


@pytest.mark.slow
def test_demo_by_model_name(tmp_path, monkeypatch, config, official, server):
    """``tools/demo.py IMAGE --model NAME`` (in this process: its ``main``)."""
    data = official[0]
    write_index(tmp_path, monkeypatch, config,
                Weights=server.url('/retinanet_poolformer_s12.pth'), SHA256=sha(data),
                Converter='poolformer')
    out = tmp_path / 'out'
    monkeypatch.setattr(sys, 'argv', ['demo.py', IMAGE, '--model', NAME, '--out-dir', str(out)])
    runpy.run_path(osp.join(ROOT, 'tools/demo.py'), run_name='__main__')
    assert server.hits == {'/retinanet_poolformer_s12.pth': 1}
    png = cv2.imread(str(out / (osp.splitext(osp.basename(IMAGE))[0] + '.png')))
    assert png is not None and png.shape == cv2.imread(IMAGE).shape
    assert osp.isfile(osp.join(cache_dir(), NAME + '.mmattn.pth'))

    monkeypatch.setattr(sys, 'argv', ['demo.py', IMAGE, '--model', 'no-such-model'])
    with pytest.raises(SystemExit, match='--model no-such-model: .*neither a config file'):
        runpy.run_path(osp.join(ROOT, 'tools/demo.py'), run_name='__main__')


def test_inference_segmentor_and_lidar_detector():
    """Config paths without published weights (random initialisation): mmseg and mmdet3d data
    samples, one per input."""
    image = sorted(glob.glob(osp.join(ROOT, 'data/cityscapes_sample/leftImg8bit/val/*/*.png')))[0]
    im = init_model(osp.join(ROOT, 'configs/sample/fpn_r18_sample-cityscapes.py'))
    assert im.task == 'mmseg' and im.checkpoint is None
    sample = inference(im, image)
    assert type(sample).__name__ == 'SegDataSample'
    assert sample.pred_sem_seg.data.shape == (1, *cv2.imread(image).shape[:2])
    assert [type(s).__name__ for s in inference(im, [image, image])] == ['SegDataSample'] * 2

    points = sorted(glob.glob(osp.join(ROOT, 'data/waymo_sample/kitti_format/training/velodyne/'
                                             '*.bin')))[:2]
    samples = inference(osp.join(ROOT, 'configs/scatterformer/scatterformer_sample-waymo.py'),
                        points)
    assert [type(s).__name__ for s in samples] == ['Det3DDataSample'] * 2
    assert samples[0].pred_instances_3d.bboxes_3d.tensor.shape[1] == 7
