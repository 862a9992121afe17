"""Agent-Swin and SLAB-Swin: parity with the official code, checkpoints, PRepBN, layers."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmattn.models.backbones.swin_family import (AgentSwinTransformer, SLABSwinTransformer,
                                                 SwinBlock, _parse_attn_type, convert_agent_swin,
                                                 convert_slab_swin)
from mmattn.models.layers.agent_attention import AgentAttention
from mmattn.models.layers.linear_attention import SimplifiedLinearAttention
from mmattn.models.layers.prepbn import LinearNorm, RepBN, TokenBatchNorm, switch_to_deploy
from mmattn.testing import generate, load_fixture, max_rel_error, state_dict_from_fixture
from mmattn.testing.runs import short_run_config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOL = 1e-4
FAMILIES = {'agent_swin': (AgentSwinTransformer, convert_agent_swin),
            'slab_swin': (SLABSwinTransformer, convert_slab_swin)}


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _fx(name):
    return load_fixture(name)


# --------------------------------------------------------------------------------------------
# official state_dict layouts, derived from the spec (checked against the tiny fixtures)
# --------------------------------------------------------------------------------------------
def official_layout(family: str, arch: str, kind: str):
    """(key, shape, dtype, role) of the official checkpoint: kind 'dense' or 'cls'."""
    cls_ = FAMILIES[family][0]
    s = cls_.arch_zoo[arch]
    c0, depths, heads = s['embed_dims'], s['depths'], s['num_heads']
    spec = []

    def add(key, shape, role='param', dtype='float32'):
        spec.append((key, tuple(shape), dtype, role))

    def norm(prefix, dim):
        if family == 'agent_swin':
            add(prefix + '.weight', (dim,))
            add(prefix + '.bias', (dim,))
            return
        for b in (('warm', 'iter', 'total_step') if kind == 'cls' else ('iter', 'total_step')):
            add(f'{prefix}.{b}', (), 'buffer', 'int64')
        add(prefix + '.norm1.weight', (dim,))
        add(prefix + '.norm1.bias', (dim,))
        add(prefix + '.norm2.alpha', (1,))
        add(prefix + '.norm2.bn.weight', (dim,))
        add(prefix + '.norm2.bn.bias', (dim,))
        add(prefix + '.norm2.bn.running_mean', (dim,), 'running_mean')
        add(prefix + '.norm2.bn.running_var', (dim,), 'running_var')
        add(prefix + '.norm2.bn.num_batches_tracked', (), 'num_batches_tracked', 'int64')

    if kind == 'dense':
        for i in range(4):
            add(f'norm{i}.weight', (c0 * 2 ** i,))
            add(f'norm{i}.bias', (c0 * 2 ** i,))
    add('patch_embed.proj.weight', (c0, 3, 4, 4))
    add('patch_embed.proj.bias', (c0,))
    norm('patch_embed.norm', c0)
    if family == 'agent_swin':
        letters = _parse_attn_type(s['attn_type'], depths, 'A', 'B')
    else:
        letters = _parse_attn_type('LLSS', depths, 'L', 'S')
    for i in range(4):
        c, h, res = c0 * 2 ** i, heads[i], 56 // 2 ** i
        p2 = (9, 16, 49, 49)[i]
        for j, letter in enumerate(letters[i]):
            pre = f'layers.{i}.blocks.{j}.'
            norm(pre + 'norm1', c)
            if letter == 'A':
                add(pre + 'attn.an_bias', (h, p2, 7, 7))
                add(pre + 'attn.na_bias', (h, p2, 7, 7))
                add(pre + 'attn.ah_bias', (1, h, p2, res, 1))
                add(pre + 'attn.aw_bias', (1, h, p2, 1, res))
                add(pre + 'attn.ha_bias', (1, h, res, 1, p2))
                add(pre + 'attn.wa_bias', (1, h, 1, res, p2))
            elif letter == 'L':
                add(pre + 'attn.positional_encoding', (1, res * res, c))
            else:
                add(pre + 'attn.relative_position_bias_table', (169, h))
                add(pre + 'attn.relative_position_index', (49, 49), 'derived', 'int64')
                if kind == 'cls' and j % 2 and res > 7:
                    add(pre + 'attn_mask', ((res // 7) ** 2, 49, 49), 'derived')
            add(pre + 'attn.qkv.weight', (3 * c, c))
            add(pre + 'attn.qkv.bias', (3 * c,))
            add(pre + 'attn.proj.weight', (c, c))
            add(pre + 'attn.proj.bias', (c,))
            if letter == 'A':
                add(pre + 'attn.dwc.weight', (c, 1, 3, 3))
                add(pre + 'attn.dwc.bias', (c,))
            elif letter == 'L':
                add(pre + 'attn.dwc.weight', (c // h, 1, 5, 5))
                add(pre + 'attn.dwc.bias', (c // h,))
            norm(pre + 'norm2', c)
            add(pre + 'mlp.fc1.weight', (4 * c, c))
            add(pre + 'mlp.fc1.bias', (4 * c,))
            add(pre + 'mlp.fc2.weight', (c, 4 * c))
            add(pre + 'mlp.fc2.bias', (c,))
        if i < 3:
            add(f'layers.{i}.downsample.reduction.weight', (2 * c, 4 * c))
            norm(f'layers.{i}.downsample.norm', 4 * c)
    if kind == 'cls':
        norm('norm', c0 * 8)
        add('head.weight', (1000, c0 * 8))
        add('head.bias', (1000,))
    return spec


def generated_state_dict(spec, kind, seed=0):
    """Weights for a layout: fixture rule for generated roles, schedule counters as official."""
    sd = {}
    step = 60000 if kind == 'cls' else 300000
    for key, shape, dtype, role in spec:
        if role == 'derived':
            continue
        if role == 'buffer':
            sd[key] = torch.tensor(0 if key.endswith('warm') else step, dtype=torch.long)
        else:
            sd[key] = generate(key, shape, dtype, role, seed)
    return sd


@pytest.mark.parametrize('name', ['agent_swin_t.dense', 'agent_swin_t.cls', 'slab_swin_t.dense',
                                  'slab_swin_t.cls'])
def test_official_layout_derivation_matches_fixture(name):
    """Names, shapes and dtypes match exactly; roles too, except that the re-issued SLAB fixtures
    store calibrated BatchNorm statistics verbatim (role 'buffer' instead of the generated
    'running_mean' / 'running_var')."""
    fx = _fx(name)
    family, kind = name.split('_t.')
    derived = {k: (tuple(s), d, r) for k, s, d, r in official_layout(family, 'tiny', kind)}
    stored = {k: (tuple(s), d, r) for k, s, d, r in fx['spec']}
    assert derived.keys() == stored.keys(), (sorted(derived.keys() - stored.keys())[:5],
                                             sorted(stored.keys() - derived.keys())[:5])
    for key, (shape, dtype, role) in derived.items():
        assert stored[key][:2] == (shape, dtype), (key, stored[key], (shape, dtype))
        calibrated = role in ('running_mean', 'running_var') and stored[key][2] == 'buffer'
        assert stored[key][2] == role or (family == 'slab_swin' and calibrated), \
            (key, stored[key][2], role)
    if family == 'slab_swin':  # every BatchNorm statistic is a stored calibrated buffer
        stats = [k for k, (_, _, r) in derived.items() if r in ('running_mean', 'running_var')]
        assert stats and all(k in fx['buffers'] for k in stats)


# --------------------------------------------------------------------------------------------
# parity with the official outputs (tiny fixtures)
# --------------------------------------------------------------------------------------------
def _dense_model(family, arch='tiny', **kw):
    cls_, convert = FAMILIES[family]
    return cls_(arch=arch, **kw), convert


@pytest.mark.parametrize('family', ['agent_swin', 'slab_swin'])
def test_dense_parity(family):
    fx = _fx(f'{family}_t.dense')
    model, convert = _dense_model(family)
    model.load_state_dict(convert(state_dict_from_fixture(fx)), strict=True)
    model.eval()
    with torch.no_grad():
        for size in ('224x224', '256x320'):
            err = max_rel_error(model(fx['inputs'][size]), fx['outputs'][size])
            print(f'{family} dense {size}: max rel err {err:.2e}')
            assert err <= TOL, (size, err)


def _cls_trunk(family):
    """Backbone in classifier mode + the classifier's final norm, for the logits."""
    fx = _fx(f'{family}_t.cls')
    sd = state_dict_from_fixture(fx)
    if family == 'agent_swin':
        model = AgentSwinTransformer('tiny', out_indices=(3,), clamp_windows=True,
                                     downstream_agent_shapes=((3, 3), (4, 4), (7, 7), (7, 7)))
        final_norm = nn.LayerNorm(768)
    else:
        model = SLABSwinTransformer('tiny', out_indices=(3,), clamp_windows=True)
        final_norm = LinearNorm(768)
    missing, unexpected = model.load_state_dict(convert_agent_swin(sd) if family == 'agent_swin'
                                                else convert_slab_swin(sd), strict=False)
    assert sorted(missing) == ['norm3.bias', 'norm3.weight'] and not unexpected
    final_norm.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith('norm.')})
    model.norm3 = final_norm
    head = nn.Linear(768, 1000)
    head.load_state_dict({'weight': sd['head.weight'], 'bias': sd['head.bias']})
    return fx, model.eval(), head


