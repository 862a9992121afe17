"""PoolFormer checkpoints: every official layout loads through ``init_cfg`` with no manual step, and
the offline converter writes the same weights.

Checkpoints are fabricated in tmp files from the S12 fixtures' layouts (``poolformer_s12.cls``: the
sail-sg classifier release; ``poolformer_s12.dense``: ``poolformer_s12_feat``, as saved inside
sail-sg's mmdet/mmseg checkpoints) and re-packed the way mmpretrain (classifier) and mmseg
(segmentor on ``mmpretrain.PoolFormer``) save them. The backbone must end up with exactly the
official tensors.
"""
import runpy
import logging
import os.path as osp
from collections import OrderedDict

import pytest
import torch
from mmengine.logging import MMLogger

import mmattn  # noqa: F401
from mmattn.models.backbones.poolformer import PoolFormer
from mmattn.testing import load_fixture, state_dict_from_fixture
from mmattn.utils.checkpoint import CheckpointError

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLASSIFIER_KEYS = ['norm.weight', 'norm.bias', 'head.weight', 'head.bias']


@pytest.fixture(scope='module')
def cls_sd():
    return state_dict_from_fixture(load_fixture('poolformer_s12.cls'))


@pytest.fixture(scope='module')
def dense_sd():
    return state_dict_from_fixture(load_fixture('poolformer_s12.dense'))


@pytest.fixture
def log_lines():
    """Messages logged to mmengine's current logger during the test."""
    lines = []

    class Grab(logging.Handler):

        def emit(self, record):
            lines.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Grab(level=logging.DEBUG)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def save(tmp_path, name, obj):
    path = str(tmp_path / name)
    torch.save(obj, path)
    return path


def build_and_init(path, prefix=None, **kwargs):
    init_cfg = dict(type='Pretrained', checkpoint=path)
    if prefix is not None:
        init_cfg['prefix'] = prefix
    model = PoolFormer(arch='s12', init_cfg=init_cfg, **kwargs)
    model.init_weights()
    return model


def assert_holds(model, expected, skip=()):
    own = model.state_dict()
    for k, v in expected.items():
        if k in skip:
            continue
        assert torch.equal(own[k], v), k


def assert_default_norms(model, names):
    for n in names:
        norm = getattr(model, n)
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0), n


def mmdet_checkpoint(backbone_sd, with_norm0=True):
    sd = OrderedDict(('backbone.' + k, v) for k, v in backbone_sd.items()
                     if with_norm0 or not k.startswith('norm0.'))
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 128, 1, 1)
    sd['bbox_head.retina_cls.weight'] = torch.zeros(720, 256, 3, 3)
    return {
        'meta': {
            'mmdet_version': '2.19.0',
            'CLASSES': ('person', 'car'),
            'epoch': 12
        },
        'state_dict': sd,
        'optimizer': {
            'state': {},
            'param_groups': []
        }
    }


# ---------------------------------------------------------------------------- classifier route
def test_sail_classifier_release(tmp_path, cls_sd, log_lines):
    path = save(tmp_path, 'poolformer_s12.pth.tar', cls_sd)  # the release is a raw state_dict
    model = build_and_init(path)
    assert model.is_init
    assert_holds(model, cls_sd, skip=CLASSIFIER_KEYS)
    assert_default_norms(model, ['norm0', 'norm2', 'norm4', 'norm6'])  # as poolformer_s12_feat does
    text = '\n'.join(log_lines)
    assert 'not loaded from ' + path + ': norm.weight, norm.bias, head.weight, head.bias' in text
    assert 'keep their initialisation: norm0.weight' in text  # output norms left at init


