"""BEVANet: parity with the official ``BEVANet_SEG`` through ``convert_bevanet_official``, official
layouts of every arch, deploy-mode folding, bad input, the CamVid and ADE20K data protocols.

Data (``tests/data/bevanet/README.md`` says how each file was produced):

* ``tests/data/parity/BEVANet_S.seg.pt``: BEVANet-S at 256x512 (see its README);
* ``tests/data/bevanet/official_outputs.pt``: the official ``BEVANet_SEG`` (commit 603205b) run
  on CPU in fp32, every arch at 256x512 (S: in the fixture above) and 200x328 (not a multiple of
  64; the official forward only accepts multiples of 8), with the fixture's weights for S and
  ``mmattn.testing.parity.generate`` (seed 0) weights for the official layout of SW / base / L;
* ``tests/data/bevanet/official_layouts.json.gz``: the state_dict layouts (key, shape) of the
  official ``BEVANet_SEG`` (seg_augment=True) and ``BEVANet_CLS_32`` for the four Cityscapes yaml
  variants, read from the official classes built on the meta device.
"""
import functools
import gzip
import json
import os.path as osp

import pytest
import torch

import mmattn  # noqa: F401
from mmattn.models.backbones.bevanet import (BEVANet, convert_bevanet_official, fold_conv_bn,
                                             guess_bevanet_arch)
from mmattn.testing.marks import fast_first
from mmattn.testing.threads import cpu_threads
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
    torch.set_num_threads(cpu_threads())
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


def test_odd_size_runs_and_eval_is_the_main_branch(model):
    """250x330 (not a multiple of 8): the official forward raises (it reshapes to int(H/8)); here
    feature maps follow the stride-2 convs (ceil) and eval equals the main training branch."""
    x = torch.randn(2, 3, 250, 330, generator=torch.Generator().manual_seed(0))
    aux, main, boundary = three_outputs(model, x)
    assert aux.shape == main.shape == (2, 19, 32, 42) and boundary.shape == (2, 1, 32, 42)
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'), main)
    assert torch.isfinite(main).all() and main.std() > 0


@functools.lru_cache(maxsize=1)
def official_outputs() -> dict:
    return torch.load(osp.join(DATA, 'official_outputs.pt'), weights_only=True)


def official_weights(arch: str) -> dict:
    """The official-layout weights the reference outputs were produced with."""
    if arch == 's':
        return state_dict_from_fixture(load_fixture('BEVANet_S.seg'))
    roles = ('running_mean', 'running_var', 'num_batches_tracked')
    official = {}
    for key, shape in layouts()[arch]['seg']:
        role = key.rsplit('.', 1)[-1]
        role = role if role in roles else 'param'
        dtype = 'int64' if role == 'num_batches_tracked' else 'float32'
        official[key] = generate(key, shape, dtype, role, seed=0)
    return official


def parity_input(size: str) -> torch.Tensor:
    if size == '256x512':
        return load_fixture('BEVANet_S.seg')['inputs'][size]
    h, w = map(int, size.split('x'))
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1000 * h + w))


