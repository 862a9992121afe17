"""SDANet: parity of ``mmattn.SDANeck`` with the official ``selective_attention`` modules (eval and
train mode, batch 1 and 2, odd level sizes), official-checkpoint loading through ``init_cfg``, the
detector converter ``tools/model_converters/sdanet2mmattn.py`` and the configs.

Data:

* ``tests/data/parity/SDANet_sda.neck.pt``: batch 1, levels 64x48 ... 4x3, eval mode;
* ``tests/data/sdanet/official_outputs.pt``: the official modules (commit 3ade35c) run on CPU in
  fp32 with the same generated weights: batch 2 at odd sizes 13x17, 7x9, 4x5, 2x3, 1x2 in eval and in
  train mode (with the BatchNorm running statistics after the train forward), and batch 1 at
  16x24 ... 1x2 in eval mode (how: ``tests/data/sdanet/README.md``).
"""
import os.path as osp

import pytest
import torch

import mmattn  # noqa: F401
from mmattn.models.necks.sda import SDANeck, convert_sda_official
from mmattn.testing.parity import load_fixture, max_rel_error, state_dict_from_fixture
from mmattn.utils.checkpoint import CheckpointError

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA = osp.join(ROOT, 'tests', 'data', 'sdanet')
CONFIGS = osp.join(ROOT, 'configs', 'sdanet')
TOL = 1e-4


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def fixture():
    return load_fixture('SDANet_sda.neck')


@pytest.fixture(scope='module')
def official():
    return torch.load(osp.join(DATA, 'official_outputs.pt'), weights_only=True)


def loaded_neck(fixture) -> SDANeck:
    neck = SDANeck()
    neck.load_state_dict(convert_sda_official(state_dict_from_fixture(fixture)), strict=True)
    return neck


def test_parity_eval_b1_64x48(fixture):
    neck = loaded_neck(fixture).eval()
    with torch.no_grad():
        outs = neck(list(fixture['inputs']['b1_64x48']))
    assert max_rel_error(outs, fixture['outputs']['b1_64x48']) <= TOL


@pytest.mark.parametrize('case', ['b2_odd', 'b1_64x96'])
def test_parity_eval_other_sizes_and_batch(fixture, official, case):
    neck = loaded_neck(fixture).eval()
    with torch.no_grad():
        outs = neck([x.float() for x in official['inputs'][case]])
    assert max_rel_error(outs, official['eval'][case]) <= TOL


def test_parity_train_mode_batch_statistics(fixture, official):
    neck = loaded_neck(fixture).train()
    with torch.no_grad():
        outs = neck([x.float() for x in official['inputs']['b2_odd']])
    assert max_rel_error(outs, official['train']['b2_odd']) <= TOL
    # the train-mode output differs from the eval one: batch statistics were used
    assert max_rel_error(official['train']['b2_odd'], official['eval']['b2_odd']) > 1e-2
    for key, expected in official['train_running_stats']['b2_odd'].items():
        level, stat = key.split('.')
        bn = neck.attentions[int(level)].channel_att.squeeze.bn
        assert torch.allclose(getattr(bn, stat), expected, rtol=1e-5, atol=1e-6), key


def test_train_mode_gradients_reach_every_parameter(fixture, official):
    neck = loaded_neck(fixture).train()
    outs = neck([x.float() for x in official['inputs']['b2_odd']])
    sum(o.square().mean() for o in outs).backward()
    no_grad = [n for n, p in neck.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad


def test_batch_of_one_in_training_explains():
    neck = SDANeck().train()
    xs = [torch.randn(1, 256, s, s) for s in (16, 8, 4, 2, 1)]
    with pytest.raises(ValueError, match='batch size >= 2 per device'):
        neck(xs)
    neck.eval()
    assert [o.shape for o in neck(xs)] == [x.shape for x in xs]


def test_shape_errors_and_empty_batch():
    neck = SDANeck()
    with pytest.raises(ValueError, match='got 4 levels'):
        neck([torch.randn(1, 256, 4, 4)] * 4)
    with pytest.raises(ValueError, match=r'level 2 has shape \(1, 128, 4, 4\)'):
        neck([torch.randn(1, 256, 4, 4)] * 2 + [torch.randn(1, 128, 4, 4)] * 3)
    empty = [torch.zeros(0, 256, s, s) for s in (8, 4, 2, 1, 1)]
    assert [o.shape for o in neck.eval()(empty)] == [x.shape for x in empty]


def test_official_init_refine_is_identity_and_layout():
    neck = SDANeck()
    neck.init_weights()
    assert sum(p.numel() for p in neck.parameters()) == 5 * 207387  # the spec's count
    for att in neck.attentions:
        x = torch.randn(2, 256, 5, 7)
        assert torch.equal(att.refine(x.clone()), x)  # last conv of the add branch is zero
        assert att.refine.channel_add_conv[1].normalized_shape == (16, 1, 1)
    # keys are the official ones up to the documented renames
    official = {k for k, *_ in load_fixture('SDANet_sda.neck')['spec']}
    assert set(convert_sda_official({k: torch.zeros(1) for k in official})) == \
        set(neck.state_dict())


def official_detector_file(fixture, path) -> str:
    """An official-layout SDANet detector checkpoint: the SDA modules at the top level next to
    (some of) the detector's other keys, in mmdet 1.x's {'meta', 'state_dict'} container."""
    sd = dict(state_dict_from_fixture(fixture))
    sd['backbone.conv1.weight'] = torch.zeros(64, 3, 7, 7)
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 256, 1, 1)
    sd['bbox_head.0.fc_cls.weight'] = torch.zeros(13, 1024)
    torch.save({'meta': {'mmdet_version': '1.1.0'}, 'state_dict': sd}, path)
    return str(path)


