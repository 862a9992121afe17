"""Attention-aware FLOP counting: the ops' formulas, the Triton custom ops, and get_flops.

* Each op's FLOP formula (:mod:`mmattn.ops.flops`) against a dense-equivalent computation counted
  by ``FlopCounterMode`` (BRA with topk = all regions vs dense attention; SLA vs per-window
  ``relu(q) (relu(k)^T v)``), and the ``'triton'`` backend (its kernel launches are the custom ops
  ``torch.ops.mmattn.*``, run under ``TRITON_INTERPRET=1`` on tiny CPU tensors) against the
  ``'torch'`` backend's aten matmuls and the formula, forward and backward.
* Backbones and two segmentors (BEVANet-S CamVid, Agent-Swin-T UperNet) counted by
  ``tools/analysis_tools/get_flops.py`` against the papers' numbers (MACs, which the papers call
  "FLOPs"), within the tolerance given per row.
* The CLI on a detector config (meta device), the CPU fallback of a two-stage detector, and the
  refusal of a 3D model.
"""
import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mmattn.ops import bra, sla
from mmattn.ops.bra import bra_attention
from mmattn.ops.flops import (bra_backward_flops, bra_forward_flops, sla_backward_flops,
                              sla_forward_flops)
from mmattn.ops.sla import cu_seqlens_from_counts, scattered_linear_attention

ROOT = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif(
    not (bra.HAS_TRITON and os.environ.get('TRITON_INTERPRET') == '1'),
    reason='needs triton and TRITON_INTERPRET=1 (set by tests/conftest.py without a GPU)')


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'get_flops', ROOT / 'tools' / 'analysis_tools' / 'get_flops.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


get_flops = _load_tool()


