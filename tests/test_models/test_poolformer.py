"""PoolFormer: parity with the official classes for all five arches, and the backbone's options.

S12 is compared with the stored fixtures (``poolformer_s12.{cls,dense}``: the official
``PoolFormer`` and ``poolformer_s12_feat`` run on generated weights). S24/S36/M36/M48 have no
fixture; they are compared with an independent oracle, timm's ``poolformer_<arch>`` loaded with the
same generated official-layout weights:

* timm's MetaFormer trunk (stem, Pooling token mixer, GroupNorm1 norms, conv Mlp with GELU, layer
  scale, 3x3/2 downsampling) computes the official math; only its key names differ (mapped by
  ``to_timm`` below, written here from the two layouts, not with timm's ``checkpoint_filter_fn``);
* timm's *head* is not the official one (it pools, then normalises over C with a LayerNorm2d; the
  official head GroupNorms over C,H,W, then pools), so the oracle applies the official head and the
  official per-output GroupNorms itself, to timm's stage outputs (``forward_intermediates``);
* the oracle is validated where the truth is known: on S12 it reproduces both fixtures (test below),
  and the official layouts of the other arches are derived with the same pattern, which reproduces
  the S12 fixtures' layouts exactly. The arches differ only in depths, widths and layer-scale init,
  and the latter is overwritten by the loaded weights.
"""
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F

import mmattn  # noqa: F401
from mmattn.models.backbones.poolformer import (Pooling, PoolFormer, convert_poolformer_checkpoint,
                                                pool_reference)
from mmattn.registry import MODELS
from mmattn.testing import generate, load_fixture, max_rel_error, state_dict_from_fixture
from mmattn.testing.marks import fast_first

TOL = 1e-4
# from the official factories (spec §2b): layers, embed_dims
ARCHES = {
    's12': ([2, 2, 6, 2], [64, 128, 320, 512]),
    's24': ([4, 4, 12, 4], [64, 128, 320, 512]),
    's36': ([6, 6, 18, 6], [64, 128, 320, 512]),
    'm36': ([6, 6, 18, 6], [96, 192, 384, 768]),
    'm48': ([8, 8, 24, 8], [96, 192, 384, 768]),
}


def official_spec(arch: str, kind: str) -> List[Tuple[str, tuple]]:
    """The official state_dict layout (key, shape) of ``poolformer_<arch>`` (cls) or ``_feat``."""
    layers, dims = ARCHES[arch]
    spec = [('patch_embed.proj.weight', (dims[0], 3, 7, 7)), ('patch_embed.proj.bias', (dims[0], ))]
    for i, (depth, c) in enumerate(zip(layers, dims)):
        if i > 0:
            spec += [(f'network.{2 * i - 1}.proj.weight', (c, dims[i - 1], 3, 3)),
                     (f'network.{2 * i - 1}.proj.bias', (c, ))]
        for j in range(depth):
            p = f'network.{2 * i}.{j}.'
            spec += [(p + 'layer_scale_1', (c, )), (p + 'layer_scale_2', (c, )),
                     (p + 'norm1.weight', (c, )), (p + 'norm1.bias', (c, )),
                     (p + 'norm2.weight', (c, )), (p + 'norm2.bias', (c, )),
                     (p + 'mlp.fc1.weight', (4 * c, c, 1, 1)), (p + 'mlp.fc1.bias', (4 * c, )),
                     (p + 'mlp.fc2.weight', (c, 4 * c, 1, 1)), (p + 'mlp.fc2.bias', (c, ))]
    if kind == 'cls':
        spec += [('norm.weight', (dims[-1], )), ('norm.bias', (dims[-1], )),
                 ('head.weight', (1000, dims[-1])), ('head.bias', (1000, ))]
    else:
        spec += [(f'norm{2 * i}.{n}', (c, )) for i, c in enumerate(dims)
                 for n in ('weight', 'bias')]
    return spec


def official_weights(arch: str, kind: str) -> Dict[str, torch.Tensor]:
    """Generated official-layout weights: what ``state_dict_from_fixture`` gives (same rule)."""
    return {k: generate(k, s, 'float32', 'param', seed=0) for k, s in official_spec(arch, kind)}


