"""Shared by the Agent-Swin and SLAB-Swin test modules: official layouts derived from the spec,
fixture helpers, and the tests both families run (each module supplies the ``family`` fixture and
imports them: ``test_agent_swin.py``, ``test_slab_swin.py``)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from mmattn.models.backbones.swin_family import (AgentSwinTransformer, SLABSwinTransformer,
                                                 _parse_attn_type, convert_agent_swin,
                                                 convert_slab_swin)
from mmattn.models.layers.prepbn import LinearNorm
from mmattn.testing import generate, load_fixture, max_rel_error, state_dict_from_fixture

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


def with_cp_step_equals_plain(cls, arch: dict, **kwargs) -> nn.Module:
    """One training step of ``cls(arch, **kwargs)`` on an odd-sized batch (padded windows) with
    drop path on, with and without ``with_cp``, from the same weights and random draws: outputs
    and every gradient equal (<= 1e-6 relative). Returns the checkpointed model (gradients set)."""
    x = torch.randn(2, 3, 70, 90, generator=torch.Generator().manual_seed(0))
    runs = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = cls(arch, with_cp=with_cp, drop_path_rate=0.1, **kwargs).train()
        torch.manual_seed(1)  # the same drop-path draws in both runs
        outs = model(x)
        sum(o.mean() for o in outs).backward()
        runs.append((model, [o.detach() for o in outs]))
    (plain, out0), (ckpt, out1) = runs
    assert max_rel_error(out1, out0) <= 1e-6
    grads0 = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    grads1 = {n: p.grad for n, p in ckpt.named_parameters() if p.grad is not None}
    assert grads0 and grads1.keys() == grads0.keys()
    err = max_rel_error(list(grads1.values()), list(grads0.values()))
    assert err <= 1e-6, err
    return ckpt


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


@pytest.mark.parametrize('kind', ['dense', 'cls'])
def test_official_layout_derivation_matches_fixture(family, kind):
    """Names, shapes and dtypes match exactly; roles too, except that the re-issued SLAB fixtures
    store calibrated BatchNorm statistics verbatim (role 'buffer' instead of the generated
    'running_mean' / 'running_var')."""
    fx = _fx(f'{family}_t.{kind}')
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
@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['small', 'base'])
def test_small_base_use_only_tiny_block_kinds(family, arch):
    """Every (mixer, stage, window, shift / agent grid) of S and B is one the tiny fixtures
    validate (Agent-Swin-T or SLAB-Swin-T), apart from widths, head counts and depths; e.g.
    Agent-S/B's stage-2 'B' blocks are the (shifted) window blocks of SLAB-T's stage 2."""
    tiny = _block_kinds(AgentSwinTransformer('tiny')) | _block_kinds(SLABSwinTransformer('tiny'))
    big, _ = _dense_model(family, arch)
    assert _block_kinds(big) - tiny == set()


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
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


@pytest.mark.slow
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