def _count(fn, *args, **kwargs):
    """(FLOPs, per-op counts) of one call."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return counter.get_total_flops(), counter.get_flop_counts()['Global'], out


def _dense_attention(q, k, v, num_heads, scale):
    """Every query over every key: (N, R, Lq, C) -> (N, m, R Lq, d) matmuls."""
    n, r, lq, cqk = q.shape
    lk, cv = k.shape[2], v.shape[-1]
    qh = q.reshape(n, r * lq, num_heads, -1).transpose(1, 2)
    kh = k.reshape(n, r * lk, num_heads, -1).transpose(1, 2)
    vh = v.reshape(n, r * lk, num_heads, -1).transpose(1, 2)
    return torch.softmax((qh * scale) @ kh.transpose(-1, -2), -1) @ vh


def _bra_inputs(n=1, r=4, lq=5, lk=3, cqk=32, cv=64, topk=4, grad=True):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, r, lq, cqk, generator=g, requires_grad=grad)
    k = torch.randn(n, r, lk, cqk, generator=g, requires_grad=grad)
    v = torch.randn(n, r, lk, cv, generator=g, requires_grad=grad)
    idx = torch.stack([torch.randperm(r, generator=g)[:topk] for _ in range(n * r)]).view(
        n, r, topk)
    return q, k, v, idx


def test_bra_formula_equals_dense_attention_at_topk_all():
    q, k, v, idx = _bra_inputs(topk=4, grad=False)
    dense, _, _ = _count(_dense_attention, q, k, v, 2, 0.25)
    routed, ops, _ = _count(bra_attention, q, k, v, idx, 2, 0.25, backend='torch')
    assert dense == routed == bra_forward_flops(q.shape, k.shape, v.shape, idx.shape, 2)
    # fewer routed regions: proportionally fewer FLOPs (counted, not assumed)
    q, k, v, idx = _bra_inputs(topk=1, grad=False)
    routed, _, _ = _count(bra_attention, q, k, v, idx, 2, 0.25, backend='torch')
    assert routed * 4 == dense == 2 * q.shape[1] * q.shape[2] * 4 * 3 * (32 + 64)


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize('topk', [1, 3])
def test_bra_triton_custom_op_counted_like_torch(topk):
    q, k, v, idx = _bra_inputs(n=2, topk=topk)
    fwd = bra_forward_flops(q.shape, k.shape, v.shape, idx.shape, 2)
    counts = {}
    for backend in ('torch', 'triton'):
        flops, ops, out = _count(bra_attention, q, k, v, idx, 2, 0.25, backend=backend)
        bwd, bwd_ops, _ = _count(out.sum().backward)
        counts[backend] = (flops, bwd, set(map(str, ops)), set(map(str, bwd_ops)))
    assert counts['torch'][0] == counts['triton'][0] == fwd
    assert counts['triton'][2] == {'mmattn.bra_fwd'}  # the kernels, not aten ops inside them
    assert counts['triton'][3] == {'mmattn.bra_bwd'}
    assert counts['triton'][1] == bra_backward_flops(q.shape, k.shape, v.shape, idx.shape, 2)
    # torch backend: S and dP recomputed once (3 dq + 2 dv), Triton: in both kernels (4 + 3)
    pairs = 2 * 4 * 5 * topk * 3
    assert counts['torch'][1] == 2 * pairs * (3 * 32 + 2 * 64)
    assert counts['triton'][1] == 2 * pairs * (4 * 32 + 3 * 64)


def _sla_inputs(counts=(10, 0, 70, 3), heads=2, d=16):
    g = torch.Generator().manual_seed(0)
    n = sum(counts)
    q, k, v = (torch.randn(n, heads, d, generator=g, requires_grad=True) for _ in range(3))
    return q, k, v, cu_seqlens_from_counts(torch.tensor(counts))


def _sla_dense(q, k, v, cu):
    """Per window: S = relu(k)^T v as a matmul, out = relu(q) S / normaliser."""
    outs = []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qw, kw = (torch.relu(t[s:e]).transpose(0, 1) for t in (q, k))  # (H, L, D)
        vw = v[s:e].transpose(0, 1)
        state = kw.transpose(-1, -2) @ vw  # (H, D, D)
        den = (qw * kw.sum(1, keepdim=True)).sum(-1, keepdim=True) + 1e-6
        outs.append(((qw @ state) / den).transpose(0, 1))
    return torch.cat(outs)


def test_sla_formula_equals_per_window_matmuls():
    q, k, v, cu = _sla_inputs()
    dense, _, ref = _count(_sla_dense, q, k, v, cu)
    assert dense == sla_forward_flops(q.shape) == 2 * 2 * 83 * 2 * 16 * 16
    torch.testing.assert_close(ref, scattered_linear_attention(q, k, v, cu, backend='reference'))


@needs_triton
def test_sla_triton_custom_op_counted_by_formula():
    q, k, v, cu = _sla_inputs()
    flops, ops, out = _count(scattered_linear_attention, q, k, v, cu, backend='triton')
    bwd, bwd_ops, _ = _count(out.sum().backward)
    assert set(map(str, ops)) == {'mmattn.sla_fwd'}
    assert set(map(str, bwd_ops)) == {'mmattn.sla_bwd'}
    assert flops == sla_forward_flops(q.shape) == _count(_sla_dense, q, k, v, cu)[0]
    assert bwd == sla_backward_flops(q.shape) == 3 * flops
    assert sla.HAS_TRITON


def test_cpu_sdpa_is_counted():
    """On the CPU, SDPA runs a flash kernel FlopCounterMode has no formula for; mmattn adds it."""
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    flops, ops, out = _count(F.scaled_dot_product_attention, q, q, q)
    dense, _, _ = _count(lambda: torch.softmax(q @ q.transpose(-1, -2), -1) @ q)
    assert flops == dense == 2 * 2 * 2 * 16 * 16 * 8
    # torch's SDPA backward formula: S recomputed, dP, dQ, dK, dV (5 matmuls for 2)
    assert _count(out.sum().backward)[0] == 5 * flops // 2


# (backbone config, input H W, paper GMACs, relative tolerance, source of the paper number)
PAPER = {
    'poolformer-s12': (dict(type='mmattn.PoolFormer', arch='s12'), (224, 224), 1.8, 0.02,
                       'PoolFormer README (fvcore, rounded to 0.1 G)'),
    'biformer-t': (dict(type='mmattn.BiFormer', arch='tiny'), (224, 224), 2.2, 0.02,
                   'BiFormer README 2.2 G (fvcore reference run 2.23 G)'),
    'biformer-s': (dict(type='mmattn.BiFormer', arch='small'), (224, 224), 4.5, 0.02,
                   'BiFormer README 4.5 G (fvcore reference run 4.49 G)'),
    'biformer-b': (dict(type='mmattn.BiFormer', arch='base'), (224, 224), 9.8, 0.02,
                   'BiFormer README 9.8 G (fvcore reference run 9.79 G)'),
    'agent-swin-t': (dict(type='mmattn.AgentSwinTransformer', arch='tiny', clamp_windows=True,
                          downstream_agent_shapes=((3, 3), (4, 4), (7, 7), (7, 7))),
                     (224, 224), 4.5, 0.02, 'Agent-Swin README 4.5 G (fvcore 4.53 G)'),
    'slab-swin-t': (dict(type='mmattn.SLABSwinTransformer', arch='tiny'), (224, 224), 4.49, 0.02,
                    'fvcore count of the official code (our spec; the SLAB README states none)'),
}


@pytest.mark.parametrize('name', sorted(PAPER))
def test_backbone_macs_match_paper(name):
    cfg, shape, paper, tol, _ = PAPER[name]
    res = get_flops.analyse(cfg, 'mmattn', 'backbone', shape)
    gmacs = res['flops'] / 2e9
    assert math.isclose(gmacs, paper, rel_tol=tol), (name, gmacs, paper)
    assert res['per_module'] and sum(res['per_module'].values()) == res['flops']


def test_bevanet_s_camvid_macs_match_paper():
    """BEVANet-S, CamVid (11 classes) at 720x960: the README's "20.1 G FLOPs" are MACs."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs/bevanet/bevanet-s_1xb24-100e_camvid-720x960.py'))
    res = get_flops.analyse(cfg.model, cfg.default_scope, None, (720, 960))
    assert res['kind'] == 'segmentor' and res['device'] == 'meta' and res['fallback'] is None
    assert math.isclose(res['flops'] / 2e9, 20.1, rel_tol=0.02), res['flops']
    assert set(res['per_module']) == {'backbone', 'decode_head'}