@pytest.mark.parametrize('family', ['agent_swin', 'slab_swin'])
def test_classifier_trunk_parity(family):
    fx, model, head = _cls_trunk(family)
    with torch.no_grad():
        feat = model(fx['inputs']['224x224'])[0]
        logits = head(feat.flatten(2).mean(-1))
    err = max_rel_error(logits, fx['outputs']['224x224'])
    print(f'{family} cls 224x224: max rel err {err:.2e}')
    assert err <= TOL, err


# --------------------------------------------------------------------------------------------
# small / base: official layouts load completely, run at any size, use only validated paths
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('family', ['agent_swin', 'slab_swin'])
@pytest.mark.parametrize('arch', ['small', 'base'])
def test_small_base_official_layout_loads_and_runs(family, arch):
    model, convert = _dense_model(family, arch)
    sd = generated_state_dict(official_layout(family, arch, 'dense'), 'dense')
    model.load_state_dict(convert(sd), strict=True)
    model.eval()
    c0 = model.num_features[0]
    with torch.no_grad():
        for hw in ((224, 224), (93, 131)):
            outs = model(torch.randn(1, 3, *hw))
            exp = [(1, c0 * 2 ** i, -(-hw[0] // 2 ** (i + 2)), -(-hw[1] // 2 ** (i + 2)))
                   for i in range(4)]
            assert [tuple(o.shape) for o in outs] == exp
            assert all(torch.isfinite(o).all() for o in outs)
    # the classifier layout loads too (head / final norm / derived buffers dropped)
    cls_sd = generated_state_dict(official_layout(family, arch, 'cls'), 'cls')
    missing, unexpected = model.load_state_dict(convert(cls_sd), strict=False)
    assert sorted(missing) == sorted(f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    assert not unexpected


def _block_kinds(model):
    kinds = set()
    for i, stage in enumerate(model.layers):
        for j, blk in enumerate(stage.blocks):
            attn = blk.attn
            if blk.mixer == 'agent':
                kinds.add(('agent', i, attn.agent_num, attn.agent_shape, attn.bias_resolution))
            else:
                kinds.add((blk.mixer, i, blk.window_size, bool(blk.shift_size)))
    return kinds


@pytest.mark.parametrize('family', ['agent_swin', 'slab_swin'])
@pytest.mark.parametrize('arch', ['small', 'base'])
def test_small_base_use_only_tiny_block_kinds(family, arch):
    """Every (mixer, stage, window, shift / agent grid) of S and B is one the tiny fixtures
    validate (Agent-Swin-T or SLAB-Swin-T), apart from widths, head counts and depths; e.g.
    Agent-S/B's stage-2 'B' blocks are the (shifted) window blocks of SLAB-T's stage 2."""
    tiny = _block_kinds(AgentSwinTransformer('tiny')) | _block_kinds(SLABSwinTransformer('tiny'))
    big, _ = _dense_model(family, arch)
    assert _block_kinds(big) - tiny == set()


def test_attn_types_per_arch():
    assert AgentSwinTransformer('tiny').attn_type == 'AAAB'
    assert AgentSwinTransformer('small').attn_type == 'AABB'
    base = AgentSwinTransformer('base')
    assert base.attn_type == 'AAMB2'
    mixers = [[b.mixer for b in st.blocks] for st in base.layers]
    assert mixers[2][:2] == ['agent', 'agent'] and set(mixers[2][2:]) == {'window'}
    assert [len(m) for m in mixers] == [2, 2, 18, 2]
    # shift counted from the stage start, 'A' blocks included: block 3 shifted, 2 not
    assert [b.shift_size for b in base.layers[2].blocks[:5]] == [0, 0, 0, 3, 0]
    assert [st.blocks[0].attn.num_heads for st in base.layers] == [4, 8, 16, 32]
    slab = SLABSwinTransformer('small')
    assert [[b.mixer for b in st.blocks][0] for st in slab.layers] == ['linear', 'linear',
                                                                       'window', 'window']
    assert [st.blocks[1].shift_size for st in slab.layers] == [28, 14, 3, 3]
    with pytest.raises(ValueError, match='attn_type'):
        AgentSwinTransformer('tiny', attn_type='AAXB')


# --------------------------------------------------------------------------------------------
# oracle for the Swin skeleton and the 'B' / 'S' blocks: mmdet's SwinTransformer
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', [
    dict(embed_dims=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24)),
    dict(embed_dims=128, depths=(2, 2, 3, 2), num_heads=(4, 8, 16, 32))])