def test_init_cfg_loads_official_detector_checkpoint(fixture, tmp_path):
    path = official_detector_file(fixture, tmp_path / 'sdanet_official.pth')
    neck = SDANeck(init_cfg=dict(type='Pretrained', checkpoint=path))
    neck.init_weights()
    neck.eval()
    with torch.no_grad():
        outs = neck(list(fixture['inputs']['b1_64x48']))
    assert max_rel_error(outs, fixture['outputs']['b1_64x48']) <= TOL


def test_init_cfg_in_a_detector_neck_list(fixture, tmp_path):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    path = official_detector_file(fixture, tmp_path / 'sdanet_official.pth')
    with DefaultScope.overwrite_default_scope('mmdet'):
        neck = MODELS.build([
            dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=256, num_outs=5),
            dict(type='mmattn.SDANeck', init_cfg=dict(type='Pretrained', checkpoint=path))])
    neck.init_weights()
    expected = convert_sda_official(state_dict_from_fixture(fixture))
    got = neck.state_dict()
    assert all(torch.equal(got['1.' + k], v) for k, v in expected.items())
    outs = neck.eval()([torch.randn(1, c, 64 // s, 48 // s) for c, s in
                        ((8, 1), (16, 2), (32, 4), (64, 8))])
    assert [tuple(o.shape[2:]) for o in outs] == [(64, 48), (32, 24), (16, 12), (8, 6), (4, 3)]


def test_init_cfg_refuses_other_checkpoints(fixture, tmp_path):
    other = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'backbone.conv1.weight': torch.zeros(64, 3, 7, 7)}}, other)
    neck = SDANeck(init_cfg=dict(type='Pretrained', checkpoint=str(other)))
    with pytest.raises(CheckpointError, match='resnet.pth holds no sdanet weights'):
        neck.init_weights()
    sd = convert_sda_official(state_dict_from_fixture(fixture))
    sd['attentions.3.spatial_att.convs.0.weight'] = torch.zeros(1, 2, 3, 3)
    bad = tmp_path / 'bad_shape.pth'
    torch.save({'state_dict': {'neck.1.' + k: v for k, v in sd.items()}}, bad)
    neck = SDANeck(init_cfg=dict(type='Pretrained', checkpoint=str(bad), prefix='neck.1.'))
    with pytest.raises(CheckpointError,
                       match=r'bad_shape.pth .*attentions.3.spatial_att.convs.0.weight'):
        neck.init_weights()


# ------------------------------------------------------------------------- detector converter
SAMPLE_CONFIG = osp.join(CONFIGS, 'sdanet_cascade-mask-rcnn_r18_fpn_sample-pidray.py')
_INVERSE = (('channel_att.squeeze.conv.', 'channel_att.fc.0.'),
            ('channel_att.squeeze.bn.', 'channel_att.fc.1.'),
            ('spatial_att.convs.', 'spatial_att.conv.'))


