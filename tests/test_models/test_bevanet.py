"""BEVANet: parity with the official ``BEVANet_SEG`` through ``convert_bevanet_official``, official
layouts of every arch, deploy-mode folding, bad input.

Data (see also the README of configs/bevanet):

* ``tests/data/parity/BEVANet_S.seg.pt``: BEVANet-S at 256x512 (see its README);
* ``tests/data/bevanet/BEVANet_S.seg_200x328.pt``: the official ``BEVANet_SEG`` (commit 603205b)
  run on CPU in fp32 with the same generated weights at 200x328 (not a multiple of 64; the
  official forward only accepts multiples of 8);
* ``tests/data/bevanet/official_outputs_128x256.pt``: the official ``BEVANet_SEG`` of the other
  three arches, run the same way at 128x256 with weights from ``mmattn.testing.parity.generate``
  (seed 0) for its layout;
* ``tests/data/bevanet/official_layouts.json.gz``: the state_dict layouts (key, shape) of the
  official ``BEVANet_SEG`` (seg_augment=True) and ``BEVANet_CLS_32`` for the four Cityscapes yaml
  variants, read from the official classes built on the meta device.
"""
import gzip
import json
import os.path as osp

import pytest
import torch

import mmattn  # noqa: F401
from mmattn.models.backbones.bevanet import (BEVANet, convert_bevanet_official, fold_conv_bn,
                                             guess_bevanet_arch)
from mmattn.testing.parity import generate, load_fixture, max_rel_error, state_dict_from_fixture

DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data', 'bevanet')
TOL = 1e-4


def segmentor_cfg(arch: str = 's', num_classes: int = 19) -> dict:
    c = BEVANet.arch_settings[arch]['channels']
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor'),
        backbone=dict(type='mmattn.BEVANet', arch=arch),
        decode_head=dict(
            type='mmattn.BEVANetHead', in_channels=4 * c, channels=BEVANet.head_channels[arch],
            num_classes=num_classes,
            loss_decode=[dict(type='CrossEntropyLoss', loss_weight=0.4),
                         dict(type='OhemCrossEntropy', thres=0.9, min_kept=131072),
                         dict(type='BoundaryLoss', loss_weight=20.0),
                         dict(type='OhemCrossEntropy', thres=0.9, min_kept=131072)]))


def build_segmentor(arch: str = 's', num_classes: int = 19):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(segmentor_cfg(arch, num_classes))


def layouts() -> dict:
    with gzip.open(osp.join(DATA, 'official_layouts.json.gz'), 'rt') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def fixture():
    return load_fixture('BEVANet_S.seg')


@pytest.fixture(scope='module')
def model(fixture):
    torch.set_num_threads(2)
    seg = build_segmentor('s')
    converted, dropped = convert_bevanet_official(state_dict_from_fixture(fixture))
    assert not dropped
    seg.load_state_dict(converted, strict=True)
    return seg.eval()


def three_outputs(seg, x):
    with torch.no_grad():
        return seg.decode_head.forward_all(seg.backbone.forward_all(x))


def test_parity_256x512(model, fixture):
    x = fixture['inputs']['256x512']
    aux, main, boundary = fixture['outputs']['256x512']
    with torch.no_grad():
        got_main = model(x, mode='tensor')
    assert max_rel_error(got_main, main) <= TOL
    got = three_outputs(model, x)
    for g, e in zip(got, (aux, main, boundary)):
        assert max_rel_error(g, e) <= TOL


def test_aux_sees_the_rectified_detail_map(model, fixture):
    """The official stage-3 ReLU is in place, so the aux head's input is rectified too: the
    un-rectified map gives a different aux output (checks the test can tell them apart)."""
    x = fixture['inputs']['256x512']
    aux = fixture['outputs']['256x512'][0]
    bb = model.backbone
    with torch.no_grad():
        y = bb.relu(bb.layer2(bb.relu(bb.layer1(bb.conv1(x)))))
        xs = bb.relu(bb.layer3_semantic(y))
        pre = bb.fuse_sd_3(bb.layer3_detail(y), bb.compression3(xs))
        wrong = model.decode_head.p_head(pre, model.decode_head.p_cls_seg)
    assert max_rel_error(wrong, aux) > 100 * TOL


def test_parity_200x328_not_multiple_of_64(model):
    ref = torch.load(osp.join(DATA, 'BEVANet_S.seg_200x328.pt'), weights_only=True)
    x = torch.randn(1, 3, 200, 328, generator=torch.Generator().manual_seed(1000 * 200 + 328))
    got = three_outputs(model, x)
    for g, e in zip(got, ref['outputs']['200x328']):
        assert max_rel_error(g, e) <= TOL
    with torch.no_grad():
        assert max_rel_error(model(x, mode='tensor'), ref['outputs']['200x328'][1]) <= TOL