def test_window_blocks_match_mmdet_swin(arch):
    mmdet_swin = pytest.importorskip('mmdet.models.backbones.swin')
    torch.manual_seed(0)
    ours = AgentSwinTransformer(arch, attn_type='BBBB').eval()
    with torch.no_grad():  # non-trivial norms
        for name, p in ours.named_parameters():
            if 'norm' in name:
                p.add_(0.1 * torch.randn_like(p))
    ref = mmdet_swin.SwinTransformer(embed_dims=arch['embed_dims'], depths=arch['depths'],
                                     num_heads=arch['num_heads'], window_size=7)
    ref.eval()  # mmdet's train() returns None
    sd = {k[len('backbone.'):]: v for k, v in mmdet_swin.swin_converter(ours.state_dict()).items()}
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith('relative_position_index') for k in missing)
    with torch.no_grad():
        for hw in ((224, 224), (97, 131)):
            x = torch.randn(2, 3, *hw)
            err = max_rel_error(ours(x), ref(x))
            print(f'window blocks vs mmdet Swin {arch["embed_dims"]} {hw}: {err:.2e}')
            assert err <= 1e-5, (hw, err)


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('family', ['agent_swin', 'slab_swin'])
def test_init_cfg_loads_official_checkpoints(family, tmp_path):
    from mmattn.registry import MODELS
    from mmattn.utils.checkpoint import CheckpointError
    fx = _fx(f'{family}_t.dense')
    name = 'mmattn.AgentSwinTransformer' if family == 'agent_swin' else 'mmattn.SLABSwinTransformer'
    dense_sd = state_dict_from_fixture(fx)
    det = {'state_dict': {'backbone.' + k: v for k, v in dense_sd.items()},
           'meta': {}}
    det['state_dict']['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    torch.save(det, tmp_path / 'det.pth')
    model = MODELS.build(dict(type=name, arch='tiny', init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'det.pth'), prefix='backbone.')))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        assert max_rel_error(model(fx['inputs']['256x320']), fx['outputs']['256x320']) <= TOL

    # detector checkpoint without prefix: the backbone is found under 'backbone.'
    found = MODELS.build(dict(type=name, arch='tiny', init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'det.pth'))))
    found.init_weights()
    assert all(torch.equal(found.state_dict()[k], v) for k, v in model.state_dict().items())
    # a prefix the file does not have: one clear error
    bad = MODELS.build(dict(type=name, init_cfg=dict(type='Pretrained', prefix='detector.',
                                                     checkpoint=str(tmp_path / 'det.pth'))))
    with pytest.raises(CheckpointError, match=r"det\.pth: no keys under prefix 'detector\.'"):
        bad.init_weights()

    # classifier checkpoint {'model': sd}: trunk loaded, output norms stay at init
    cls_fx = _fx(f'{family}_t.cls')
    cls_sd = state_dict_from_fixture(cls_fx)
    torch.save({'model': cls_sd, 'epoch': 300}, tmp_path / 'cls.pth')
    model = MODELS.build(dict(type=name, init_cfg=dict(type='Pretrained',
                                                       checkpoint=str(tmp_path / 'cls.pth'))))
    model.init_weights()
    own = model.state_dict()
    for k, v in convert_agent_swin(cls_sd).items() if family == 'agent_swin' else \
            convert_slab_swin(cls_sd).items():
        assert torch.equal(own[k], v), k
    if family == 'slab_swin':
        assert int(own['layers.0.blocks.0.norm1.iter']) == 60000  # counters come along

    # wrong arch: an error naming the file and the keys
    small = MODELS.build(dict(type=name, arch='small', init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'cls.pth'))))
    with pytest.raises(CheckpointError, match=r'cls\.pth does not fit this \w+.*missing keys'):
        small.init_weights()

    # init_cfg as a list (used to be ignored): the other entries apply, then the checkpoint
    listed = MODELS.build(dict(type=name, init_cfg=[
        dict(type='Constant', layer='LayerNorm', val=2.0, bias=0.5),
        dict(type='Pretrained', checkpoint=str(tmp_path / 'cls.pth'))]))
    listed.init_weights()
    own = listed.state_dict()
    assert torch.equal(own['layers.0.blocks.0.mlp.fc1.weight'],
                       cls_sd['layers.0.blocks.0.mlp.fc1.weight'])
    assert torch.all(own['norm0.weight'] == 2.0)  # not in the classifier file: Constant init


