"""BiFormer: parity with the official classes, every BRA backend, and the backbone's options.

Oracles:

* **Tiny** is compared with the stored fixtures (``biformer_tiny.{cls,dense}``: the official
  ``BiFormer`` classifier and the detection backbone ``BiFormer_mm`` with n_win 16 and auto_pad, run
  on generated weights, inputs 224x224 and 256x320).
* **Small and base** have no fixture. Their oracle is this model's ``backend='reference'``: a
  line-by-line transcription of the official legacy BRA (gather of the routed K/V on a stride-0
  expanded view, dense softmax attention, LCE on V, pads unmasked) inside the same module code that
  reproduces both tiny fixtures to ~1e-6. The official code path is deterministic given the weights,
  and small/base differ from tiny only in depths and widths (the state_dict layout is derived with
  the pattern checked against the tiny fixture specs below), so the reference backend computes what
  the official class would. Every other backend is compared with it on the same generated
  official-layout weights, at the detection (n_win 16) and segmentation (n_win 8) settings, on odd
  input sizes (225x287) that exercise auto_pad's unmasked pad tokens.
* The Triton backend runs under ``TRITON_INTERPRET=1`` on CPU, a few ms per program: the full
  models launch 10^3-10^4 programs per forward, so on CPU it is checked on a reduced geometry
  (``test_triton_backend_in_model``, forward and backward) and, marked slow, through the whole
  classifier fixture; ``test_triton_parity_gpu`` runs the full matrix on a GPU.
"""
from typing import Dict

import pytest
import torch
import torch.nn.functional as F

import mmattn  # noqa: F401
import mmattn.ops.bra as bra
from mmattn.models.backbones.biformer import (BiFormer, BiLevelRoutingAttention,
                                              convert_biformer_checkpoint)
from mmattn.registry import MODELS
from mmattn.testing import generate, load_fixture, max_rel_error, state_dict_from_fixture
from mmattn.testing.marks import fast_first

TOL = 1e-4
CPU_BACKENDS = ['reference', 'torch']