@pytest.mark.parametrize('arch', fast_first(['s', 'sw', 'base', 'l']))
def test_parity_every_arch_256x512_and_200x328(arch):
    """Full-size S / SW / base / L with the official layout's weights against the official
    outputs at 256x512 and at 200x328 (not a multiple of 64): the eval forward gives ``main``,
    the training branches ``aux`` and ``boundary``."""
    torch.set_num_threads(cpu_threads())
    ref = official_outputs()
    official = official_weights(arch)
    # same weights as the reference run (a change of the generator would show here first)
    checksum = sum(float(v.double().sum()) for v in official.values())
    assert checksum == pytest.approx(ref['weight_checksum'][arch], rel=1e-9)
    with torch.device('meta'):  # no init: every tensor comes from the official weights
        seg = build_segmentor(arch)
    converted, dropped = convert_bevanet_official(official)
    assert not dropped
    seg.load_state_dict(converted, strict=True, assign=True)
    seg.eval()
    assert not any(t.is_meta for t in seg.state_dict().values())
    sizes = ['256x512', '200x328']
    for size in sizes:
        x = parity_input(size)
        if arch == 's' and size == '256x512':
            expected = load_fixture('BEVANet_S.seg')['outputs'][size]
        else:
            # the seeded input of the reference run
            assert (float(x.sum()), float(x.abs().sum())) == pytest.approx(
                ref['input_stats'][size], rel=1e-6)
            expected = ref['outputs'][arch][size]
        got = three_outputs(seg, x)
        for name, g, e in zip(('aux', 'main', 'boundary'), got, expected):
            err = max_rel_error(g, e)
            assert err <= TOL, f'{arch} {size} {name}: {err:.2e}'
        with torch.no_grad():
            err = max_rel_error(seg(x, mode='tensor'), expected[1])
        assert err <= TOL, f'{arch} {size} eval forward: {err:.2e}'


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
    """In float64, so that the check sees the folding and not float32 summation order (which
    moves with the thread count: 1.07e-5 with one thread)."""
    import copy
    model = copy.deepcopy(model).double()
    x = fixture['inputs']['256x512'].double()
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
        assert max_rel_error(g, e) <= 1e-10
    with torch.no_grad():
        assert max_rel_error(deployed(x, mode='tensor'), ref[1]) <= 1e-10


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


# ------------------------------------------------------------------ CamVid and ADE20K protocols
CAMVID_CONFIG = osp.join(REPO, 'configs', 'bevanet', 'bevanet-s_1xb24-100e_camvid-720x960.py')
ADE_CONFIG = osp.join(REPO, 'configs', 'bevanet', 'bevanet-base_1xb14-150e_ade20k-512x512.py')
# the official CamVid.color_list (datasets/camvid.py), class i has colour i
OFFICIAL_CAMVID_COLOURS = [[0, 128, 192], [128, 0, 0], [64, 0, 128], [192, 192, 128],
                           [64, 64, 128], [64, 64, 0], [128, 64, 128], [0, 0, 192],
                           [192, 128, 128], [128, 128, 128], [128, 128, 0]]


def build_dataset(cfg_dataset):
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(cfg_dataset)


def make_camvid(root, names=('0001TP_006690', '0016E5_07959'), size=(72, 96)):
    """A CamVid folder in the official layout: RGB images, colour labels whose 12-pixel blocks
    cycle through the 11 class colours, a colour of another CamVid class and void; PIDNet list
    files. Returns {name: expected class-index label}."""
    import numpy as np
    from PIL import Image
    (root / 'camvid' / 'images').mkdir(parents=True)
    (root / 'camvid' / 'labels').mkdir()
    (root / 'list' / 'camvid').mkdir(parents=True)
    colours = OFFICIAL_CAMVID_COLOURS + [[128, 0, 192], [0, 0, 0]]  # LaneMkgsDriv, Void
    rng = np.random.default_rng(0)
    expected = {}
    for n, name in enumerate(names):
        h, w = size
        index = (np.arange(h)[:, None] // 12 * 8 + np.arange(w)[None] // 12 + n) % len(colours)
        rgb = np.asarray(colours, dtype=np.uint8)[index]
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / 'camvid' / 'images' / f'{name}.png')
        Image.fromarray(rgb).save(root / 'camvid' / 'labels' / f'{name}_L.png')
        expected[name] = np.where(index < 11, index, 255).astype(np.uint8)
    for split in ('train', 'val'):
        (root / 'list' / 'camvid' / f'{split}.lst').write_text(
            ''.join(f'images/{n}.png labels/{n}_L.png\n' for n in names))
    return expected


