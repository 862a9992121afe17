"""BiFormer checkpoints: official classifier and detection/segmentation files load with no manual
step (``init_cfg`` Pretrained) and offline (``tools/model_converters/convert.py``), giving
exactly the official weights; wrong files fail with one error naming the file and keys.

The official files are fabricated in tmp files with the official containers and key layouts:
``{'model': sd, 'optimizer': ..., 'epoch': ...}`` (ImageNet release, layout of the
``biformer_tiny.cls`` fixture) and ``{'state_dict': {'backbone.*', 'neck.*', ...}, 'meta': ...}``
(mmdet/mmseg checkpoint of a detector built on ``BiFormer_mm``, layout of ``biformer_tiny.dense``).
"""
import os.path as osp
import runpy
import subprocess
import sys

import pytest
import torch

import mmattn  # noqa: F401
from mmattn.models.backbones.biformer import BiFormer
from mmattn.registry import MODELS
from mmattn.testing import load_fixture, state_dict_from_fixture
from mmattn.utils.checkpoint import CheckpointError

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
convert_main = runpy.run_path(osp.join(REPO, 'tools', 'model_converters', 'convert.py'))['main']
ALIAS = osp.join(REPO, 'tools', 'model_converters', 'biformer2mmattn.py')


@pytest.fixture(scope='module')
def official_cls():
    return state_dict_from_fixture(load_fixture('biformer_tiny.cls'))


@pytest.fixture(scope='module')
def official_dense():
    return state_dict_from_fixture(load_fixture('biformer_tiny.dense'))


def save_cls(sd, path):
    torch.save({'model': dict(sd), 'optimizer': {'state': {}}, 'epoch': 299,
                'args': 'biformer_tiny'}, path)
    return str(path)


def save_det(sd, path, with_module=False):
    pre = 'module.backbone.' if with_module else 'backbone.'
    state = {pre + k: v for k, v in sd.items()}
    state.update({'neck.lateral_convs.0.conv.weight': torch.zeros(256, 64, 1, 1),
                  'bbox_head.retina_cls.weight': torch.zeros(720, 256, 3, 3)})
    torch.save({'state_dict': state, 'meta': {'epoch': 12}}, path)
    return str(path)


def build_pretrained(path, **init):
    model = MODELS.build(dict(type='mmattn.BiFormer', arch='tiny', n_win=16,
                              out_indices=(0, 1, 2, 3),
                              init_cfg=dict(type='Pretrained', checkpoint=path, **init)))
    model.init_weights()
    return model


def assert_equal_weights(model, official, skip_prefix=None):
    own = model.state_dict()
    for k, v in official.items():
        if k.startswith(('head.', 'norm.')):
            assert k not in own
            continue
        assert torch.equal(own[k], v), k
    extra = [k for k in own if k not in official]
    if skip_prefix is None:
        assert not extra
    else:
        assert extra and all(k.startswith(skip_prefix) for k in extra)


def test_classifier_checkpoint_loads_with_init_cfg(official_cls, tmp_path):
    model = build_pretrained(save_cls(official_cls, tmp_path / 'biformer_tiny_in1k.pth'))
    # everything but the dense-task output norms comes from the file; those keep their init
    assert_equal_weights(model, official_cls, skip_prefix='extra_norms.')
    for i in range(4):
        norm = model.extra_norms[i]
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


@pytest.mark.parametrize('with_module', [False, True])
@pytest.mark.parametrize('prefix', ['backbone.', None])
def test_detection_checkpoint_loads_with_prefix(official_dense, tmp_path, with_module, prefix):
    path = save_det(official_dense, tmp_path / 'retinanet_biformer_tiny.pth', with_module)
    model = build_pretrained(path, **({} if prefix is None else dict(prefix=prefix)))
    assert_equal_weights(model, official_dense)


def test_detection_checkpoint_fewer_outputs(official_dense, tmp_path):
    """out_indices=(1, 2, 3): the unused stride-4 output norm of the file is left out."""
    path = save_det(official_dense, tmp_path / 'det.pth')
    model = MODELS.build(dict(type='mmattn.BiFormer', arch='tiny', n_win=16, out_indices=(1, 2, 3),
                              init_cfg=dict(type='Pretrained', checkpoint=path,
                                            prefix='backbone.')))
    model.init_weights()
    own = model.state_dict()
    assert 'extra_norms.0.weight' not in own
    assert all(torch.equal(own[k], v) for k, v in official_dense.items() if k in own)


def test_pretrained_argument_is_refused(official_cls, tmp_path):
    """The official ``pretrained=`` is gone: one error that names ``init_cfg``."""
    path = save_cls(official_cls, tmp_path / 'cls.pth')
    with pytest.raises(TypeError, match=r"pretrained: pass init_cfg=dict\(type='Pretrained'"):
        BiFormer(arch='tiny', pretrained=path)


