"""Scattered linear attention (ScatterFormer): every backend against the plain PyTorch reference.

Outputs and gradients (q, k, v) of ``torch`` (both its CPU paths: windows padded in power-of-two
length buckets, and chunked with recompute) and ``triton`` (kernels split
long windows over programs, run under ``TRITON_INTERPRET=1`` on CPU) are compared with
:func:`sla_reference` on tiny shapes: empty windows, windows of one row, one window, many
windows, a window spanning several chunks (the Triton chunk is cut to 16 rows here, so a 70-row
window takes 5 programs per head). q, k, v are strided views of one qkv tensor, as in the layer.
Outputs are allocated poisoned with NaN (and so are the Triton partial-state buffers), so a tile
a kernel forgets to write fails the comparison. Tolerances are per dtype: fp32 tight, fp16 looser
(compared with the fp32 reference on the same fp16-rounded inputs). The reference itself is
checked against the quadratic form of softmax-free attention per window, and the layer against
the official fixture ``SLA.op.pt``. The kernels are also compiled for a GPU target (no GPU
needed), since the interpreter accepts code the compiler rejects.
"""
import logging

import pytest
import torch
from _harness import assert_matches, compile_for_gpu, cuda_like, poison_allocations

import mmattn.ops.sla as sla
from mmattn.models.layers.sla_layer import SLALayer
from mmattn.ops.sla import (choose_backend, cu_seqlens_from_counts, scattered_linear_attention,
                            sla_chunked, sla_reference)
from mmattn.ops.sla import chunked as chunked_mod
from mmattn.testing.marks import fast_first
from mmattn.testing.parity import load_fixture, max_rel_error, state_dict_from_fixture

# name: (window row counts, heads, head dim)
CASES = {
    'empty_and_single': ([0, 1, 0, 3, 1, 0], 2, 16),
    'one_window': ([37], 2, 16),
    'many_windows': ([5, 0, 9, 1, 16, 17, 2, 0, 4, 8, 3, 6], 2, 32),
    'long_window': ([2, 70, 5], 1, 16),
}

requires_triton = pytest.mark.skipif(not sla.HAS_TRITON, reason='triton is not installed')


def windows(counts):
    """Window offsets ``cu_seqlens (M + 1,)`` of windows with these row counts."""
    return cu_seqlens_from_counts(torch.tensor(counts, dtype=torch.int64))


def make_inputs(case: str, dtype=torch.float32, seed: int = 0):
    """q, k, v as strided views of one (N, 3, H, D) leaf, window offsets and a fixed output
    gradient."""
    counts, h, d = CASES[case]
    cu_seqlens = windows(counts)
    n = sum(counts)
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(n, 3, h, d, generator=g).to(dtype).requires_grad_()
    grad_out = torch.randn(n, h, d, generator=g).to(dtype)
    return qkv, cu_seqlens, grad_out


def run(fn, qkv, cu_seqlens, grad_out) -> tuple:
    out = fn(*qkv.unbind(1), cu_seqlens)
    (dqkv, ) = torch.autograd.grad(out, qkv, grad_out)
    return out, dqkv