def test_camvid_config_has_the_official_settings():
    from mmengine.config import Config

    from mmattn.datasets import CamVidDataset
    cfg = Config.fromfile(CAMVID_CONFIG)
    assert cfg.model.backbone.arch == 's' and cfg.model.decode_head.num_classes == 11
    assert CamVidDataset.METAINFO['palette'] == OFFICIAL_CAMVID_COLOURS
    assert len(CamVidDataset.METAINFO['classes']) == 11
    head = cfg.model.decode_head
    assert all('class_weight' not in loss for loss in head.loss_decode)
    assert cfg.train_dataloader.batch_size == 24
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ('SGD', 0.0038, 0.9, 0.0005)
    iters = (367 // 24) * 100
    assert cfg.train_cfg.max_iters == iters == cfg.param_scheduler[0].end
    assert cfg.train_cfg.val_interval == 367 // 24  # every epoch (VALID_LAST_EPOCH 100)
    pipeline = cfg.train_dataloader.dataset.pipeline
    longs = [s[0] for s in pipeline[2].scales]
    assert longs == [int(960 * (0.5 + i / 10) + 0.5) for i in range(17)]
    assert tuple(pipeline[3].size) == (960, 720) and tuple(pipeline[4].crop_size) == (720, 960)
    assert cfg.train_dataloader.dataset.ann_file == '../list/camvid/train.lst'
    assert cfg.val_dataloader.dataset.ann_file == '../list/camvid/val.lst'
    assert cfg.load_from is None  # the yaml's PRETRAINED ""


def test_camvid_dataset_reads_the_official_layout(tmp_path):
    """Official list files and colour labels through the config's own pipelines: the 11 colours
    become their class index, every other colour 255."""
    import random

    import numpy as np
    from mmengine.config import Config
    expected = make_camvid(tmp_path)
    cfg = Config.fromfile(CAMVID_CONFIG)
    val_cfg = cfg.val_dataloader.dataset
    val_cfg.data_root = str(tmp_path / 'camvid')
    ds = build_dataset(val_cfg)
    assert len(ds) == 2 and ds.metainfo['classes'][6] == 'Road'
    for i, name in enumerate(('0001TP_006690', '0016E5_07959')):
        out = ds[i]
        sample = out['data_samples']
        assert sample.img_path.endswith(f'camvid/images/{name}.png')
        assert sample.seg_map_path.endswith(f'camvid/labels/{name}_L.png')
        assert tuple(out['inputs'].shape) == (3, 72, 96)
        assert np.array_equal(sample.gt_sem_seg.data[0].numpy(), expected[name])
    train_cfg = cfg.train_dataloader.dataset
    train_cfg.data_root = str(tmp_path / 'camvid')
    train = build_dataset(train_cfg)
    random.seed(0)
    np.random.seed(0)
    out = train[0]
    label = out['data_samples'].gt_sem_seg.data
    assert tuple(out['inputs'].shape) == (3, 720, 960) and tuple(label.shape) == (1, 720, 960)
    assert set(label.unique().tolist()) <= set(range(11)) | {255}
    assert (label != 255).any() and out['data_samples'].gt_edge_map.data.shape == (1, 720, 960)


def test_camvid_starts_from_a_cityscapes_checkpoint_the_official_way(fixture, tmp_path):
    """``load_from`` = a converted 19-class Cityscapes checkpoint: tools/train.py's check
    passes and every tensor but the two 19-class classifiers loads (official ``get_model``:
    keys whose name and shape match)."""
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    from mmattn.utils.checkpoint import check_checkpoint
    cfg = Config.fromfile(CAMVID_CONFIG)
    camvid = build_segmentor_from(cfg)
    before = {k: v.clone() for k, v in camvid.state_dict().items()}
    cityscapes, _ = convert_bevanet_official(state_dict_from_fixture(fixture))
    path = str(tmp_path / 'bevanet-s_cityscapes.pth')
    torch.save({'state_dict': cityscapes}, path)
    check_checkpoint(camvid, path)
    load_checkpoint(camvid, path, strict=False)
    after = camvid.state_dict()
    classifiers = {f'decode_head.{m}.{p}' for m in ('conv_seg', 'p_cls_seg')
                   for p in ('weight', 'bias')}
    assert set(after) == set(cityscapes)
    for k, v in after.items():
        if k in classifiers:
            assert v.shape[0] == 11 and torch.equal(v, before[k]), k
        else:
            assert torch.equal(v, cityscapes[k]), k


def build_segmentor_from(cfg):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg.model)