def test_list_init_cfg(official_cls, tmp_path):
    """init_cfg as a list: the other entries apply, then the checkpoint (it used to crash)."""
    path = save_cls(official_cls, tmp_path / 'cls.pth')
    model = MODELS.build(dict(type='mmattn.BiFormer', arch='tiny', n_win=16, init_cfg=[
        dict(type='Constant', layer='LayerNorm', val=2.0, bias=0.5),
        dict(type='Pretrained', checkpoint=path)]))
    model.init_weights()
    assert_equal_weights(model, official_cls, skip_prefix='extra_norms.')
    # not in the classifier file: the Constant init stays on the output norms' LayerNorm2d
    assert torch.all(model.extra_norms[0].weight == 2.0)


def test_wrong_checkpoints_fail_clearly(official_cls, tmp_path):
    path = save_cls(official_cls, tmp_path / 'biformer_tiny_in1k.pth')
    with pytest.raises(CheckpointError,
                       match=r'biformer_tiny_in1k\.pth does not fit.*missing keys: stages\.0\.2'):
        # small has 4 blocks in stage 0 (tiny 2): the missing keys are named
        model = MODELS.build(dict(type='mmattn.BiFormer', arch='small', n_win=16,
                                  init_cfg=dict(type='Pretrained', checkpoint=path)))
        model.init_weights()
    with pytest.raises(CheckpointError, match=r'shape mismatches: downsample_layers\.0\.0\.weight'):
        model = MODELS.build(dict(type='mmattn.BiFormer', arch='base', n_win=16,
                                  init_cfg=dict(type='Pretrained', checkpoint=path)))
        model.init_weights()
    other = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7)}}, other)
    with pytest.raises(CheckpointError,
                       match=r'resnet\.pth holds no biformer weights .*downsample_layers'):
        build_pretrained(str(other))
    with pytest.raises(CheckpointError, match="no keys under prefix 'backbone.'"):
        build_pretrained(path, prefix='backbone.')
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.slow
def test_converter_tool(official_cls, official_dense, tmp_path, capsys):
    src = save_cls(official_cls, tmp_path / 'biformer_tiny_in1k.pth')
    dst = tmp_path / 'out' / 'biformer-t.pth'
    convert_main(['--model', 'biformer', src, str(dst)])
    assert 'biformer BiFormer' in capsys.readouterr().out
    converted = torch.load(dst, weights_only=True)
    assert converted['meta']['model'] == 'biformer'
    sd = converted['state_dict']
    assert set(sd) == {k for k in official_cls if not k.startswith(('head.', 'norm.'))}
    assert all(torch.equal(sd[k], official_cls[k]) for k in sd)
    # the converted file loads with init_cfg as well
    model = build_pretrained(str(dst))
    assert_equal_weights(model, official_cls, skip_prefix='extra_norms.')

    # a detector: every entry kept, the backbone's under its prefix (for load_from)
    src = save_det(official_dense, tmp_path / 'det.pth', with_module=True)
    dst = tmp_path / 'det_converted.pth'
    convert_main(['--model', 'biformer', src, str(dst), '--prefix', 'backbone.'])
    sd = torch.load(dst, weights_only=True)['state_dict']
    assert set(sd) == {'backbone.' + k for k in official_dense} | {
        'neck.lateral_convs.0.conv.weight', 'bbox_head.retina_cls.weight'}
    assert all(torch.equal(sd['backbone.' + k], v) for k, v in official_dense.items())
    assert_equal_weights(build_pretrained(str(dst), prefix='backbone.'), official_dense)

    # the alias script runs the same converter
    alias = tmp_path / 'alias.pth'
    subprocess.run([sys.executable, ALIAS, str(src), str(alias)], check=True, cwd=REPO,
                   capture_output=True)
    assert torch.load(alias, weights_only=True)['state_dict'].keys() == sd.keys()


@pytest.mark.parametrize('content,match', [
    ({'model': {'conv1.weight': torch.zeros(1)}}, 'holds no biformer weights'),
    ({}, 'holds no tensors'),
    ({'state_dict': {}}, 'holds no tensors'),
])
def test_converter_refuses_other_files(tmp_path, content, match):
    bad = tmp_path / 'bad.pth'
    torch.save(content, bad)
    out = tmp_path / 'x.pth'
    with pytest.raises(SystemExit, match=f'bad.pth: cannot convert: .*{match}'):
        convert_main(['--model', 'biformer', str(bad), str(out)])
    assert not out.exists()


def test_converter_refuses_other_arch_layout(official_cls, tmp_path):
    """A file with the stem key but blocks the inferred arch does not have: named keys."""
    sd = dict(official_cls)
    sd['stages.1.0.attn.extra.weight'] = torch.zeros(3)
    bad = save_cls(sd, tmp_path / 'odd.pth')
    out = tmp_path / 'x.pth'
    with pytest.raises(SystemExit, match=r'odd\.pth.*unexpected keys: stages\.1\.0\.attn\.extra'):
        convert_main(['--model', 'biformer', bad, str(out)])
    assert not out.exists()
