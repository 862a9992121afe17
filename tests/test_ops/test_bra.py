"""Bi-level routing attention: every backend against the official (gather) reference.

Outputs and gradients of ``torch`` (chunked, recompute) and ``triton`` (fused kernels, run under
``TRITON_INTERPRET=1`` on CPU) are compared with :func:`bra_reference`, the transcription of the
official legacy BRA, on tiny shapes: ragged region sizes (not multiples of the kernel tiles, as
auto_pad produces), topk = 1 and topk = all regions, query tiles spanning two blocks, pooled K/V
(Lk != Lq), different q/k and v head widths, strided q/k/v views of one projection. Outputs are
allocated poisoned with NaN, so a tile the kernel forgets to write fails the comparison.
Tolerances are per dtype: fp32 tight, fp16 looser (compared with the fp32 reference on the same
fp16-rounded inputs). The reference itself is checked against a per-(region, head) loop of the
legacy formula here, and, inside the model, against the official fixtures
(tests/test_models/test_biformer.py). The kernels are also compiled for a GPU target (no GPU
needed), since the interpreter accepts code the compiler rejects.
"""
import logging

import pytest
import torch
from _harness import assert_matches, compile_for_gpu, cuda_like, poison_allocations

import mmattn.ops.bra as bra
from mmattn.ops.bra import bra_attention, bra_chunked, bra_reference, choose_backend, topk_routing
from mmattn.ops.bra import chunked as chunked_mod
from mmattn.testing.marks import fast_first
from mmattn.testing.parity import max_rel_error

# name: (N, S, region h, region w, pooled kv per side or None, qk channels, v channels, heads, topk)
CASES = {
    'ragged_3x5': (1, 2, 3, 5, None, 32, 32, 2, 2),
    'topk1': (2, 2, 4, 4, None, 32, 32, 1, 1),
    'topk_all': (1, 2, 3, 3, None, 32, 32, 2, 4),
    'two_q_blocks': (1, 2, 7, 11, None, 16, 16, 1, 2),
    'pooled_kv': (1, 2, 4, 6, 2, 32, 32, 2, 3),
    'dv_ne_dqk': (1, 2, 3, 4, None, 32, 64, 2, 2),
}


def make_inputs(case: str, dtype=torch.float32, seed: int = 0):
    """Region-major q, k, v as strided views of one [q | k | v] tensor, routing from region means
    (as in the model); leaves for gradients."""
    n, s, h, w, pool, cqk, cv, m, topk = CASES[case]
    g = torch.Generator().manual_seed(seed)
    r, lq = s * s, h * w
    qkv = torch.randn(n, r, lq, 2 * cqk + cv, generator=g).to(dtype).requires_grad_()
    q, k, v = qkv.split([cqk, cqk, cv], dim=-1)
    r_idx = topk_routing(q.mean(2), k.mean(2), topk, cqk ** -0.5)
    if pool is not None:  # adaptive average pooling of k|v per region, Lk = pool * pool
        kv = qkv[..., cqk:].reshape(n * r, h, w, -1).permute(0, 3, 1, 2)
        kv = torch.nn.functional.adaptive_avg_pool2d(kv, pool).flatten(2).transpose(1, 2)
        k, v = kv.reshape(n, r, pool * pool, -1).split([cqk, cv], dim=-1)
    grad_out = torch.randn(n, r, lq, cv, generator=g).to(dtype)
    return qkv, (q, k, v, r_idx, m, cqk ** -0.5), grad_out


def run(fn, case: str, dtype) -> tuple:
    qkv, args, grad_out = make_inputs(case, dtype)
    out = fn(*args)
    (dqkv, ) = torch.autograd.grad(out, qkv, grad_out)
    return out, dqkv