def test_ade20k_validation_scores_one_512_crop_at_short_side_640(tmp_path):
    """The official ADE20K validation: short side 640, a random 512x512 crop, scored at the crop
    (the prediction is not resized back to the original image)."""
    import random

    import numpy as np
    from mmengine.config import Config
    from PIL import Image
    root = tmp_path / 'ade'
    (root / 'images' / 'validation').mkdir(parents=True)
    (root / 'annotations' / 'validation').mkdir(parents=True)
    h, w = 300, 450  # -> 640 x 960
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        root / 'images' / 'validation' / 'ADE_val_00000001.jpg')
    label = (np.arange(w)[None].repeat(h, 0) // 3 % 151).astype(np.uint8)  # 0 = "other"
    Image.fromarray(label).save(root / 'annotations' / 'validation' / 'ADE_val_00000001.png')
    cfg = Config.fromfile(ADE_CONFIG)
    ds_cfg = cfg.val_dataloader.dataset
    ds_cfg.data_root = str(root)
    ds = build_dataset(ds_cfg)
    full = label[0, (np.arange(960) * w // 960)].astype(int) - 1
    full[full < 0] = 255
    crops = set()
    for seed in range(4):
        random.seed(seed)
        np.random.seed(seed)
        out = ds[0]
        sample = out['data_samples']
        assert tuple(out['inputs'].shape) == (3, 512, 512)
        assert sample.ori_shape == sample.img_shape == (512, 512)
        gt = sample.gt_sem_seg.data[0].numpy()
        assert gt.shape == (512, 512)
        row = gt[0].astype(int)
        assert (gt == row[None]).all()
        # a 512-wide window of the label resized (nearest) to 960 x 640, zero reduced
        offsets = [o for o in range(960 - 512 + 1) if np.array_equal(row, full[o:o + 512])]
        assert offsets, row[:12]
        crops.add(offsets[0])
    assert len(crops) > 1  # a random crop
    # the segmentor keeps the prediction at the crop (scored against the 512x512 label)
    with torch.device('meta'):
        seg = build_segmentor_from(cfg)
    result = seg.postprocess_result(torch.zeros(1, 150, 512, 512), [sample])[0]
    assert tuple(result.pred_sem_seg.shape) == (512, 512)


def test_official_camvid_checkpoint_converts_and_loads_strictly(fixture, tmp_path):
    """An official fine-tuned CamVid file (``model.`` keys, 11-class classifiers; no loss
    buffer, the CamVid loss has no class weights) loads strictly into the CamVid config."""
    import runpy

    from mmengine.config import Config
    from mmengine.runner import load_checkpoint
    official = state_dict_from_fixture(fixture)
    g = torch.Generator().manual_seed(0)
    for key in ('head.conv2', 'seghead_ds.conv2'):
        official[f'{key}.weight'] = torch.randn(11, 128, 1, 1, generator=g)
        official[f'{key}.bias'] = torch.randn(11, generator=g)
    src = str(tmp_path / 'BEVANet_S_VAL_Camvid.pt')
    torch.save({f'model.{k}': v for k, v in official.items()}, src)
    dst = str(tmp_path / 'bevanet-s_camvid.pth')
    runpy.run_path(CONVERTER)['main']([src, dst, '--config', CAMVID_CONFIG])
    seg = build_segmentor_from(Config.fromfile(CAMVID_CONFIG))
    load_checkpoint(seg, dst, strict=True)
    assert torch.equal(seg.decode_head.conv_seg.weight, official['head.conv2.weight'])
    assert torch.equal(seg.decode_head.p_cls_seg.bias, official['seghead_ds.conv2.bias'])