@pytest.mark.parametrize('family', ['agent_swin', 'slab_swin'])
def test_converter_script(family, tmp_path):
    fx = _fx(f'{family}_t.dense')
    sd = state_dict_from_fixture(fx)
    torch.save({'state_dict': {'backbone.' + k: v for k, v in sd.items()},
                'meta': {'epoch': 12}}, tmp_path / 'det.pth')
    script = osp.join(REPO, 'tools', 'model_converters', f'{family}2mmattn.py')
    subprocess.run([sys.executable, script, str(tmp_path / 'det.pth'), str(tmp_path / 'out.pth')],
                   check=True, cwd=REPO, capture_output=True)
    out = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    model, _ = _dense_model(family)
    model.load_state_dict({k[9:]: v for k, v in out.items() if k.startswith('backbone.')},
                          strict=True)
    model.eval()
    with torch.no_grad():
        assert max_rel_error(model(fx['inputs']['224x224']), fx['outputs']['224x224']) <= TOL

    cls_sd = state_dict_from_fixture(_fx(f'{family}_t.cls'))
    torch.save({'model': cls_sd}, tmp_path / 'cls.pth')
    subprocess.run([sys.executable, script, str(tmp_path / 'cls.pth'), str(tmp_path / 'out2.pth')],
                   check=True, cwd=REPO, capture_output=True)
    out = torch.load(tmp_path / 'out2.pth', weights_only=True)['state_dict']
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert not unexpected and sorted(missing) == sorted(
        f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))