def official_weights(model: BiFormer, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Generated official-layout weights for every entry of ``model`` (same key names)."""
    roles = {'running_mean': 'running_mean', 'running_var': 'running_var',
             'num_batches_tracked': 'num_batches_tracked'}
    return {k: generate(k, v.shape, str(v.dtype).replace('torch.', ''),
                        roles.get(k.rsplit('.', 1)[-1], 'param'), seed)
            for k, v in model.state_dict().items()}


def build(arch: str, n_win: int, backend: str, **kwargs) -> BiFormer:
    cfg = dict(type='mmattn.BiFormer', arch=arch, n_win=n_win, out_indices=(0, 1, 2, 3),
               backend=backend, **kwargs)
    return MODELS.build(cfg).eval()


@pytest.fixture(scope='module')
def dense_fixture():
    return load_fixture('biformer_tiny.dense')


@pytest.fixture(scope='module')
def cls_fixture():
    return load_fixture('biformer_tiny.cls')


def test_layout_matches_official_specs(dense_fixture, cls_fixture):
    """Key names and shapes equal the official ones: BiFormer_mm's exactly, and the classifier's
    minus the classifier-only norm/head."""
    dense = build('tiny', 16, 'torch')
    assert [(k, tuple(v.shape)) for k, v in dense.state_dict().items()] == \
        [(k, tuple(s)) for k, s, _, _ in dense_fixture['spec']]
    trunk = BiFormer(arch='tiny', n_win=7, with_extra_norms=False)
    cls_keys = [(k, tuple(s)) for k, s, _, _ in cls_fixture['spec']
                if not k.startswith(('norm.', 'head.'))]
    assert [(k, tuple(v.shape)) for k, v in trunk.state_dict().items()] == cls_keys


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_dense_fixture_parity(dense_fixture, backend):
    """``dict(type='mmattn.BiFormer', arch='tiny', n_win=16, out_indices=(0, 1, 2, 3))`` is the
    official detection backbone BiFormer_mm (fixture at 224x224 and 256x320)."""
    model = build('tiny', 16, backend)
    model.load_official_state_dict(convert_biformer_checkpoint(
        state_dict_from_fixture(dense_fixture)))
    for size, x in dense_fixture['inputs'].items():
        with torch.no_grad():
            out = model(x)
        err = max_rel_error(out, dense_fixture['outputs'][size])
        assert err <= TOL, (backend, size, err)


def classifier_logits(cls_fixture, backend: str) -> torch.Tensor:
    """The classifier trunk (n_win 7, raw stage-3 output) + the official BN / mean / Linear head."""
    sd = state_dict_from_fixture(cls_fixture)
    model = BiFormer(arch='tiny', n_win=7, out_indices=(3, ), with_extra_norms=False,
                     backend=backend).eval()
    model.load_official_state_dict(convert_biformer_checkpoint({'model': sd}))
    x = cls_fixture['inputs']['224x224']
    with torch.no_grad():
        (feat, ) = model(x)
        feat = F.batch_norm(feat, sd['norm.running_mean'], sd['norm.running_var'],
                            sd['norm.weight'], sd['norm.bias'], eps=1e-5)
        logits = F.linear(feat.flatten(2).mean(-1), sd['head.weight'], sd['head.bias'])
    return logits


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_classifier_fixture_parity(cls_fixture, backend):
    """The classifier trunk + the official head gives the official logits."""
    err = max_rel_error(classifier_logits(cls_fixture, backend), cls_fixture['outputs']['224x224'])
    assert err <= TOL, (backend, err)


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.triton
@pytest.mark.skipif(not bra.HAS_TRITON, reason='triton is not installed')
def test_classifier_fixture_parity_triton(cls_fixture):
    """The Triton backend through the whole classifier trunk (~4k kernel programs, ~12 min under
    the CPU interpreter; seconds on a GPU)."""
    err = max_rel_error(classifier_logits(cls_fixture, 'triton'), cls_fixture['outputs']['224x224'])
    assert err <= TOL, err


SETTINGS = {'det': 16, 'seg': 8}


@pytest.mark.parametrize('arch', fast_first(['tiny', 'small', 'base']))
@pytest.mark.parametrize('setting', sorted(SETTINGS))
def test_torch_backend_matches_reference(arch, setting):
    """Every arch at the detection / segmentation setting, odd input size (see module doc)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 225, 287)
    outs = {}
    for backend in CPU_BACKENDS:
        model = build(arch, SETTINGS[setting], backend)
        model.load_official_state_dict(official_weights(model))
        with torch.no_grad():
            outs[backend] = model(x)
    assert [tuple(o.shape[2:]) for o in outs['torch']] == [(57, 72), (29, 36), (15, 18), (8, 9)]
    err = max_rel_error(outs['torch'], outs['reference'])
    assert err <= TOL, (arch, setting, err)