def reference_fp32(case: str, dtype) -> tuple:
    qkv, args, grad_out = make_inputs(case, dtype)
    leaf = qkv.detach().float().requires_grad_()
    n_qk = args[0].shape[-1]
    q, k, v = leaf.split([n_qk, n_qk, leaf.shape[-1] - 2 * n_qk], dim=-1)
    if CASES[case][4] is not None:
        n, s, h, w, pool = CASES[case][:5]
        kv = leaf[..., n_qk:].reshape(n * s * s, h, w, -1).permute(0, 3, 1, 2)
        kv = torch.nn.functional.adaptive_avg_pool2d(kv, pool).flatten(2).transpose(1, 2)
        k, v = kv.reshape(n, s * s, pool * pool, -1).split([n_qk, v.shape[-1]], dim=-1)
    out = bra_reference(q, k, v, *args[3:])
    (dqkv, ) = torch.autograd.grad(out, leaf, grad_out.float())
    return out, dqkv


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Allocate every backend output filled with NaN."""
    poison_allocations(monkeypatch, chunked_mod, *([bra._triton_impl] if bra.HAS_TRITON else []))


def check_backend(backend: str, case: str, dtype) -> None:
    got = run(lambda *a: bra_attention(*a, backend=backend), case, dtype)
    assert_matches(f'{backend} {case}', got, reference_fp32(case, dtype), dtype)


@pytest.mark.parametrize('case', sorted(CASES))
def test_torch_backend_matches_reference(case):
    check_backend('torch', case, torch.float32)


@pytest.mark.parametrize('case', ['ragged_3x5', 'topk_all'])
def test_torch_backend_fp16(case):
    check_backend('torch', case, torch.float16)


def test_torch_backend_chunking_invariant():
    """Several chunks (down to one query region each) give the reference result."""
    ref_out, ref_dqkv = run(bra_reference, 'topk1', torch.float32)
    for chunk_elems in (1, 3 * 16 * 16):
        out, dqkv = run(lambda *a: bra_chunked(*a, chunk_elems=chunk_elems), 'topk1',
                        torch.float32)
        assert_matches(f'chunk_elems {chunk_elems}', (out, dqkv), (ref_out, ref_dqkv),
                       torch.float32)


def test_reference_is_the_official_formula():
    """The reference against a direct per-(region, head) loop of the legacy BRA formula."""
    (q, k, v, r_idx, m, scale), _ = make_inputs('ragged_3x5')[1:]
    out = bra_reference(q, k, v, r_idx, m, scale)
    n, r, lq, cqk = q.shape
    dq, dv = cqk // m, v.shape[-1] // m
    for b in range(n):
        for i in range(r):
            keys = torch.cat([k[b, j] for j in r_idx[b, i]])  # (topk Lk, Cqk)
            vals = torch.cat([v[b, j] for j in r_idx[b, i]])
            for h in range(m):
                logits = (q[b, i, :, h * dq:(h + 1) * dq] * scale) @ keys[:, h * dq:(h + 1) * dq].T
                expected = logits.softmax(-1) @ vals[:, h * dv:(h + 1) * dv]
                torch.testing.assert_close(out[b, i, :, h * dv:(h + 1) * dv], expected,
                                           rtol=1e-5, atol=1e-6)


def test_routing():
    g = torch.Generator().manual_seed(0)
    q_r, k_r = torch.randn(2, 9, 16, generator=g), torch.randn(2, 9, 16, generator=g)
    idx = topk_routing(q_r, k_r, 3, 0.25)
    expected = ((q_r * 0.25) @ k_r.transpose(1, 2)).topk(3, dim=-1).indices
    assert torch.equal(idx, expected) and idx.dtype == torch.int64
    with pytest.raises(ValueError, match='topk=10'):
        topk_routing(q_r, k_r, 10, 0.25)


def test_dispatch_asks_the_kernel(caplog):
    (q, k, v, r_idx, m, scale), _ = make_inputs('topk1')[1:]
    assert choose_backend(q, k, v, r_idx, m) == 'torch'  # CPU: never the interpreter
    assert choose_backend(q, k, v, r_idx, m, 'reference') == 'reference'
    gq, gv, gi = cuda_like(2, 4, 16, 64), cuda_like(2, 4, 16, 64), cuda_like(2, 4, 1)
    if not bra.HAS_TRITON:
        assert choose_backend(gq, gq, gv, gi, 2) == 'torch'
        return
    assert choose_backend(gq, gq, gv, gi, 2) == 'triton'
    half = cuda_like(2, 4, 16, 64, dtype=torch.float16)
    assert choose_backend(half, half, half, gi, 2) == 'triton'
    # a head dim wider than the Triton tiles: 'auto' falls back (and says why, once) ...
    wide = cuda_like(2, 4, 16, 512)
    with caplog.at_level(logging.INFO, logger='mmattn.ops.dispatch'):
        assert choose_backend(wide, wide, wide, gi, 2) == 'torch'
        assert choose_backend(wide, wide, wide, gi, 2) == 'torch'
    skipped = [r.getMessage() for r in caplog.records if 'head dims 256' in r.getMessage()]
    assert len(skipped) == 1 and "skips backend 'triton'" in skipped[0]
    # ... an explicit backend='triton' raises with the reason
    with pytest.raises(ValueError, match="backend='triton' cannot run .*head dims 256"):
        choose_backend(wide, wide, wide, gi, 2, 'triton')
    integer = cuda_like(2, 4, 16, 64, dtype=torch.int32)
    assert choose_backend(integer, integer, integer, gi, 2) == 'torch'


@pytest.mark.skipif(not bra.HAS_TRITON, reason='triton not installed')
def test_auto_sends_fp32_training_to_torch(caplog):
    """fp32 / fp64 with gradients: 'auto' takes 'torch' (the Triton fp32 backward measured
    slower); half precision and fp32 without gradients stay on Triton; explicit 'triton' runs."""
    gi = cuda_like(2, 4, 1)
    with caplog.at_level(logging.INFO, logger='mmattn.ops.dispatch'):
        for dtype, grad, expected in ((torch.float32, True, 'torch'),
                                      (torch.float64, True, 'torch'),
                                      (torch.float16, True, 'triton'),
                                      (torch.float32, False, 'triton')):
            q = cuda_like(2, 4, 16, 64, dtype=dtype, requires_grad=grad)
            v = cuda_like(2, 4, 16, 64, dtype=dtype)
            assert choose_backend(q, v, v, gi, 2) == expected, (dtype, grad)
            assert choose_backend(q, v, v, gi, 2, 'triton') == 'triton'
    assert any('torch.float32 with gradients' in r.getMessage() for r in caplog.records)
    q = cuda_like(2, 4, 16, 64, requires_grad=True)
    with torch.no_grad():
        assert choose_backend(q, q, q, gi, 2) == 'triton'


def test_bad_inputs(monkeypatch):
    (q, k, v, r_idx, m, scale), _ = make_inputs('ragged_3x5')[1:]  # 4 regions, topk 2
    with pytest.raises(ValueError, match='backend must be one of'):
        bra_attention(q, k, v, r_idx, m, scale, backend='cuda')
    with pytest.raises(ValueError, match='inconsistent shapes'):
        bra_attention(q, k[:, :, :, :8], v, r_idx, m, scale)
    with pytest.raises(ValueError, match='divisible by num_heads=3'):
        bra_attention(q, k, v, r_idx, 3, scale)
    with pytest.raises(ValueError, match='does not match q'):
        bra_attention(q, k, v, r_idx[:, :1], m, scale)
    # topk 0 and topk larger than the number of regions
    with pytest.raises(ValueError, match='topk=0 .* must be in \\[1, 4\\]'):
        bra_attention(q, k, v, r_idx[..., :0], m, scale)
    with pytest.raises(ValueError, match='topk=5 .* must be in \\[1, 4\\]'):
        bra_attention(q, k, v, torch.cat([r_idx, r_idx, r_idx[..., :1]], -1), m, scale)
    # bool / uint8 / float indices are not region indices
    for dtype in (torch.bool, torch.uint8, torch.float32):
        with pytest.raises(TypeError, match=f'int32 / int64 .*{dtype}'):
            bra_attention(q, k, v, r_idx.to(dtype), m, scale)
    with pytest.raises(ValueError, match='one device'):
        bra_attention(q, k, v, r_idx.to('meta'), m, scale)
    # out-of-range and negative indices: every backend, no host sync (immediate on CPU) ...
    backends = ['reference', 'torch'] + (['triton'] if bra.HAS_TRITON else [])
    for bad in (-1, 4):
        idx = r_idx.clone()
        idx[0, 1, 1] = bad
        for backend in backends:
            with pytest.raises(RuntimeError, match='r_idx .* outside \\[0, 4\\)'):
                bra_attention(q, k, v, idx, m, scale, backend=backend)
    # ... and with the values under debug checks
    monkeypatch.setenv('MMATTN_DEBUG_OPS', '1')
    with pytest.raises(ValueError, match='values in \\[-1, 3\\], outside \\[0, 4\\)'):
        idx = r_idx.clone()
        idx[0, 0, 0] = -1
        bra_attention(q, k, v, idx, m, scale)
    torch.testing.assert_close(bra_attention(q, k, v, r_idx.int(), m, scale),
                               bra_attention(q, k, v, r_idx, m, scale))
    monkeypatch.delenv('MMATTN_DEBUG_OPS')
    if bra.HAS_TRITON:
        monkeypatch.setenv('TRITON_INTERPRET', '0')
        with pytest.raises(ValueError, match='TRITON_INTERPRET=1'):
            bra_attention(q, k, v, r_idx, m, scale, backend='triton')


def nonfinite_pattern(backend: str) -> tuple:
    """'ragged_3x5' with a NaN in a query, a NaN in a key, an inf in a query and a -inf in a
    value: the NaN / inf positions of the output and of the gradient."""
    qkv, (q, k, v, r_idx, m, scale), grad_out = make_inputs('ragged_3x5')
    qkv = qkv.detach().clone()
    qkv[0, 0, 3, 1] = float('nan')
    qkv[0, 2, 5, 32 + 3] = float('nan')
    qkv[0, 1, 0, 0] = float('inf')
    qkv[0, 3, 7, 64 + 1] = float('-inf')
    qkv.requires_grad_()
    q, k, v = qkv.split([32, 32, 32], dim=-1)
    out = bra_attention(q, k, v, r_idx, m, scale, backend=backend)
    (dqkv, ) = torch.autograd.grad(out, qkv, grad_out)
    return out.isnan(), dqkv.isnan(), out.isinf(), dqkv.isinf()


def test_nan_inf_propagate_as_in_reference():
    expected = nonfinite_pattern('reference')
    assert expected[0].any() and expected[1].any()
    for backend in ['torch'] + (['triton'] if bra.HAS_TRITON else []):
        got = nonfinite_pattern(backend)
        for name, a, b in zip(('out nan', 'grad nan', 'out inf', 'grad inf'), got, expected):
            assert torch.equal(a, b), (backend, name, int((a != b).sum()))


@pytest.mark.parametrize('backend', ['reference', 'torch'])
def test_autocast_bf16_matches_fp32(backend):
    """Under CPU autocast (bf16) q, k, v are cast to bf16 and the op computes in bf16 (logits
    and attention weights rounded to bf16; fp32 softmax statistics in the torch backend), backward
    under the forward's autocast state (custom_fwd / custom_bwd): output and gradients within
    3e-2 (relative to the largest value) of fp32 on the same bf16-rounded inputs and output
    gradient (bf16 rounds to 8 bits, ~4e-3 relative, several times per product chain)."""
    qkv, (q, k, v, r_idx, m, scale), grad_out = make_inputs('ragged_3x5')
    grad_out = grad_out.bfloat16()

    def grads(autocast: bool):
        leaf = qkv.detach().bfloat16().float().requires_grad_()
        q, k, v = leaf.split([32, 32, 32], dim=-1)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = bra_attention(q, k, v, r_idx, m, scale, backend=backend)
        assert out.dtype == (torch.bfloat16 if autocast else torch.float32)
        (dqkv, ) = torch.autograd.grad(out, leaf, grad_out.to(out.dtype))
        assert dqkv.dtype == torch.float32
        return out.float(), dqkv

    errors = [max_rel_error(a, b) for a, b in zip(grads(True), grads(False))]
    assert max(errors) <= 3e-2 and min(errors) > 0, errors  # > 0: it really ran in bf16


def gradcheck_inputs():
    """Smallest case: 3 regions, each query region routed to 2 (so key regions are shared),
    head dim 2 (well below the 16-wide tiles)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 3, 1, 2, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    return q, k, v, topk_routing(q.mean(2), k.mean(2), 2, 0.5)