def official_pair(arch: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(dense, classifier) official weights; the shared trunk keys hold the same tensors."""
    dense = official_weights(arch, 'dense')
    cls = {
        k: dense[k] if k in dense else generate(k, s, 'float32', 'param', seed=0)
        for k, s in official_spec(arch, 'cls')
    }
    return dense, cls


def on_meta(build, sd: Dict[str, torch.Tensor], strict: bool = True):
    """Build a module uninitialised (``meta`` device); ``sd``'s tensors become its weights."""
    with torch.device('meta'):
        model = build()
    result = model.load_state_dict(sd, strict=strict, assign=True)
    return model.eval(), result


def to_timm(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official classifier keys -> timm MetaFormer keys."""
    out = {}
    for k, v in sd.items():
        parts = k.split('.')
        if parts[0] == 'patch_embed':
            k = 'stem.conv.' + parts[-1]
        elif parts[0] == 'network' and int(parts[1]) % 2:  # downsampling before stage (n+1)/2
            k = f'stages.{(int(parts[1]) + 1) // 2}.downsample.conv.{parts[-1]}'
        elif parts[0] == 'network':
            rest = '.'.join(parts[3:]).replace('layer_scale_1', 'layer_scale1.scale').replace(
                'layer_scale_2', 'layer_scale2.scale')
            k = f'stages.{int(parts[1]) // 2}.blocks.{parts[2]}.{rest}'
        else:  # norm.*, head.*
            k = f'head.{"norm" if parts[0] == "norm" else "fc"}.{parts[-1]}'
        out[k] = v
    return out


def official_head(feat: torch.Tensor, sd: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The official classifier head: GroupNorm(1, C) over C,H,W -> mean over H,W -> Linear."""
    x = F.group_norm(feat, 1, sd['norm.weight'], sd['norm.bias'], eps=1e-5)
    return F.linear(x.mean((-2, -1)), sd['head.weight'], sd['head.bias'])


def timm_oracle(arch: str, dense_sd: Dict[str, torch.Tensor], cls_sd: Dict[str, torch.Tensor],
                inputs: Dict[str, torch.Tensor]) -> Tuple[dict, dict]:
    """(dense outputs, classifier logits) per input of the official model, computed through timm."""
    import timm
    model, _ = on_meta(lambda: timm.create_model(f'poolformer_{arch}', pretrained=False),
                       to_timm(cls_sd))
    dense, logits = {}, {}
    with torch.no_grad():
        for name, x in inputs.items():
            feats = model.forward_intermediates(x, intermediates_only=True)
            dense[name] = tuple(
                F.group_norm(
                    f, 1, dense_sd[f'norm{2 * i}.weight'], dense_sd[f'norm{2 * i}.bias'], eps=1e-5)
                for i, f in enumerate(feats))
            logits[name] = official_head(feats[-1], cls_sd)
    return dense, logits


def ours(arch: str,
         dense_sd: Dict[str, torch.Tensor],
         cls_sd: Dict[str, torch.Tensor],
         inputs: Dict[str, torch.Tensor],
         cls_input: str = '224x224') -> Tuple[dict, torch.Tensor]:
    """Our dense outputs (weights of ``poolformer_<arch>_feat``) and classifier logits (weights of
    the classifier, through the classifier checkpoint route; the official head on top).

    The official head's GroupNorm(1, C) is the same module as our output norm of the last stage, so
    the classifier's ``norm.*`` goes there and mean + Linear follow.
    """
    converted, dropped, _ = convert_poolformer_checkpoint(dense_sd)
    assert dropped == []
    model, _ = on_meta(
        lambda: MODELS.build(dict(type='mmattn.PoolFormer', arch=arch, out_indices=(0, 1, 2, 3))),
        converted)
    with torch.no_grad():
        dense = {name: model(x) for name, x in inputs.items()}
    converted, dropped, _ = convert_poolformer_checkpoint(cls_sd)
    assert sorted(dropped) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    missing, unexpected = model.load_state_dict(converted, strict=False, assign=True)
    assert sorted(missing) == sorted(f'norm{i}.{n}' for i in (0, 2, 4, 6)
                                     for n in ('weight', 'bias'))
    assert unexpected == []
    head_norm = {'weight': cls_sd['norm.weight'], 'bias': cls_sd['norm.bias']}
    model.norm6.load_state_dict(head_norm, assign=True)
    with torch.no_grad():
        out = model(inputs[cls_input])[-1]
    return dense, F.linear(out.mean((-2, -1)), cls_sd['head.weight'], cls_sd['head.bias'])


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize('kind', ['cls', 'dense'])
def test_derived_layout_matches_s12_fixture(kind):
    fx = load_fixture(f'poolformer_s12.{kind}')
    assert {k: tuple(s) for k, s, _, _ in fx['spec']} == dict(official_spec('s12', kind))
    assert all(role == 'param' and dtype == 'float32' for _, _, dtype, role in fx['spec'])


def test_s12_matches_fixtures():
    dense_fx, cls_fx = load_fixture('poolformer_s12.dense'), load_fixture('poolformer_s12.cls')
    assert torch.equal(cls_fx['inputs']['224x224'], dense_fx['inputs']['224x224'])
    dense, logits = ours('s12', state_dict_from_fixture(dense_fx), state_dict_from_fixture(cls_fx),
                         dense_fx['inputs'])
    for name in ('224x224', '256x320'):
        err = max_rel_error(dense[name], dense_fx['outputs'][name])
        assert err <= TOL, f'dense {name}: {err:.2e}'
    err = max_rel_error(logits, cls_fx['outputs']['224x224'])
    assert err <= TOL, f'classifier: {err:.2e}'


def test_timm_oracle_reproduces_s12_fixtures():
    dense_fx, cls_fx = load_fixture('poolformer_s12.dense'), load_fixture('poolformer_s12.cls')
    dense, logits = timm_oracle('s12', state_dict_from_fixture(dense_fx),
                                state_dict_from_fixture(cls_fx), dense_fx['inputs'])
    for name in ('224x224', '256x320'):
        assert max_rel_error(dense[name], dense_fx['outputs'][name]) <= TOL
    assert max_rel_error(logits['224x224'], cls_fx['outputs']['224x224']) <= TOL


@pytest.mark.parametrize('arch', fast_first(['s24', 's36', 'm36', 'm48']))
def test_arch_matches_official_through_timm(arch):
    g = torch.Generator().manual_seed(1)
    inputs = {
        '224x224': torch.randn(1, 3, 224, 224, generator=g),
        '256x320': torch.randn(1, 3, 256, 320, generator=g)
    }
    dense_sd, cls_sd = official_pair(arch)
    want_dense, want_logits = timm_oracle(arch, dense_sd, cls_sd, inputs)
    dense, logits = ours(arch, dense_sd, cls_sd, inputs)
    for name in inputs:
        err = max_rel_error(dense[name], want_dense[name])
        assert err <= TOL, f'{arch} dense {name}: {err:.2e}'
    err = max_rel_error(logits, want_logits['224x224'])
    assert err <= TOL, f'{arch} classifier: {err:.2e}'


# ---------------------------------------------------------------------------------------- options
def test_arch_param_counts_match_official():
    """Classifier parameter counts of the official models (trunk + norm + head, spec §2b)."""
    expected = {'s12': 11.92e6, 's24': 21.39e6, 's36': 30.86e6, 'm36': 56.17e6, 'm48': 73.47e6}
    for arch, n in expected.items():
        with torch.device('meta'):
            model = PoolFormer(arch=arch,
                               out_indices=(3, ))  # norm6 stands in for the classifier norm
        c = model.embed_dims[-1]
        total = sum(p.numel() for p in model.parameters()) + 1000 * c + 1000
        assert abs(total - n) < 0.005e6, (arch, total)


def test_out_indices_and_shapes_at_odd_size():
    model = PoolFormer(arch='s12', out_indices=(1, -1)).eval()
    assert model.out_indices == (1, 3)
    assert {n for n, _ in model.named_children() if n.startswith('norm')} == {'norm2', 'norm6'}
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 97, 131))
    # stem 7x7/4 pad 2: 97x131 -> 24x33; each 3x3/2 pad 1 downsampling: ceil(n / 2)
    assert [tuple(o.shape) for o in outs] == [(2, 128, 12, 17), (2, 512, 3, 5)]
    with pytest.raises(ValueError, match='out_indices'):
        PoolFormer(out_indices=(4, ))