def reference_fp32(case: str, dtype) -> tuple:
    qkv, cu_seqlens, grad_out = make_inputs(case, dtype)
    leaf = qkv.detach().float().requires_grad_()
    out, dqkv = run(sla_reference, leaf, cu_seqlens, grad_out.float())
    return out.detach(), dqkv


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Allocate every backend output (and Triton state buffer) filled with NaN; Triton chunks of
    16 rows, so that windows span several programs on tiny inputs."""
    poison_allocations(monkeypatch, chunked_mod, *([sla._triton_impl] if sla.HAS_TRITON else []))
    if sla.HAS_TRITON:
        monkeypatch.setattr(sla._triton_impl, 'BLOCK_N', 16)


def check_backend(backend: str, case: str, dtype) -> None:
    got = run(lambda *a: scattered_linear_attention(*a, backend=backend),
              *make_inputs(case, dtype))
    assert_matches(f'{backend} {case}', got, reference_fp32(case, dtype), dtype)


@pytest.fixture(params=['padded', 'chunked'])
def torch_path(request, monkeypatch):
    """The ``torch`` backend's CPU path under test: padded windows (the default budget) or the
    chunked recompute (budget 0); a spy records which one ran."""
    if request.param == 'chunked':
        monkeypatch.setattr(chunked_mod, 'PAD_ELEMS', 0)
    ran = []
    padded = chunked_mod._sla_padded
    monkeypatch.setattr(chunked_mod, '_sla_padded', lambda *a: ran.append(1) or padded(*a))
    yield request.param
    assert bool(ran) == (request.param == 'padded'), f'the {request.param} path did not run'


@pytest.mark.parametrize('case', sorted(CASES))
def test_torch_backend_matches_reference(case, torch_path):
    check_backend('torch', case, torch.float32)


@pytest.mark.parametrize('case', ['empty_and_single', 'many_windows'])
def test_torch_backend_fp16(case, torch_path):
    check_backend('torch', case, torch.float16)


def test_torch_backend_padded_budget():
    """The padded path runs on the CPU while the padded (M, L, H, D) tensor fits the budget, the
    chunked one above it (and always on CUDA, where reading L would sync with the host)."""
    qkv, cu_seqlens, _ = make_inputs('long_window')  # M 3, L 70, H 1, D 16
    q = qkv.detach()[:, 0]
    assert chunked_mod._padded_length(q, cu_seqlens, 3 * 70 * 16) == 70
    assert chunked_mod._padded_length(q, cu_seqlens, 3 * 70 * 16 - 1) is None
    assert chunked_mod._padded_length(q, cu_seqlens, 0) is None
    assert chunked_mod._padded_length(cuda_like(*q.shape), cu_seqlens, 1 << 30) is None


def test_torch_backend_chunking_invariant():
    """Several chunks (down to one row each) give the reference result."""
    inputs = make_inputs('many_windows')
    ref_out, ref_dqkv = run(sla_reference, *inputs)
    ref_out = ref_out.detach()
    for chunk_elems in (1, 3 * 2 * 32 * 32):
        out, dqkv = run(lambda *a: sla_chunked(*a, chunk_elems=chunk_elems, pad_elems=0),
                        *inputs)
        assert_matches(f'chunk_elems {chunk_elems}', (out, dqkv), (ref_out, ref_dqkv),
                       torch.float32)


def test_reference_is_softmax_free_attention():
    """The reference against the quadratic form per window: A = relu(Q) relu(K)^T,
    out = A V / (rowsum(A) + eps)."""
    qkv, cu_seqlens, _ = make_inputs('many_windows')
    q, k, v = qkv.detach().double().unbind(1)
    out = sla_reference(q, k, v, cu_seqlens)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        rows = slice(start, end)
        for h in range(q.shape[1]):
            attn = torch.relu(q[rows, h]) @ torch.relu(k[rows, h]).T
            expected = attn @ v[rows, h] / (attn.sum(-1, keepdim=True) + 1e-6)
            torch.testing.assert_close(out[rows, h], expected, rtol=1e-10, atol=1e-12)


def test_zero_rows_give_zero():
    """A row whose query is all non-positive gets 0 (eps keeps the division finite)."""
    qkv, cu_seqlens, _ = make_inputs('one_window')
    q, k, v = qkv.detach().unbind(1)
    q = q.clone()
    q[3] = -q[3].abs()
    for backend in ('reference', 'torch'):
        out = scattered_linear_attention(q, k, v, cu_seqlens, backend=backend)
        assert torch.isfinite(out).all() and not out[3].any()


def test_dispatch_asks_the_kernel(caplog):
    cpu = torch.zeros(5, 2, 16)
    assert choose_backend(cpu, cpu, cpu) == 'torch'
    assert choose_backend(cpu, cpu, cpu, 'reference') == 'reference'
    if not sla.HAS_TRITON:
        x = cuda_like(5, 4, 32)
        assert choose_backend(x, x, x) == 'torch'
        return
    # SLALayer(192, 4) on a GPU: head dim 48 is not a Triton tile, 'auto' falls back to torch
    # and says why (once); a power-of-two head dim takes the kernels
    x = cuda_like(5, 4, 48)
    with caplog.at_level(logging.INFO, logger='mmattn.ops.dispatch'):
        assert choose_backend(x, x, x) == 'torch'
        assert choose_backend(x, x, x) == 'torch'
    skipped = [r.getMessage() for r in caplog.records if 'head dim D=48' in r.getMessage()]
    assert len(skipped) == 1 and "skips backend 'triton'" in skipped[0]
    x = cuda_like(5, 4, 32)
    assert choose_backend(x, x, x) == 'triton'
    for dtype in (torch.float16, torch.float64):
        x = cuda_like(5, 4, 32, dtype=dtype)
        assert choose_backend(x, x, x) == 'triton'
    # CPU tensors never go to the interpreter under 'auto', even with TRITON_INTERPRET=1
    assert sla.can_run_triton(cpu, cpu, cpu) is False
    # explicit backend='triton' on input it cannot run: the reason
    x = cuda_like(5, 4, 48)
    with pytest.raises(ValueError, match="backend='triton' cannot run .*head dim D=48"):
        choose_backend(x, x, x, 'triton')


def test_bad_inputs(monkeypatch):
    qkv, cu_seqlens, _ = make_inputs('empty_and_single')  # counts [0, 1, 0, 3, 1, 0]
    q, k, v = qkv.detach().unbind(1)
    with pytest.raises(ValueError, match='backend must be one of'):
        scattered_linear_attention(q, k, v, cu_seqlens, backend='cuda')
    with pytest.raises(ValueError, match='one shape'):
        scattered_linear_attention(q, k[..., :8], v, cu_seqlens)
    with pytest.raises(TypeError, match='one floating dtype'):
        scattered_linear_attention(q, k.double(), v, cu_seqlens)
    with pytest.raises(TypeError, match='int32 / int64'):
        scattered_linear_attention(q, k, v, cu_seqlens.float())
    with pytest.raises(ValueError, match='shape \\(M \\+ 1,\\)'):
        scattered_linear_attention(q, k, v, cu_seqlens[:0])
    with pytest.raises(ValueError, match='one device'):
        scattered_linear_attention(q, k, v, cu_seqlens.to('meta'))
    # values: checked without a host sync (an assert that is immediate on CPU) ...
    bad = {'short': cu_seqlens[:-3], 'shifted': cu_seqlens + 1,
           'decreasing': torch.tensor([0, 3, 1, 5])}
    for backend in ('reference', 'torch'):
        for case in bad.values():
            with pytest.raises(RuntimeError, match='must rise from 0 to N=5'):
                scattered_linear_attention(q, k, v, case, backend=backend)
    # ... and with the values under debug checks
    monkeypatch.setenv('MMATTN_DEBUG_OPS', '1')
    with pytest.raises(ValueError, match='cu_seqlens\\[-1\\]=6'):
        scattered_linear_attention(q, k, v, cu_seqlens + 1)
    with pytest.raises(ValueError, match='decreasing after windows \\[1\\]'):
        scattered_linear_attention(q, k, v, bad['decreasing'])
    # int32 offsets are accepted
    torch.testing.assert_close(scattered_linear_attention(q, k, v, cu_seqlens.int()),
                               scattered_linear_attention(q, k, v, cu_seqlens))
    monkeypatch.delenv('MMATTN_DEBUG_OPS')
    if sla.HAS_TRITON:
        for d in (24, 8):  # not a power of two; below the 16-wide dot tiles
            x = torch.randn(5, 2, d)
            with pytest.raises(ValueError, match=f'head dim D={d} .*\\(5, 2, {d}\\)'):
                scattered_linear_attention(x, x, x, cu_seqlens, backend='triton')
        # the torch backends take any head dim
        x = torch.randn(5, 2, 24)
        assert scattered_linear_attention(x, x, x, cu_seqlens).shape == (5, 2, 24)
        monkeypatch.setenv('TRITON_INTERPRET', '0')
        with pytest.raises(ValueError, match='TRITON_INTERPRET=1'):
            scattered_linear_attention(q, k, v, cu_seqlens, backend='triton')


def nan_inputs():
    """'many_windows' with a NaN in one q row, a NaN in one k row (window 5: rows 31..47), an
    inf in another q row and a -inf in a v row."""
    qkv, cu_seqlens, grad_out = make_inputs('many_windows')
    qkv = qkv.detach().clone()
    qkv[2, 0, 1, 3] = float('nan')  # q of row 2 (window 0)
    qkv[40, 1, 0, 5] = float('nan')  # k of row 40 (window 5)
    qkv[20, 0, 0, 0] = float('inf')  # q of row 20
    qkv[60, 2, 1, 7] = float('-inf')  # v of row 60
    return qkv.requires_grad_(), cu_seqlens, grad_out


def nonfinite_pattern(backend: str) -> tuple:
    fn = sla_reference if backend == 'reference' else (
        lambda *a: scattered_linear_attention(*a, backend=backend))
    out, dqkv = run(fn, *nan_inputs())
    return tuple(t.isnan() for t in (out, dqkv)) + tuple(t.isinf() for t in (out, dqkv))


def test_nan_inf_propagate_as_in_reference():
    """NaN / inf in q, k or v reach exactly the outputs and gradients they reach in the
    reference (a NaN key poisons its window; relu keeps NaN)."""
    expected = nonfinite_pattern('reference')
    assert expected[0].any() and expected[1].any()
    backends = ['torch'] + (['triton'] if sla.HAS_TRITON else [])
    for backend in backends:
        got = nonfinite_pattern(backend)
        for name, a, b in zip(('out nan', 'grad nan', 'out inf', 'grad inf'), got, expected):
            assert torch.equal(a, b), (backend, name, int((a != b).sum()))


@pytest.mark.parametrize('backend', ['reference', 'torch'])
def test_autocast_bf16_matches_fp32(backend):
    """Under CPU autocast (bf16) q, k, v are cast to bf16 and the op computes with fp32
    accumulation, backward under the forward's autocast state (custom_fwd / custom_bwd): output
    and gradients within 1e-2 (relative to the largest value) of fp32 on the same bf16-rounded
    inputs and output gradient (bf16 rounds to 8 bits, ~4e-3 relative)."""
    qkv, cu_seqlens, grad_out = make_inputs('many_windows')
    grad_out = grad_out.bfloat16()

    def run_op(autocast: bool):
        leaf = qkv.detach().bfloat16().float().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = scattered_linear_attention(*leaf.unbind(1), cu_seqlens, backend=backend)
        assert out.dtype == (torch.bfloat16 if autocast else torch.float32)
        (dqkv, ) = torch.autograd.grad(out, leaf, grad_out.to(out.dtype))
        assert dqkv.dtype == torch.float32
        return out.float(), dqkv

    errors = [max_rel_error(a, b) for a, b in zip(run_op(True), run_op(False))]
    assert max(errors) <= 1e-2 and min(errors) > 0, errors  # > 0: it really ran in bf16


def test_layer_under_autocast():
    """The layer trains under CPU autocast: bf16 output, fp32 gradients of its fp32 weights."""
    torch.manual_seed(0)
    layer = SLALayer(64, 2, backend='torch')
    x = torch.randn(64, 64, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = layer(x, windows([5, 0, 37, 22]))
    assert y.dtype == torch.bfloat16
    y.float().square().mean().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    assert layer.qkv.weight.grad.dtype == torch.float32


def test_no_rows():
    """All windows empty (N = 0): an empty output and empty gradients."""
    cu_seqlens = windows([0, 0])
    q = torch.zeros(0, 2, 16, requires_grad=True)
    backends = ('reference', 'torch') + (('triton', ) if sla.HAS_TRITON else ())
    for backend in backends:
        out = scattered_linear_attention(q, q, q, cu_seqlens, backend=backend)
        assert out.shape == (0, 2, 16)
        (grad, ) = torch.autograd.grad(out.sum(), q)
        assert grad.shape == (0, 2, 16)


def gradcheck_inputs(d: int):
    """Smallest case: windows of 1, 3, 0 and 2 rows, one head."""
    cu_seqlens = windows([1, 3, 0, 2])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 1, d, generator=g, dtype=torch.float64).requires_grad_()
               for _ in range(3))
    return (q, k, v), cu_seqlens


def test_torch_backend_gradcheck():
    inputs, cu_seqlens = gradcheck_inputs(4)
    assert torch.autograd.gradcheck(
        lambda a, b, c: sla_chunked(a, b, c, cu_seqlens, chunk_elems=16), inputs)


def run_layer(backend: str):
    fx = load_fixture('SLA.op')
    layer = SLALayer(128, 4, backend=backend)
    layer.load_state_dict(state_dict_from_fixture(fx))
    # official inputs: window offsets and counts; the layer takes cu_seqlens
    x, _, counts, batch_win_inds = fx['inputs']['n401_m13']
    x = x.clone().requires_grad_()
    y = layer(x, cu_seqlens_from_counts(counts), batch_win_inds)
    grads = fx['grads']['n401_m13']
    got = torch.autograd.grad(y, [x, layer.qkv.weight, layer.proj.weight, layer.proj.bias],
                              grads['grad_output'])
    expected = [grads[k] for k in ('x', 'qkv.weight', 'proj.weight', 'proj.bias')]
    return (max_rel_error(y, fx['outputs']['n401_m13']), max_rel_error(got, expected))


@pytest.mark.parametrize('backend', ['reference', 'torch'])
def test_layer_matches_official_fixture(backend):
    err_out, err_grad = run_layer(backend)
    assert err_out <= 1e-4 and err_grad <= 1e-4, (err_out, err_grad)


def test_layer_api():
    layer = SLALayer(32, 2, backend='reference')
    assert [k for k in layer.state_dict()] == ['qkv.weight', 'proj.weight', 'proj.bias']
    cu_seqlens = windows([2, 0, 3])
    assert layer(torch.randn(5, 32), cu_seqlens).shape == (5, 32)
    with pytest.raises(ValueError, match='divisible by num_heads=3'):
        SLALayer(32, 3)
    with pytest.raises(ValueError, match='batch_win_inds'):
        layer(torch.randn(5, 32), cu_seqlens, torch.zeros(4, dtype=torch.int64))


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize('case', sorted(CASES))
def test_triton_backend_matches_reference(case):
    check_backend('triton', case, torch.float32)


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize('case', ['empty_and_single', 'long_window'])
def test_triton_backend_fp16(case):
    check_backend('triton', case, torch.float16)


@pytest.mark.triton
@requires_triton
def test_triton_splits_long_windows():
    """The 70-row window is cut into 5 chunks of 16 rows (one program each per head), and the
    chunk table gives every window its contiguous chunk range (none for empty windows). The
    table is sized without a host sync, min(N, N // 16 + M) = 8 entries: the one past the 7
    real chunks is empty (start = end)."""
    cwin, cstart, cend, cptr = sla._triton_impl.chunk_table(windows([2, 70, 0, 5]), 77, 16)
    assert cwin.tolist() == [0, 1, 1, 1, 1, 1, 3, 3]
    assert cstart.tolist() == [0, 2, 18, 34, 50, 66, 72, 0]
    assert cend.tolist() == [2, 72, 72, 72, 72, 72, 77, 0]
    assert cptr.tolist() == [0, 1, 6, 6, 7]


@pytest.mark.triton
@requires_triton
def test_triton_backward_is_deterministic():
    inputs = make_inputs('long_window')
    first = run(lambda *a: scattered_linear_attention(*a, backend='triton'), *inputs)
    second = run(lambda *a: scattered_linear_attention(*a, backend='triton'), *inputs)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.triton
@requires_triton
def test_triton_gradcheck():
    inputs, cu_seqlens = gradcheck_inputs(16)
    assert torch.autograd.gradcheck(
        lambda a, b, c: scattered_linear_attention(a, b, c, cu_seqlens, backend='triton'),
        inputs, fast_mode=True)


@pytest.mark.triton
@requires_triton
def test_triton_layer_matches_official_fixture(monkeypatch):
    """The official fixture through the layer, with the default 64-row chunks."""
    monkeypatch.setattr(sla._triton_impl, 'BLOCK_N', 64)
    err_out, err_grad = run_layer('triton')
    assert err_out <= 1e-4 and err_grad <= 1e-4, (err_out, err_grad)


COMPILE_SCRIPT = r'''
import os, sys
os.environ.pop('TRITON_INTERPRET', None)
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mmattn.ops.sla import triton as T

arch, dtype = int(sys.argv[1]), sys.argv[2]
t = '*' + dtype
consts = dict(D=32, BLOCK_N=64, ACC=tl.float32, PREC='ieee' if dtype == 'fp32' else None)
pointers = {
    T._sla_partial_state_kernel: dict(K=t, V=t, CSTART='*i64', CEND='*i64', P='*fp32'),
    T._sla_reduce_kernel: dict(P='*fp32', CPTR='*i64', OUT='*fp32'),
    T._sla_fwd_kernel: dict(Q=t, ST='*fp32', CWIN='*i32', CSTART='*i64', CEND='*i64', O=t),
    T._sla_bwd_dq_kernel: dict(Q=t, DO=t, ST='*fp32', CWIN='*i32', CSTART='*i64', CEND='*i64',
                               DQ=t, P='*fp32'),
    T._sla_bwd_dkv_kernel: dict(K=t, V=t, DST='*fp32', CWIN='*i32', CSTART='*i64',
                                CEND='*i64', DK=t, DV=t)}
for fn, ptrs in pointers.items():
    c = dict(consts, X=32 * 33, BLOCK_X=2048)
    c = {n: c[n] for n in fn.arg_names if n in c}
    sig = {n: 'constexpr' if n in c else ptrs.get(n, 'fp32' if n == 'eps' else 'i32')
           for n in fn.arg_names}
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=c),
                   target=GPUTarget('cuda', arch, 32), options=dict(num_warps=4, num_stages=2))
    print(fn.__name__, 'compiled')
'''


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize('arch', fast_first([80, 90]))
@pytest.mark.parametrize('dtype', fast_first(['fp32', 'fp16', 'bf16']))
def test_triton_kernels_compile_for_gpu(arch, dtype):
    """The interpreter accepts code the GPU compiler rejects: compile the five kernels for sm_80
    and sm_90 (Triton frontend, LLVM and the bundled ptxas; no GPU needed) in a fresh process
    without TRITON_INTERPRET; bf16, which the interpreter cannot run, included."""
    compile_for_gpu(COMPILE_SCRIPT, arch, dtype, kernels=5)