@pytest.mark.parametrize('family', ['agent_swin', 'slab_swin'])
def test_converter_refuses_empty_and_other_models(family, tmp_path):
    """An empty checkpoint, the other family's checkpoint and a PoolFormer's (same stem key
    name): an error naming the file, and no output."""
    other = 'slab_swin' if family == 'agent_swin' else 'agent_swin'
    import runpy
    convert = runpy.run_path(osp.join(REPO, 'tools', 'model_converters', 'convert.py'))['main']
    torch.save({}, tmp_path / 'empty.pth')
    torch.save({'state_dict': {}, 'meta': {}}, tmp_path / 'empty_sd.pth')
    torch.save({'model': state_dict_from_fixture(_fx(f'{other}_t.cls'))}, tmp_path / 'other.pth')
    from mmattn.models.backbones.poolformer import PoolFormer
    torch.save(PoolFormer('s12').state_dict(), tmp_path / 'poolformer.pth')
    for name in ('empty.pth', 'empty_sd.pth', 'other.pth', 'poolformer.pth'):
        out = tmp_path / f'out_{name}'
        with pytest.raises(SystemExit, match=f'{name}: cannot convert'):
            convert(['--model', family, str(tmp_path / name), str(out)])
        assert not out.exists()


def test_slab_detection_checkpoint_gets_warm_counters():
    sd = state_dict_from_fixture(_fx('slab_swin_t.dense'))
    out = convert_slab_swin(sd)
    assert 'patch_embed.norm.warm' not in sd and int(out['patch_embed.norm.warm']) == 0
    assert all(k[:-4] + 'iter' in out for k in out if k.endswith('.warm'))