def test_custom_arch_dict_and_errors():
    model = PoolFormer(arch=dict(
        depths=[1, 1, 1, 1], embed_dims=[8, 16, 24, 32], mlp_ratios=2, layer_scale_init_value=0.5))
    assert model.network[0][0].mlp.fc1.out_channels == 16
    assert torch.all(model.network[6][0].layer_scale_2 == 0.5)
    with pytest.raises(ValueError, match='unknown PoolFormer arch'):
        PoolFormer(arch='s13')
    with pytest.raises(ValueError, match='downsamples'):
        PoolFormer(arch=dict(depths=[1] * 4, embed_dims=[8] * 4, downsamples=[True] * 4))


def test_layer_scale_init_and_drop_path_schedule():
    assert torch.all(PoolFormer('s24').network[0][0].layer_scale_1 == 1e-5)
    model = PoolFormer('s36', drop_path_rate=0.2)
    assert torch.all(model.network[0][0].layer_scale_1 == 1e-6)
    rates = [
        blk.drop_path.drop_prob if hasattr(blk.drop_path, 'drop_prob') else 0. for i in range(4)
        for blk in model.network[2 * i]
    ]
    assert rates[0] == 0. and rates[-1] == pytest.approx(0.2)
    assert rates == pytest.approx([0.2 * b / 35 for b in range(36)])