def test_torch_backend_gradcheck():
    q, k, v, r_idx = gradcheck_inputs()
    assert torch.autograd.gradcheck(lambda a, b, c: bra_chunked(a, b, c, r_idx, 1, 0.5),
                                    (q, k, v))


requires_triton = pytest.mark.skipif(not bra.HAS_TRITON, reason='triton is not installed')


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize('case', sorted(CASES))
def test_triton_backend_matches_reference(case):
    check_backend('triton', case, torch.float32)


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize('case', ['ragged_3x5', 'topk1', 'topk_all'])
def test_triton_backend_fp16(case):
    check_backend('triton', case, torch.float16)


@pytest.mark.triton
@requires_triton
def test_triton_backward_is_deterministic():
    first = run(lambda *a: bra_attention(*a, backend='triton'), 'topk_all', torch.float32)
    second = run(lambda *a: bra_attention(*a, backend='triton'), 'topk_all', torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.slow
@pytest.mark.triton
@requires_triton
def test_triton_gradcheck():
    q, k, v, r_idx = gradcheck_inputs()
    assert torch.autograd.gradcheck(
        lambda a, b, c: bra_attention(a, b, c, r_idx, 1, 0.5, backend='triton'), (q, k, v))


COMPILE_SCRIPT = r'''
import os, sys
os.environ.pop('TRITON_INTERPRET', None)
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mmattn.ops.bra import triton as T

arch, dtype = int(sys.argv[1]), sys.argv[2]
t = '*' + dtype
consts = dict(DQ=32, DV=32, BLOCK_M=64, BLOCK_N=64, BLOCK_DQ=32, BLOCK_DV=32, ACC=tl.float32,
              PREC='ieee' if dtype == 'fp32' else None)
pointers = {
    T._bra_fwd_kernel: dict(Q=t, K=t, V=t, IDX='*i64', O=t, LSE='*fp32'),
    T._bra_bwd_dq_kernel: dict(Q=t, K=t, V=t, IDX='*i64', DO=t, LSE='*fp32', DELTA='*fp32',
                               DQ_OUT=t),
    T._bra_bwd_dkv_kernel: dict(Q=t, K=t, V=t, PTR='*i32', QLIST='*i32', DO=t, LSE='*fp32',
                                DELTA='*fp32', DK_OUT=t, DV_OUT=t)}
for fn, ptrs in pointers.items():
    sig = {n: 'constexpr' if n in consts else ptrs.get(n, 'fp32' if n == 'scale' else 'i32')
           for n in fn.arg_names}
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                   target=GPUTarget('cuda', arch, 32), options=dict(num_warps=4, num_stages=2))
    print(fn.__name__, 'compiled')
'''


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize('arch', fast_first([80, 90]))
@pytest.mark.parametrize('dtype', fast_first(['fp32', 'bf16']))
def test_triton_kernels_compile_for_gpu(arch, dtype):
    """The interpreter accepts code the GPU compiler rejects: compile the three kernels for
    sm_80 and sm_90 (Triton frontend, LLVM and the bundled ptxas; no GPU needed) in a fresh
    process without TRITON_INTERPRET. fp32 (IEEE dots) and bf16 (which the interpreter cannot
    run; fp16 takes the same path)."""
    compile_for_gpu(COMPILE_SCRIPT, arch, dtype, kernels=3)