# --------------------------------------------------------------------------------------------
# PRepBN
# --------------------------------------------------------------------------------------------
def _calibrated_slab_tiny():
    """SLAB-Swin-T with the fixture weights and BN statistics re-estimated on one batch (as the
    official recipe's final BN-statistics epochs do), so that eval-mode RepBN normalises."""
    fx = _fx('slab_swin_t.dense')
    model = SLABSwinTransformer('tiny', norm_eval=False)
    model.load_state_dict(convert_slab_swin(state_dict_from_fixture(fx)))
    for m in model.modules():
        if isinstance(m, LinearNorm):
            m.set_step(m.total_step)  # lam = 0: RepBN only
        if isinstance(m, nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        model(torch.randn(2, 3, 224, 224))
    return model.eval()


def test_slab_switch_to_deploy_is_exact():
    model = _calibrated_slab_tiny()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        before = model(x)
        model.switch_to_deploy()
        after = model(x)
    assert not any(isinstance(m, (LinearNorm, RepBN)) for m in model.modules())
    assert sum(isinstance(m, TokenBatchNorm) for m in model.modules()) == 1 + 2 * 12 + 3
    err = max_rel_error(after, before)
    print(f'SLAB-Swin-T deploy vs RepBN: max rel err {err:.2e}')
    assert err <= 1e-5


def test_repbn_fuse_matches_formula():
    torch.manual_seed(0)
    m = RepBN(8).eval()
    m.bn.running_mean.normal_()
    m.bn.running_var.uniform_(0.5, 2)
    m.bn.weight.data.normal_()
    m.bn.bias.data.normal_()
    m.alpha.data.fill_(0.7)
    x = torch.randn(2, 5, 8)
    ref = (x - m.bn.running_mean) / torch.sqrt(m.bn.running_var + m.bn.eps) * m.bn.weight \
        + m.bn.bias + 0.7 * x
    assert torch.allclose(m(x), ref, atol=1e-6)
    assert torch.allclose(m.fuse()(x), ref, atol=1e-5)  # fused module keeps eval mode
    seq = switch_to_deploy(nn.Sequential(m, nn.Sequential(LinearNorm(8).eval())))
    assert isinstance(seq[0], TokenBatchNorm) and isinstance(seq[1][0], TokenBatchNorm)
    assert not seq[0].training and torch.allclose(seq[0](x), ref, atol=1e-5)


def _self_stepping_lams(warm, total, r0, steps):
    m = LinearNorm(4, step=total, warm=warm, r0=r0).train()
    lams = []
    for _ in range(steps):
        lams.append(m.lam)
        m(torch.randn(2, 3, 4))
    return lams


def test_linear_norm_schedule_and_blend():
    # official: warm LN-only forwards, then lam = r0 * iter / total, iter counting down to 0
    lams = _self_stepping_lams(warm=2, total=4, r0=1.0, steps=9)
    assert lams == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]
    # set_step(t) reproduces the counters of t self-advancing forwards
    for t in range(9):
        m = LinearNorm(4, step=4, warm=2)
        m.set_step(t, warmup=2, total=4)
        assert m.lam == lams[t], t
    torch.manual_seed(0)
    m = LinearNorm(6, step=10)
    m.set_step(4, total=10)
    m.train()
    m.self_step = False
    x = torch.randn(3, 7, 6)
    ln = F.layer_norm(x, (6,), m.norm1.weight, m.norm1.bias, 1e-5)
    bn = F.batch_norm(x.reshape(-1, 6), None, None, m.norm2.bn.weight, m.norm2.bn.bias, True,
                      0.0, 1e-5).reshape(3, 7, 6) + m.norm2.alpha * x
    assert torch.allclose(m(x), 0.6 * ln + 0.4 * bn, atol=1e-5)
    assert int(m.iter) == 6  # not advanced when driven externally
    m.eval()
    assert torch.allclose(m(x), m.norm2(x))