def test_odd_size_runs_and_eval_is_the_main_branch(model):
    """250x330 (not a multiple of 8): the official forward raises (it reshapes to int(H/8)); here
    feature maps follow the stride-2 convs (ceil) and eval equals the main training branch."""
    x = torch.randn(2, 3, 250, 330, generator=torch.Generator().manual_seed(0))
    aux, main, boundary = three_outputs(model, x)
    assert aux.shape == main.shape == (2, 19, 32, 42) and boundary.shape == (2, 1, 32, 42)
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'), main)
    assert torch.isfinite(main).all() and main.std() > 0


@pytest.mark.parametrize('arch', ['sw', 'base', 'l'])
def test_parity_other_arches_128x256(arch):
    """Full-size SW / base / L with generated weights against the official outputs."""
    ref = torch.load(osp.join(DATA, 'official_outputs_128x256.pt'), weights_only=True)
    roles = ('running_mean', 'running_var', 'num_batches_tracked')
    official = {}
    for key, shape in layouts()[arch]['seg']:
        role = key.rsplit('.', 1)[-1]
        role = role if role in roles else 'param'
        dtype = 'int64' if role == 'num_batches_tracked' else 'float32'
        official[key] = generate(key, shape, dtype, role, seed=0)
    seg = build_segmentor(arch)
    seg.load_state_dict(convert_bevanet_official(official)[0], strict=True)
    seg.eval()
    x = torch.randn(1, 3, 128, 256, generator=torch.Generator().manual_seed(1000 * 128 + 256))
    got = three_outputs(seg, x)
    for g, e in zip(got, ref['outputs'][arch]):
        assert max_rel_error(g, e) <= TOL


@pytest.mark.parametrize('arch', ['s', 'sw', 'base', 'l'])
def test_official_layouts_load_completely(arch):
    """Every official BEVANet_SEG key converts to exactly one key of the mmattn segmentor with the
    same shape (meta device: keys and shapes only)."""
    official = layouts()[arch]['seg']
    with torch.device('meta'):
        own = build_segmentor(arch).state_dict()
    converted, dropped = convert_bevanet_official(
        {f'model.{k}': torch.empty(s, device='meta') for k, s in official})
    assert not dropped and len(converted) == len(official)
    assert set(converted) == set(own)
    bad = [k for k, v in converted.items() if v.shape != own[k].shape]
    assert not bad, bad[:5]
    assert guess_bevanet_arch(converted) == arch


@pytest.mark.parametrize('arch', ['s', 'base'])
def test_imagenet_classifier_loads_by_name_and_shape(arch, tmp_path):
    """An official BEVANet_CLS_32 checkpoint (DataParallel ``module.`` prefix, ``state_dict``
    wrapper) through ``init_cfg``: exactly the keys the official rule (same name and shape) loads;
    the others keep the official init."""
    official_cls = layouts()[arch]['cls']
    seg = dict((k, s) for k, s in layouts()[arch]['seg'])
    shared = {k for k, s in official_cls if seg.get(k) == s}
    torch.manual_seed(0)
    sd = {k: torch.randn(s) if s else torch.tensor(3) for k, s in official_cls}
    path = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}}, path)
    torch.manual_seed(1)
    bb = BEVANet(arch, init_cfg=dict(type='Pretrained', checkpoint=path))
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    bb.init_weights()
    own = bb.state_dict()
    conv, dropped = convert_bevanet_official({k: v for k, v in sd.items() if k in shared})
    assert not dropped and len(conv) == len(shared)
    for k, v in conv.items():
        assert torch.equal(own[k[len('backbone.'):]], v), k
    untouched = set(own) - {k[len('backbone.'):] for k in conv}
    seg_only = ('layer5_down_semantic_seg', 'layer5_semantic_1_seg', 'layer5_semantic_2_seg',
                'norm5_semantic_1_seg', 'norm5_semantic_2_seg', 'layer5_detail_boundary', 'spp',
                'dfm')
    assert untouched and all(k.split('.')[0] in seg_only for k in untouched)
    # the loaded tensors replaced the init (the file's values differ from any init)
    inner = [k[len('backbone.'):] for k in conv]
    assert not any(torch.equal(own[k], before[k]) for k in inner if own[k].numel() > 1)


def test_other_arch_checkpoint_names_its_arch(tmp_path):
    from mmattn.utils.checkpoint import CheckpointError
    official = layouts()['sw']['cls']
    sd = {k: torch.zeros(s) for k, s in official}
    path = str(tmp_path / 'sw.pth')
    torch.save(sd, path)
    bb = BEVANet('base', init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError, match="holds BEVANet arch 'sw'"):
        bb.init_weights()


def test_deploy_folds_every_bn_after_a_conv(model, fixture):
    import copy
    x = fixture['inputs']['256x512']
    ref = three_outputs(model, x)
    deployed = copy.deepcopy(model)
    n = fold_conv_bn(deployed)
    deployed.backbone.switch_to_deploy()  # idempotent: nothing left to fold
    assert fold_conv_bn(deployed) == 0
    convs_then_bn = [m for m in model.modules() if m.__class__.__name__ == 'ConvModule'
                     and m.with_norm and m.order[0] == 'conv']
    assert n == len(convs_then_bn) + 3  # + the BN after the 3x3 conv of each segment head
    got = three_outputs(deployed, x)
    for g, e in zip(got, ref):
        assert max_rel_error(g, e) <= 1e-5
    with torch.no_grad():
        assert max_rel_error(deployed(x, mode='tensor'), ref[1]) <= 1e-5