def test_mmpretrain_classifier(tmp_path, cls_sd, log_lines):
    sd = OrderedDict(
        ('backbone.' + k, v) for k, v in cls_sd.items() if not k.startswith(('norm.', 'head.')))
    sd['backbone.norm6.weight'], sd['backbone.norm6.bias'] = cls_sd['norm.weight'], cls_sd[
        'norm.bias']
    sd['head.fc.weight'], sd['head.fc.bias'] = cls_sd['head.weight'], cls_sd['head.bias']
    path = save(tmp_path, 'poolformer-s12_3rdparty_32xb128_in1k.pth', {
        'meta': {
            'epoch': 300
        },
        'state_dict': sd
    })
    for prefix in (None, 'backbone.'):
        log_lines.clear()
        model = build_and_init(path, prefix)
        assert_holds(model, cls_sd, skip=CLASSIFIER_KEYS)
        # mmpretrain's norm6 is the classifier's final norm (sail-sg's `norm`): dropped like it
        assert_default_norms(model, ['norm0', 'norm2', 'norm4', 'norm6'])
        text = '\n'.join(log_lines)
        assert 'not loaded from' in text and 'backbone.norm6.weight' in text
        assert "ignored 2 keys outside 'backbone.'" in text and 'head.fc.weight' in text


# ------------------------------------------------------------------------ detection/segmentation
def test_sail_mmdet_checkpoint(tmp_path, dense_sd, log_lines):
    path = save(tmp_path, 'mask_rcnn_poolformer_s12_fpn_1x_coco.pth', mmdet_checkpoint(dense_sd))
    model = build_and_init(path, 'backbone.')
    assert_holds(model, dense_sd)
    assert set(model.state_dict()) == set(dense_sd)
    assert "ignored 2 keys outside 'backbone.'" in '\n'.join(log_lines)


def test_sail_retinanet_checkpoint_without_norm0(tmp_path, dense_sd, log_lines):
    """sail-sg's RetinaNets ran with FORK_LAST3 (norm0 = Identity): no norm0 in their files."""
    path = save(tmp_path, 'retinanet_poolformer_s12_fpn_1x_coco.pth',
                mmdet_checkpoint(dense_sd, False))
    model = build_and_init(path, 'backbone.', out_indices=(1, 2, 3))
    assert_holds(model, {k: v for k, v in dense_sd.items() if not k.startswith('norm0.')})
    assert not hasattr(model, 'norm0')
    log_lines.clear()
    model = build_and_init(path, 'backbone.')
    assert_default_norms(model, ['norm0'])
    assert any('keep their initialisation' in line and 'norm0.weight' in line
               for line in log_lines)


def test_dense_checkpoint_into_fewer_outputs(tmp_path, dense_sd, log_lines):
    path = save(tmp_path, 'seg.pth', mmdet_checkpoint(dense_sd))
    model = build_and_init(path, 'backbone.', out_indices=(1, 2, 3))
    assert_holds(model, dense_sd, skip=['norm0.weight', 'norm0.bias'])
    assert ': backbone.norm0.weight, backbone.norm0.bias' in '\n'.join(log_lines)


def test_mmseg_segmentor_on_mmpretrain_poolformer(tmp_path, dense_sd):
    sd = OrderedDict(('backbone.' + k, v) for k, v in dense_sd.items())
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 64, 1, 1)
    sd['decode_head.conv_seg.weight'] = torch.zeros(150, 128, 1, 1)
    path = save(tmp_path, 'fpn_poolformer_s12_8xb4-40k_ade20k-512x512.pth', {
        'meta': {},
        'state_dict': sd
    })
    assert_holds(build_and_init(path, 'backbone.'), dense_sd)


# ------------------------------------------------------------------------------------------ errors
def test_other_arch_is_one_clear_error(tmp_path):
    path = save(tmp_path, 's24.pth', PoolFormer('s24').state_dict())
    with pytest.raises(CheckpointError,
                       match=r's24\.pth does not fit this PoolFormer.*'
                       r'unexpected keys: network\.0\.2\.'):
        build_and_init(path)