def test_torch_backend_training_gradients():
    """fwd+bwd of the whole (tiny-width) network in train mode: the chunked backend's input and
    weight gradients equal the reference's (auto_pad pads included). BatchNorm in eval
    (``norm_eval``, as in detection) so that no gradient is mathematically zero: the conv biases
    before a train-mode BatchNorm get pure rounding noise."""
    grads = {}
    x = torch.randn(2, 3, 70, 99, generator=torch.Generator().manual_seed(0))
    for backend in CPU_BACKENDS:
        model = BiFormer(arch=dict(depths=(1, 1, 2, 1), embed_dims=(64, 128, 256, 512)), n_win=4,
                         norm_eval=True, backend=backend)
        model.load_official_state_dict(official_weights(model))
        model.train()
        xi = x.clone().requires_grad_()
        loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in model(xi))
        loss.backward()
        grads[backend] = [xi.grad] + [p.grad for p in model.parameters()]
    assert max_rel_error(grads['torch'], grads['reference']) <= TOL


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.skipif(not bra.HAS_TRITON, reason='triton is not installed')
def test_triton_backend_in_model():
    """The Triton backend inside the network (strided q/k/v of the real projection, routing,
    auto_pad pads, LCE) against the reference, forward and backward, on a reduced geometry that
    keeps the interpreter to a few hundred programs: official widths and heads, one block per
    stage, n_win 2, an odd 42x58 input, BatchNorm in eval (see above)."""
    results = {}
    x = torch.randn(1, 3, 42, 58, generator=torch.Generator().manual_seed(0))
    for backend in ('reference', 'triton'):
        model = BiFormer(arch=dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 256, 512)), n_win=2,
                         topks=(1, 2, 4, -2), norm_eval=True, backend=backend)
        model.load_official_state_dict(official_weights(model))
        model.train()
        xi = x.clone().requires_grad_()
        outs = model(xi)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        results[backend] = ([o.detach() for o in outs],
                            [xi.grad] + [p.grad for p in model.parameters()])
    assert max_rel_error(results['triton'][0], results['reference'][0]) <= TOL
    assert max_rel_error(results['triton'][1], results['reference'][1]) <= TOL


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
@pytest.mark.parametrize('setting', sorted(SETTINGS))
def test_triton_parity_gpu(arch, setting, dense_fixture):
    """On a GPU: the fused backend against the reference for every arch/setting (odd size), and
    the tiny dense fixture, fp32."""
    x = torch.randn(1, 3, 225, 287, generator=torch.Generator().manual_seed(0)).cuda()
    outs = {}
    for backend in ('reference', 'triton'):
        model = build(arch, SETTINGS[setting], backend).cuda()
        model.load_official_state_dict(official_weights(model))
        with torch.no_grad():
            outs[backend] = model(x)
    assert max_rel_error(outs['triton'], outs['reference']) <= TOL
    if arch == 'tiny' and setting == 'det':
        model = build('tiny', 16, 'triton').cuda()
        model.load_official_state_dict(convert_biformer_checkpoint(
            state_dict_from_fixture(dense_fixture)))
        for size, xf in dense_fixture['inputs'].items():
            with torch.no_grad():
                out = [o.cpu() for o in model(xf.cuda())]
            assert max_rel_error(out, dense_fixture['outputs'][size]) <= TOL


def test_auto_backend_and_attention_errors():
    model = build('tiny', 16, 'auto')
    attn = model.stages[0][0].attn
    assert isinstance(attn, BiLevelRoutingAttention) and attn.backend == 'auto'
    assert attn.scale == 64 ** -0.5 and attn.num_heads == 2  # full-width scale, 32-d heads
    strict = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=2, auto_pad=False)
    with pytest.raises(ValueError, match='30x32 is not a multiple of n_win=4'):
        strict(torch.zeros(1, 30, 32, 64))
    with pytest.raises(ValueError, match='topk=17'):
        BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=17)
    with pytest.raises(NotImplementedError, match='fracpool'):
        BiLevelRoutingAttention(64, num_heads=2, n_win=4, kv_downsample_mode='fracpool')


def test_argument_errors():
    with pytest.raises(ValueError, match="arch 'huge'"):
        BiFormer(arch='huge')
    with pytest.raises(ValueError, match='out_indices'):
        BiFormer(out_indices=(4, ))
    with pytest.raises(TypeError, match='soft_routing: only detached hard routing'):
        BiFormer(soft_routing=True)
    with pytest.raises(TypeError, match='pe: only pe=None'):
        BiFormer(pe='sum')


# the official BiFormer_mm detection config's backbone arguments
OFFICIAL_DENSE = dict(depth=[2, 2, 8, 2], embed_dim=[64, 128, 256, 512], mlp_ratios=[3, 3, 3, 3],
                      n_win=16, kv_downsample_mode='identity', kv_per_wins=[-1, -1, -1, -1],
                      topks=[1, 4, 16, -2], side_dwconv=5, before_attn_dwconv=3,
                      layer_scale_init_value=-1, qk_dims=[64, 128, 256, 512], head_dim=32,
                      param_routing=False, diff_routing=False, soft_routing=False, pre_norm=True,
                      pe=None, auto_pad=True, use_checkpoint_stages=[], drop_path_rate=0.2,
                      num_classes=80, disable_bn_grad=False)
# their translation: renamed into the contract's names, unused ones left out
TRANSLATED = dict(arch=dict(depths=[2, 2, 8, 2], embed_dims=[64, 128, 256, 512]),
                  mlp_ratios=[3, 3, 3, 3], n_win=16, kv_downsample_mode='identity',
                  kv_per_wins=[-1, -1, -1, -1], topks=[1, 4, 16, -2], side_dwconv=5,
                  before_attn_dwconv=3, layer_scale_init_value=-1, qk_dims=[64, 128, 256, 512],
                  head_dim=32, pre_norm=True, auto_pad=True, with_cp=False, drop_path_rate=0.2)