def test_fold_refuses_training_mode():
    bb = BEVANet('s').train()
    with pytest.raises(RuntimeError, match='eval'):
        fold_conv_bn(bb)


def test_batch_of_one_in_training_explains():
    bb = BEVANet('s').train()
    with pytest.raises(ValueError, match='batch size >= 2 per device'):
        bb(torch.randn(1, 3, 64, 64))
    outs = bb(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 8, 8), (2, 128, 8, 8), (2, 64, 8, 8)]
    bb.eval()
    assert bb(torch.randn(1, 3, 64, 64)).shape == (1, 128, 8, 8)


def test_arch_errors():
    with pytest.raises(ValueError, match='unknown BEVANet arch'):
        BEVANet('xl')
    with pytest.raises(ValueError, match='needs'):
        BEVANet(dict(channels=32))
    with pytest.raises(ValueError, match='unsupported attention kernel size'):
        BEVANet(dict(channels=16, ppm_channels=32, num_blocks=[1, 1, 1], semantic_kernel_size=9))


def test_explicit_arch_matches_named():
    with torch.device('meta'):
        a = BEVANet('sw').state_dict()
        b = BEVANet(dict(channels=64, ppm_channels=96, num_blocks=[2, 2, 3, 3, 2])).state_dict()
    assert [(k, v.shape) for k, v in a.items()] == [(k, v.shape) for k, v in b.items()]


REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONVERTER = osp.join(REPO, 'tools', 'model_converters', 'bevanet2mmattn.py')
BENCHMARK = osp.join(REPO, 'tools', 'analysis_tools', 'benchmark_bevanet.py')


def official_finetuned_file(fixture, path) -> str:
    """The official fine-tuned layout: ``model.``-prefixed keys plus the loss's class weights."""
    sd = {f'model.{k}': v for k, v in state_dict_from_fixture(fixture).items()}
    sd['sem_loss.criterion.weight'] = torch.ones(19)
    torch.save(sd, path)
    return str(path)


def test_converter_output_loads_strictly_into_the_config_segmentor(fixture, tmp_path):
    import runpy

    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS
    src = official_finetuned_file(fixture, tmp_path / 'BEVANet_S_VAL_Cityscapes.pt')
    dst = str(tmp_path / 'bevanet-s_cityscapes.pth')
    runpy.run_path(CONVERTER)['main']([src, dst])
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['arch'] == 's' and ckpt['meta']['dropped'] == ['sem_loss.criterion.weight']
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'bevanet',
                                   'bevanet-s_1xb12-500e_cityscapes-1024x1024.py'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        seg = MODELS.build(cfg.model)
    load_checkpoint(seg, dst, strict=True)
    seg.eval()
    with torch.no_grad():
        main = seg(fixture['inputs']['256x512'], mode='tensor')
    assert max_rel_error(main, fixture['outputs']['256x512'][1]) <= TOL


def test_converter_refuses_another_arch_naming_both(fixture, tmp_path):
    import runpy
    src = official_finetuned_file(fixture, tmp_path / 'BEVANet_S_VAL_Cityscapes.pt')
    dst = tmp_path / 'out.pth'
    config = osp.join(REPO, 'configs', 'bevanet', 'bevanet-base_2xb6-500e_cityscapes-1024x1024.py')
    with pytest.raises(SystemExit, match=r"holds BEVANet arch 's' but .* builds BEVANet arch "
                                         r"'base'"):
        runpy.run_path(CONVERTER)['main']([src, str(dst), '--config', config])
    assert not dst.exists()


def test_benchmark_script_smoke():
    import runpy
    rows = runpy.run_path(BENCHMARK)['main'](
        ['--archs', 's', '--sizes', '64x96', '--device', 'cpu', '--threads', '1', '--iters', '1',
         '--warmup', '0', '--flops'])
    (row, ) = rows
    assert row['arch'] == 's' and row['ms_train'] > 0 and row['ms_deploy'] > 0
    assert row['max_rel_diff'] <= 1e-5 and row['folded_bn'] > 0 and row['gmacs'] > 0
    assert abs(row['params_M'] - 15.091) < 0.01  # the official deploy count of BEVANet-S (spec)


def test_pixel_mean_cross_entropy_is_the_official_aux_loss():
    """Class-weighted CE averaged over all pixels, ignored ones counting 0 (by hand)."""
    from mmattn.models.heads.bevanet_head import PixelMeanCrossEntropyLoss
    score = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 3.0]]]])  # (1, 2, 1, 3)
    label = torch.tensor([[[0, 1, 255]]])
    loss = PixelMeanCrossEntropyLoss(class_weight=[0.5, 2.0], loss_weight=0.4)
    p0 = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    p1 = -torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[1]
    expected = 0.4 * (0.5 * p0 + 2.0 * p1 + 0.0) / 3
    assert torch.allclose(loss(score, label, ignore_index=255), expected)