def test_width_mismatch_names_shapes(tmp_path):
    path = save(tmp_path, 'm36.pth', PoolFormer('m36').state_dict())
    with pytest.raises(CheckpointError,
                       match=r'm36\.pth.*shape mismatches: patch_embed\.proj\.weight: '
                       r'checkpoint \(96, 3, 7, 7\) vs model \(64, 3, 7, 7\)'):
        PoolFormer('s36', init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()


def test_truncated_checkpoint_names_missing_keys(tmp_path, cls_sd):
    sd = OrderedDict((k, v) for k, v in cls_sd.items() if not k.startswith('network.4.5.'))
    path = save(tmp_path, 'truncated.pth', sd)
    with pytest.raises(CheckpointError,
                       match=r'truncated\.pth.*missing keys: network\.4\.5\.layer_scale_1'):
        build_and_init(path)


def test_checkpoint_of_another_model(tmp_path):
    path = save(
        tmp_path, 'resnet50.pth', {
            'state_dict': {
                'conv1.weight': torch.zeros(64, 3, 7, 7),
                'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1)
            }
        })
    with pytest.raises(CheckpointError,
                       match=r'resnet50\.pth holds no poolformer weights.*conv1\.weight'):
        build_and_init(path)


def test_other_init_cfg_entries_still_apply(tmp_path, cls_sd):
    path = save(tmp_path, 'poolformer_s12.pth.tar', cls_sd)
    model = PoolFormer('s12',
                       init_cfg=[
                           dict(type='Constant', layer='GroupNorm', val=2.0, bias=0.5),
                           dict(type='Pretrained', checkpoint=path)
                       ])
    model.init_weights()
    assert_holds(model, cls_sd, skip=CLASSIFIER_KEYS)
    assert torch.all(model.norm6.weight == 2.0)  # not in the checkpoint: the Constant init stays


# --------------------------------------------------------------------------------------- converter
def load_converter():
    return runpy.run_path(osp.join(ROOT, 'tools', 'model_converters', 'convert.py'))['main']


def test_converter_script(tmp_path, cls_sd, dense_sd, capsys):
    convert = load_converter()
    src = save(tmp_path, 'poolformer_s12.pth.tar', cls_sd)
    dst = str(tmp_path / 'out' / 'poolformer_s12_mmattn.pth')
    convert(['--model', 'poolformer', src, dst])
    out = torch.load(dst, weights_only=True)['state_dict']
    assert list(out) == [k for k in cls_sd if k not in CLASSIFIER_KEYS]
    assert all(torch.equal(out[k], cls_sd[k]) for k in out)
    printed = capsys.readouterr().out
    assert 'poolformer PoolFormer' in printed and 'head.weight' in printed
    assert_holds(build_and_init(dst), cls_sd, skip=CLASSIFIER_KEYS)

    # a detector: the whole model, backbone converted under its prefix (load_from / prefix=)
    src = save(tmp_path, 'det.pth', mmdet_checkpoint(dense_sd))
    convert(['--model', 'poolformer', src, dst, '--prefix', 'backbone.'])
    out = torch.load(dst, weights_only=True)['state_dict']
    assert set(out) == {'backbone.' + k for k in dense_sd} | {
        'neck.lateral_convs.0.conv.weight', 'bbox_head.retina_cls.weight'}
    assert all(torch.equal(out['backbone.' + k], v) for k, v in dense_sd.items())
    assert_holds(build_and_init(dst, 'backbone.'), dense_sd)

    bad = save(tmp_path, 'bad.pth', {'conv1.weight': torch.zeros(1)})
    with pytest.raises(SystemExit, match='bad.pth: cannot convert'):
        convert(['--model', 'poolformer', bad, str(tmp_path / 'never.pth')])
    assert not (tmp_path / 'never.pth').exists()


def test_converter_refuses_another_models_file(tmp_path):
    """A BiFormer-shaped file given as PoolFormer, and a PoolFormer file given as Agent-Swin (same
    stem key name): an error naming the keys, nothing written."""
    convert = load_converter()
    src = save(tmp_path, 's12.pth', PoolFormer('s12').state_dict())
    with pytest.raises(SystemExit, match=r's12\.pth: cannot convert.*(no AgentSwinTransformer arch'
                       r'|does not fit)'):
        convert(['--model', 'agent_swin', src, str(tmp_path / 'x.pth')])
    src = save(tmp_path, 'biformer.pth', {'downsample_layers.0.0.weight': torch.zeros(32, 3, 3, 3)})
    with pytest.raises(SystemExit, match=r'biformer\.pth: cannot convert.*holds no poolformer'):
        convert(['--model', 'poolformer', src, str(tmp_path / 'x.pth')])
    assert not (tmp_path / 'x.pth').exists()