@pytest.mark.slow  # 4-9 s on meta here (512x2048 UperNet), over the fast tests' share
def test_agent_swin_t_upernet_macs_match_paper():
    """Agent-Swin-T UperNet (ADE20K) at 512x2048, the input of Swin's FLOPs: the README's 954 G."""
    from mmengine.config import Config
    cfg = Config.fromfile(
        str(ROOT / 'configs/agent_swin/upernet_agent-swin-t_8xb2-160k_ade20k-512x512.py'))
    res = get_flops.analyse(cfg.model, cfg.default_scope, None, (512, 2048))
    assert res['kind'] == 'segmentor' and res['device'] == 'meta' and res['fallback'] is None
    assert math.isclose(res['flops'] / 2e9, 954, rel_tol=0.02), res['flops']
    assert set(res['per_module']) == {'backbone', 'decode_head'}


def test_cli_detector_on_meta(capsys):
    cfg = ROOT / 'configs/biformer/retinanet_biformer-s_fpn_sample-coco.py'
    assert get_flops.main([str(cfg), '--shape', '64', '96']) == 0
    out = capsys.readouterr().out
    assert 'RetinaNet (detector), input 1x3x64x96, counted on meta' in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert {'backbone', 'neck', 'bbox_head', 'total'} <= set(rows)
    per = sum(float(rows[m][1]) for m in ('backbone', 'neck', 'bbox_head'))
    assert float(rows['backbone'][1]) > 0 and math.isclose(per, float(rows['total'][1]),
                                                           rel_tol=1e-3, abs_tol=2e-3)
    assert 'bmm' in out  # the routed attention is counted
    assert get_flops.main([str(cfg), '--shape', '64', '96', '--backbone-only']) == 0
    assert 'BiFormer (backbone)' in capsys.readouterr().out


@pytest.mark.slow
def test_two_stage_detector_falls_back_to_cpu():
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs/biformer/mask-rcnn_biformer-s_fpn_sample-coco.py'))
    res = get_flops.analyse(cfg.model, cfg.default_scope, None, (64, 64))
    assert res['device'] == 'cpu' and 'meta' in res['fallback']
    cpu = get_flops.analyse(cfg.model, cfg.default_scope, None, (64, 64), device='cpu')
    assert cpu['flops'] == res['flops'] and cpu['fallback'] is None
    assert {'backbone', 'neck', 'rpn_head', 'roi_head'} <= set(res['per_module'])


def test_3d_model_is_refused(capsys):
    cfg = ROOT / 'configs/scatterformer/scatterformer_sample-waymo.py'
    assert get_flops.main([str(cfg)]) == 2
    assert 'does not support 3D' in capsys.readouterr().err