def test_frozen_stages():
    model = PoolFormer('s12', frozen_stages=2)
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert all(
        n.startswith(('patch_embed.', 'network.0.', 'network.1.', 'network.2.', 'norm0.', 'norm2.'))
        for n in frozen)
    assert 'network.1.proj.weight' in frozen and 'norm2.weight' in frozen
    assert not any(n.startswith(('network.3.', 'network.4.', 'norm4.')) for n in frozen)
    assert not model.network[2].training and model.network[4].training
    assert all(p.requires_grad for p in PoolFormer('s12').parameters())
    assert not any(p.requires_grad
                   for p in PoolFormer('s12', frozen_stages=0).patch_embed.parameters())


def test_norm_eval_with_batchnorm():
    model = PoolFormer(arch=dict(depths=[1] * 4, embed_dims=[8, 16, 24, 32]),
                       norm_cfg=dict(type='BN'),
                       norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 4 * 2 + 4 and not any(m.training for m in bns)
    model = PoolFormer(arch=dict(depths=[1] * 4, embed_dims=[8, 16, 24, 32]),
                       norm_cfg=dict(type='BN'))
    model.train()
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_training_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = PoolFormer(arch=dict(depths=[1, 1, 2, 1], embed_dims=[8, 16, 24, 32]),
                       drop_path_rate=0.1)
    model.train()
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# ----------------------------------------------------------------------------------- token mixer
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('shape,pool_size', [((2, 5, 7, 9), 3), ((1, 3, 1, 2), 3),
                                             ((2, 4, 6, 5), 5), ((1, 2, 2, 1), 5)])
def test_pooling_matches_avg_pool_reference(shape, pool_size, dtype, tol):
    """Box-sum formulation vs ``avg_pool2d(count_include_pad=False) - x``, with gradients."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype)
    grad = torch.randn(shape, generator=g, dtype=dtype)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    out, ref = Pooling(pool_size)(a), pool_reference(b, pool_size)
    (out * grad).sum().backward()
    (ref * grad).sum().backward()
    assert max_rel_error(out.detach(), ref.detach()) <= tol
    assert max_rel_error(a.grad, b.grad) <= tol


def test_pooling_cache_follows_size_and_inference_mode():
    pool = Pooling(3)
    with torch.inference_mode():
        pool(torch.randn(1, 2, 4, 4))
    x = torch.randn(1, 2, 5, 3, requires_grad=True)
    pool(x).sum().backward()  # an inference-mode count map would fail here
    assert pool._inv_count.shape == (5, 3) and not pool._inv_count.is_inference()
    assert torch.allclose(x.grad, torch.autograd.grad(pool_reference(x).sum(), x)[0])
    with pytest.raises(ValueError, match='odd'):
        Pooling(4)


def test_pooling_keeps_input_dtype_under_autocast():
    x = torch.randn(1, 4, 6, 6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = Pooling(3)(x)
    assert out.dtype == torch.float32
    assert max_rel_error(out, pool_reference(x)) <= 1e-6