def test_prepbn_hook_drives_schedule():
    from mmattn.engine import PRepBNHook
    from mmattn.registry import HOOKS

    class _Runner:
        max_iters = 10
        iter = 0

        def __init__(self, model):
            import logging
            self.model = model
            self.logger = logging.getLogger('test')

    model = nn.Sequential(LinearNorm(4, step=300000), nn.Sequential(LinearNorm(4)))
    hook = HOOKS.build(dict(type='mmattn.PRepBNHook', total_iters=0.4, warmup_iters=2))
    assert isinstance(hook, PRepBNHook)
    runner = _Runner(model)
    hook.before_train(runner)
    seen = []
    for it in range(9):
        runner.iter = it
        hook.before_train_iter(runner, it)
        model.train()
        for _ in range(3):  # several forwards per step (checkpointing, accumulation)
            model(torch.randn(2, 3, 4))
        seen.append(model[0].lam)
        assert model[1][0].lam == model[0].lam
    assert seen == _self_stepping_lams(warm=2, total=4, r0=1.0, steps=9)
    with pytest.raises(RuntimeError, match='no PRepBN'):
        hook.before_train(_Runner(nn.Linear(2, 2)))


def test_slab_norm_eval_and_frozen_stages():
    model = SLABSwinTransformer('tiny', frozen_stages=2)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns and not any(m.training for m in bns)
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[1].blocks.parameters())
    assert not any(p.requires_grad for p in model.layers[0].downsample.parameters())
    assert not model.layers[1].blocks.training and not model.norm1.training
    # the merging after stage 1 feeds stage 2: it trains (mmdet's Swin would freeze it)
    assert all(p.requires_grad for p in model.layers[1].downsample.parameters())
    assert all(p.requires_grad for p in model.layers[2].parameters())
    assert model.layers[2].training and model.norm2.training
    model = SLABSwinTransformer('tiny', norm_eval=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm1d))


def test_training_step_runs_with_checkpointing():
    model = AgentSwinTransformer(dict(embed_dims=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8)),
                                 attn_type='AAAB', with_cp=True, drop_path_rate=0.1).train()
    outs = model(torch.randn(2, 3, 70, 90))
    sum(o.mean() for o in outs).backward()
    assert model.layers[0].blocks[0].attn.an_bias.grad is not None
    slab = SLABSwinTransformer(dict(embed_dims=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8)),
                               with_cp=True).train()
    outs = slab(torch.randn(2, 3, 70, 90))
    sum(o.mean() for o in outs).backward()
    assert slab.layers[1].blocks[1].attn.positional_encoding.grad is not None


# --------------------------------------------------------------------------------------------
# the two attentions as plain modules, against literal transcriptions of the papers' math
# --------------------------------------------------------------------------------------------
def _agent_attention_naive(m: AgentAttention, x, hw):
    """Spec section 3 step by step: separate interpolations per bias term, explicit softmax."""
    b, n, c = x.shape
    h, w = hw
    nh, d, p = m.num_heads, m.head_dim, m.pool_size
    a1, a2 = m.agent_shape
    q, k, v = m.qkv(x).chunk(3, dim=-1)
    agents = F.adaptive_avg_pool2d(q.permute(0, 2, 1).reshape(b, c, h, w), (a1, a2))
    agents = agents.reshape(b, c, -1).permute(0, 2, 1)

    def heads(t):
        return t.reshape(b, t.shape[1], nh, d).permute(0, 2, 1, 3)

    q, k, v, agents = heads(q), heads(k), heads(v), heads(agents)

    def resize(t, size):
        return F.interpolate(t, size=size, mode='bilinear', align_corners=False)

    def grid(t):  # (H, p*p, h, w) -> (H, h*w, a1*a2)
        t = t.reshape(nh, p, p, h * w).permute(0, 3, 1, 2)
        return resize(t, (a1, a2)).reshape(nh, h * w, a1 * a2)

    pb = grid(resize(m.an_bias, (h, w))) + grid(resize((m.ah_bias + m.aw_bias)[0], (h, w)))
    ab = grid(resize(m.na_bias, (h, w))) + grid(
        resize((m.ha_bias + m.wa_bias)[0].permute(0, 3, 1, 2), (h, w)))
    attn = torch.softmax(agents * m.scale @ k.transpose(-2, -1) + pb.transpose(1, 2), -1)
    agent_v = attn @ v
    attn = torch.softmax(q * m.scale @ agents.transpose(-2, -1) + ab, -1)
    out = (attn @ agent_v).transpose(1, 2).reshape(b, n, c)
    out = out + m.dwc(v.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)).flatten(2).mT
    return m.proj(out)