def test_official_dense_kwargs_translated():
    """The translated official BiFormer_mm arguments build the same network; the untranslated
    ones raise one TypeError naming every argument left to translate."""
    a = MODELS.build(dict(type='mmattn.BiFormer', **TRANSLATED))
    b = build('tiny', 16, 'auto')
    assert [(k, v.shape) for k, v in a.state_dict().items()] == \
        [(k, v.shape) for k, v in b.state_dict().items()]
    with pytest.raises(TypeError) as err:
        MODELS.build(dict(type='mmattn.BiFormer', **OFFICIAL_DENSE))
    untranslated = set(OFFICIAL_DENSE) - set(TRANSLATED)
    assert untranslated == {'depth', 'embed_dim', 'param_routing', 'diff_routing', 'soft_routing',
                            'pe', 'use_checkpoint_stages', 'num_classes', 'disable_bn_grad'}
    for name in untranslated:
        assert f'  {name}: ' in str(err.value), name


def test_out_indices_frozen_stages_norm_eval():
    model = BiFormer(arch='tiny', n_win=4, out_indices=(1, 3), frozen_stages=2, norm_eval=True)
    outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 8, 8), (1, 512, 2, 2)]
    assert not any(k.startswith(('extra_norms.0.', 'extra_norms.2.'))
                   for k in model.state_dict())
    model.train()
    for i in range(2):
        assert not any(p.requires_grad for p in model.downsample_layers[i].parameters())
        assert not any(p.requires_grad for p in model.stages[i].parameters())
        assert not model.stages[i].training
    assert all(p.requires_grad for p in model.stages[2].parameters())
    assert model.stages[2].training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    model = BiFormer(arch='tiny', n_win=4, norm_eval=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_drop_path_and_checkpointing():
    model = BiFormer(arch='tiny', n_win=4, drop_path_rate=0.3)
    rates = [blk.drop_path.drop_prob for stage in model.stages for blk in stage
             if not isinstance(blk.drop_path, torch.nn.Identity)]
    assert len(rates) == 13 and abs(rates[-1] - 0.3) < 1e-6  # linspace over 14 blocks, first 0
    # activation checkpointing gives the same gradients
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for with_cp in (False, True):
        m = BiFormer(arch=dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 256, 512)), n_win=2,
                     topks=(1, 2, 4, -2), with_cp=with_cp)
        m.load_official_state_dict(official_weights(m))
        m.train()
        sum(o.sum() for o in m(x)).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    assert max_rel_error(grads[1], grads[0]) <= 1e-6


def test_other_block_types_and_options():
    """Global attention (topk -1), conv pseudo-attention (0), pooled K/V, layer scale, post-norm,
    mlp dwconv and param_attention='qkv' build with the official keys and run at odd sizes."""
    model = BiFormer(arch=dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 256, 512)), n_win=2,
                     topks=(2, 0, 4, -1), kv_downsample_mode='ada_avgpool',
                     kv_per_wins=(2, 2, 2, 2), layer_scale_init_value=1e-5, pre_norm=False,
                     mlp_dwconv=True, param_attention='qkv').eval()
    keys = set(model.state_dict())
    assert {'stages.0.0.gamma1', 'stages.0.0.mlp.1.dwconv.weight', 'stages.1.0.attn.1.weight',
            'stages.1.0.attn.2.weight', 'stages.1.0.attn.3.weight',
            'stages.3.0.attn.qkv.weight'} <= keys
    assert 'stages.0.0.attn.wo.weight' not in keys and 'stages.3.0.attn.lepe.weight' not in keys
    outs = {}
    x = torch.randn(1, 3, 45, 51, generator=torch.Generator().manual_seed(0))
    for backend in CPU_BACKENDS:
        for m in model.modules():
            if isinstance(m, BiLevelRoutingAttention):
                m.backend = backend
        with torch.no_grad():
            outs[backend] = model(x)
    assert [tuple(o.shape[1:]) for o in outs['torch']] == [(64, 12, 13), (128, 6, 7),
                                                          (256, 3, 4), (512, 2, 2)]
    assert all(torch.isfinite(o).all() for o in outs['torch'])
    assert max_rel_error(outs['torch'], outs['reference']) <= TOL