def to_official_layout(state_dict: dict) -> dict:
    """An mmattn SDANet detector state_dict in the official mmdet 1.x layout (spec §2c): SDA
    modules at the top level, FPN under ``neck.``, heads per stage without ``roi_head.``,
    background as class 0 of ``fc_cls`` and an extra background channel 0 in ``conv_logits``."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('neck.1.attentions.'):
            level, rest = key[len('neck.1.attentions.'):].split('.', 1)
            for new, old in _INVERSE:
                if rest.startswith(new):
                    rest = old + rest[len(new):]
            out[f'selective_attention_{level}.{rest}'] = value
        elif key.startswith('neck.0.'):
            out['neck.' + key[len('neck.0.'):]] = value
        elif key.startswith('roi_head.'):
            name = key[len('roi_head.'):]
            if '.fc_cls.' in name:
                value = torch.cat([value[-1:], value[:-1]])
            elif '.conv_logits.' in name:
                value = torch.cat([torch.full_like(value[:1], 7.0), value])
            out[name] = value
        else:
            out[key] = value
    return out


def load_converter():
    import importlib.util
    path = osp.join(ROOT, 'tools', 'model_converters', 'sdanet2mmattn.py')
    spec = importlib.util.spec_from_file_location('sdanet2mmattn', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def sample_detector():
    conv = load_converter()
    import mmattn.utils.runner  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(SAMPLE_CONFIG)
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
    model.init_weights()
    return conv, model


@pytest.mark.slow
def test_converter_round_trip_loads_with_no_missing_key(sample_detector, tmp_path):
    conv, model = sample_detector
    ours = {k: v.clone() for k, v in model.state_dict().items()}
    official = to_official_layout(ours)
    assert official['bbox_head.2.fc_cls.weight'].shape[0] == 13
    assert official['mask_head.0.conv_logits.weight'].shape[0] == 13
    src, dst = tmp_path / 'sdanet_official.pth', tmp_path / 'converted.pth'
    torch.save({'meta': {'mmdet_version': '1.1.0'}, 'state_dict': official}, src)
    conv.main([str(src), str(dst), '--config', SAMPLE_CONFIG])
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert set(converted) == set(ours)
    assert all(torch.equal(converted[k], v) for k, v in ours.items())
    missing, unexpected = model.load_state_dict(converted, strict=True)
    assert not missing and not unexpected


def test_converter_partial_checkpoint_and_errors(sample_detector, tmp_path, capsys):
    conv, model = sample_detector
    official = to_official_layout(model.state_dict())
    only_sda = {k: v for k, v in official.items() if k.startswith('selective_attention_')}
    src, dst = tmp_path / 'sda_only.pth', tmp_path / 'sda_only_mmattn.pth'
    torch.save({'state_dict': only_sda}, src)
    conv.main([str(src), str(dst), '--config', SAMPLE_CONFIG])
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert converted and all(k.startswith('neck.1.attentions.') for k in converted)
    assert 'keep their initialisation' in capsys.readouterr().out
    # the converted detector's neck loads back into an SDANeck by itself (prefix found)
    neck = SDANeck(in_channels=128, reduction_channels=64,
                   init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    neck.init_weights()
    assert all(torch.equal(neck.state_dict()[k[len('neck.1.'):]], v) for k, v in converted.items())
    # a full checkpoint lacking a module, a mis-shaped key, a foreign key: named, nothing written
    for name, edit, match in (
            ('no_mask_logits', lambda sd: sd.pop('mask_head.2.conv_logits.weight'),
             'missing keys: roi_head.mask_head.2.conv_logits.weight'),
            ('bad_shape', lambda sd: sd.__setitem__('rpn_head.rpn_cls.weight',
                                                    torch.zeros(5, 128, 1, 1)),
             r'rpn_head.rpn_cls.weight: checkpoint \(5, 128, 1, 1\)'),
            ('foreign', lambda sd: sd.__setitem__('semantic_head.conv.weight', torch.zeros(1)),
             'keys of no SDANet / Cascade Mask R-CNN module: semantic_head.conv.weight')):
        sd = dict(official)
        edit(sd)
        src, dst = tmp_path / f'{name}.pth', tmp_path / f'{name}_out.pth'
        torch.save({'state_dict': sd}, src)
        with pytest.raises(SystemExit, match=f'{name}.pth: cannot convert: .*{match}'):
            conv.main([str(src), str(dst), '--config', SAMPLE_CONFIG])
        assert not dst.exists()


@pytest.mark.parametrize('config', ['sdanet_cascade-mask-rcnn_r101_fpn_1x_pidray.py',
                                    'cascade-mask-rcnn_r101_fpn_1x_pidray.py'])
def test_official_r101_layout_maps_onto_the_configs(config):
    """The full official layout (meta tensors, spec §2c) converts to every key of the R-101
    config's detector with the same shapes."""
    conv = load_converter()
    from mmattn.utils.checkpoint import match_state_dict
    model = conv.build_detector(osp.join(CONFIGS, config), None)
    own = model.state_dict()
    official = to_official_layout(own)
    assert sum(k.startswith('selective_attention_') for k in official) == (
        len(load_fixture('SDANet_sda.neck')['spec']) if 'sdanet' in config else 0)
    fpn = 'neck.0.' if 'neck.0.lateral_convs.0.conv.weight' in own else 'neck.'
    converted, unknown = conv.convert_sdanet_official(official, fpn)
    assert not unknown
    report = match_state_dict(model, converted)
    assert report.ok and len(report.loaded) == len(own), report.problems()


def test_family_converter_writes_a_neck_file_that_init_cfg_loads(fixture, tmp_path):
    """``convert.py --model sdanet`` keeps only the SDA modules, in SDANeck's keys."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'mmattn_convert', osp.join(ROOT, 'tools', 'model_converters', 'convert.py'))
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    src, dst = official_detector_file(fixture, tmp_path / 'official.pth'), tmp_path / 'neck.pth'
    convert.main(['--model', 'sdanet', src, str(dst)])
    neck_sd = torch.load(dst, weights_only=True)['state_dict']
    assert set(neck_sd) == set(SDANeck().state_dict())
    neck = SDANeck(init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    neck.init_weights()
    with torch.no_grad():
        outs = neck.eval()(list(fixture['inputs']['b1_64x48']))
    assert max_rel_error(outs, fixture['outputs']['b1_64x48']) <= TOL