@pytest.mark.parametrize('hw,agent_shape', [((14, 14), None), ((9, 13), (5, 5)),
                                            ((20, 11), (4, 6))])
def test_agent_attention_module(hw, agent_shape):
    torch.manual_seed(0)
    m = AgentAttention(24, 3, agent_num=9, bias_resolution=14, agent_shape=agent_shape).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, hw[0] * hw[1], 24)
    with torch.no_grad():
        out = m(x, hw)
        assert out.shape == x.shape
        assert max_rel_error(out, _agent_attention_naive(m, x, hw)) <= 1e-5
    with pytest.raises(ValueError, match='hw_shape'):
        m(x, (hw[0] + 1, hw[1]))


def test_agent_attention_fused_and_plain_paths_agree():
    from mmattn.models.layers.agent_attention import _attention
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 81, 41), torch.randn(2, 3, 300, 41), torch.randn(2, 3, 300, 32)
    a = _attention(q * 41 ** -0.5, k, v, 0.0, fused=True)
    b = _attention(q * 41 ** -0.5, k, v, 0.0, fused=False)
    assert max_rel_error(a, b) <= 1e-5


def test_simplified_linear_attention_module():
    torch.manual_seed(0)
    m = SimplifiedLinearAttention(24, 3, window_size=(4, 5), kernel_size=5).eval()
    with torch.no_grad():
        m.positional_encoding.normal_()
    x = torch.randn(3, 20, 24)
    with torch.no_grad():
        out = m(x)
        q, k, v = m.qkv(x).chunk(3, -1)
        q, k = F.relu(q), F.relu(k + m.positional_encoding)
        heads = [slice(8 * i, 8 * (i + 1)) for i in range(3)]
        ref = []
        for sl in heads:
            qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]
            sim = qh @ kh.transpose(1, 2)  # quadratic form of the same attention
            o = sim @ vh / (sim.sum(-1, keepdim=True) + 1e-6)
            vm = vh.transpose(1, 2).reshape(3, 8, 4, 5)
            ref.append(o + m.dwc(vm).flatten(2).transpose(1, 2))
        ref = m.proj(torch.cat(ref, -1))
    assert out.shape == x.shape
    assert max_rel_error(out, ref) <= 1e-5
    with pytest.raises(ValueError, match='window'):
        m(torch.randn(1, 16, 24))


def test_swin_block_rejects_bad_config():
    with pytest.raises(ValueError, match='mixer'):
        SwinBlock(8, 2, mixer='conv')
    with pytest.raises(ValueError, match='shift'):
        SwinBlock(8, 2, mixer='window', window_size=7, shift_size=7)


# --------------------------------------------------------------------------------------------
# configs: two training iterations on the bundled sample data
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'configs/agent_swin/mask-rcnn_agent-swin-t_fpn_sample-coco.py',
    'configs/agent_swin/upernet_agent-swin-t_sample-cityscapes.py',
    'configs/slab_swin/mask-rcnn_slab-swin-t_fpn_prepbn_sample-coco.py'])
def test_sample_config_trains_two_iterations(config, tmp_path):
    import mmattn  # noqa: F401  (config compatibility patches)
    from mmattn.utils.runner import build_runner
    torch.set_num_threads(2)
    cfg = short_run_config(osp.join(REPO, config), tmp_path, num_val=1)
    runner = build_runner(cfg)
    backbone = runner.model.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    runner.train()
    after = backbone.state_dict()
    assert osp.isfile(tmp_path / 'iter_2.pth')
    changed = [k for k, v in after.items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, 'no backbone weight moved in two iterations'
    if 'prepbn' in config:
        norms = [m for m in backbone.modules() if isinstance(m, LinearNorm)]
        # PRepBNHook drove the schedule: step 1 of round(0.8 * 2) = 2 decay steps
        assert norms and all(m.self_step for m in norms)  # handed back after training
        assert all(int(m.total_step) == 2 and int(m.iter) == 1 for m in norms)
        # norm_eval=False: the BatchNorm statistics trained
        assert any(not torch.equal(after[k], before[k])
                   for k in after if k.endswith('running_mean'))
