"""Scattered linear attention (ScatterFormer): every backend against the plain PyTorch reference.

Outputs and gradients (q, k, v) of ``torch`` (chunked, recompute) and ``triton`` (kernels split
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
import os
import subprocess
import sys

import pytest
import torch

import mmattn.ops.sla as sla
from mmattn.models.layers.sla_layer import SLALayer
from mmattn.ops.sla import choose_backend, scattered_linear_attention, sla_chunked, sla_reference
from mmattn.ops.sla import chunked as chunked_mod
from mmattn.testing.parity import load_fixture, max_rel_error, state_dict_from_fixture

# (out, grads) tolerances, relative to max |expected|
TOL = {torch.float32: (2e-6, 2e-5), torch.float16: (3e-3, 1e-2)}

# name: (window row counts, heads, head dim)
CASES = {
    'empty_and_single': ([0, 1, 0, 3, 1, 0], 2, 16),
    'one_window': ([37], 2, 16),
    'many_windows': ([5, 0, 9, 1, 16, 17, 2, 0, 4, 8, 3, 6], 2, 32),
    'long_window': ([2, 70, 5], 1, 16),
}

requires_triton = pytest.mark.skipif(not sla.HAS_TRITON, reason='triton is not installed')


def windows(counts):
    counts = torch.tensor(counts, dtype=torch.int64)
    return torch.cumsum(counts, 0) - counts, counts


def make_inputs(case: str, dtype=torch.float32, seed: int = 0):
    """q, k, v as strided views of one (N, 3, H, D) leaf, window offsets/counts and a fixed
    output gradient."""
    counts, h, d = CASES[case]
    offsets, counts = windows(counts)
    n = int(counts.sum())
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(n, 3, h, d, generator=g).to(dtype).requires_grad_()
    grad_out = torch.randn(n, h, d, generator=g).to(dtype)
    return qkv, offsets, counts, grad_out


def run(fn, qkv, offsets, counts, grad_out) -> tuple:
    out = fn(*qkv.unbind(1), offsets, counts)
    (dqkv, ) = torch.autograd.grad(out, qkv, grad_out)
    return out, dqkv


def reference_fp32(case: str, dtype) -> tuple:
    qkv, offsets, counts, grad_out = make_inputs(case, dtype)
    leaf = qkv.detach().float().requires_grad_()
    out, dqkv = run(sla_reference, leaf, offsets, counts, grad_out.float())
    return out.detach(), dqkv


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Allocate every backend output (and Triton state buffer) filled with NaN; Triton chunks of
    16 rows, so that windows span several programs on tiny inputs."""

    def nan_empty(shape, dtype, device):
        return torch.full(shape, float('nan'), dtype=dtype, device=device)

    monkeypatch.setattr(chunked_mod, '_empty', nan_empty)
    if sla.HAS_TRITON:
        monkeypatch.setattr(sla._triton_impl, '_empty', nan_empty)
        monkeypatch.setattr(sla._triton_impl, 'BLOCK_N', 16)


def check_backend(backend: str, case: str, dtype) -> None:
    out, dqkv = run(lambda *a: scattered_linear_attention(*a, backend=backend),
                    *make_inputs(case, dtype))
    ref_out, ref_dqkv = reference_fp32(case, dtype)
    tol_out, tol_grad = TOL[dtype]
    assert out.dtype == dtype and dqkv.dtype == dtype
    err_out, err_grad = max_rel_error(out, ref_out), max_rel_error(dqkv, ref_dqkv)
    assert err_out <= tol_out, (case, err_out)
    assert err_grad <= tol_grad, (case, err_grad)


@pytest.mark.parametrize('case', sorted(CASES))
def test_torch_backend_matches_reference(case):
    check_backend('torch', case, torch.float32)


@pytest.mark.parametrize('case', ['empty_and_single', 'many_windows'])
def test_torch_backend_fp16(case):
    check_backend('torch', case, torch.float16)


def test_torch_backend_chunking_invariant():
    """Several chunks (down to one row each) give the reference result."""
    inputs = make_inputs('many_windows')
    ref_out, ref_dqkv = run(sla_reference, *inputs)
    ref_out = ref_out.detach()
    for chunk_elems in (1, 3 * 2 * 32 * 32):
        out, dqkv = run(lambda *a: sla_chunked(*a, chunk_elems=chunk_elems), *inputs)
        assert max_rel_error(out, ref_out) <= 2e-6 and max_rel_error(dqkv, ref_dqkv) <= 2e-5


def test_reference_is_softmax_free_attention():
    """The reference against the quadratic form per window: A = relu(Q) relu(K)^T,
    out = A V / (rowsum(A) + eps)."""
    qkv, offsets, counts, _ = make_inputs('many_windows')
    q, k, v = qkv.detach().double().unbind(1)
    out = sla_reference(q, k, v, offsets, counts)
    for start, count in zip(offsets.tolist(), counts.tolist()):
        rows = slice(start, start + count)
        for h in range(q.shape[1]):
            attn = torch.relu(q[rows, h]) @ torch.relu(k[rows, h]).T
            expected = attn @ v[rows, h] / (attn.sum(-1, keepdim=True) + 1e-6)
            torch.testing.assert_close(out[rows, h], expected, rtol=1e-10, atol=1e-12)


def test_zero_rows_give_zero():
    """A row whose query is all non-positive gets 0 (eps keeps the division finite)."""
    qkv, offsets, counts, _ = make_inputs('one_window')
    q, k, v = qkv.detach().unbind(1)
    q = q.clone()
    q[3] = -q[3].abs()
    for backend in ('reference', 'torch'):
        out = scattered_linear_attention(q, k, v, offsets, counts, backend=backend)
        assert torch.isfinite(out).all() and not out[3].any()


def test_dispatch_and_errors(monkeypatch):
    assert choose_backend(torch.device('cpu')) == 'torch'
    assert choose_backend(torch.device('cpu'), 'reference') == 'reference'
    if sla.HAS_TRITON:
        assert choose_backend(torch.device('cuda')) == 'triton'
    qkv, offsets, counts, _ = make_inputs('empty_and_single')
    q, k, v = qkv.detach().unbind(1)
    with pytest.raises(ValueError, match='backend must be one of'):
        scattered_linear_attention(q, k, v, offsets, counts, backend='cuda')
    with pytest.raises(ValueError, match='one shape'):
        scattered_linear_attention(q, k[..., :8], v, offsets, counts)
    with pytest.raises(TypeError, match='one floating dtype'):
        scattered_linear_attention(q, k.double(), v, offsets, counts)
    with pytest.raises(TypeError, match='int64'):
        scattered_linear_attention(q, k, v, offsets.int(), counts.int())
    with pytest.raises(ValueError, match='shape \\(M,\\)'):
        scattered_linear_attention(q, k, v, offsets[:-1], counts)
    with pytest.raises(ValueError, match='N=5'):
        scattered_linear_attention(q, k, v, offsets, counts + 1)
    with pytest.raises(ValueError, match='exclusive cumsum'):
        scattered_linear_attention(q, k, v, torch.zeros_like(offsets), counts)
    if sla.HAS_TRITON:
        for d in (24, 8):  # not a power of two; below the 16-wide dot tiles
            x = torch.randn(5, 2, d)
            with pytest.raises(ValueError, match=f'head dim D={d} .*\\(5, 2, {d}\\)'):
                scattered_linear_attention(x, x, x, offsets, counts, backend='triton')
        # the torch backends take any head dim
        x = torch.randn(5, 2, 24)
        assert scattered_linear_attention(x, x, x, offsets, counts).shape == (5, 2, 24)
        monkeypatch.setenv('TRITON_INTERPRET', '0')
        with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
            scattered_linear_attention(q, k, v, offsets, counts, backend='triton')


def test_no_rows():
    """All windows empty (N = 0): an empty output and empty gradients."""
    offsets, counts = windows([0, 0])
    q = torch.zeros(0, 2, 16, requires_grad=True)
    backends = ('reference', 'torch') + (('triton', ) if sla.HAS_TRITON else ())
    for backend in backends:
        out = scattered_linear_attention(q, q, q, offsets, counts, backend=backend)
        assert out.shape == (0, 2, 16)
        (grad, ) = torch.autograd.grad(out.sum(), q)
        assert grad.shape == (0, 2, 16)


def gradcheck_inputs(d: int):
    """Smallest case: windows of 1, 3, 0 and 2 rows, one head."""
    offsets, counts = windows([1, 3, 0, 2])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 1, d, generator=g, dtype=torch.float64).requires_grad_()
               for _ in range(3))
    return (q, k, v), offsets, counts


def test_torch_backend_gradcheck():
    inputs, offsets, counts = gradcheck_inputs(4)
    assert torch.autograd.gradcheck(
        lambda a, b, c: sla_chunked(a, b, c, offsets, counts, chunk_elems=16), inputs)


def run_layer(backend: str):
    fx = load_fixture('SLA.op')
    layer = SLALayer(128, 4, backend=backend)
    layer.load_state_dict(state_dict_from_fixture(fx))
    x, offsets, counts, batch_win_inds = fx['inputs']['n401_m13']
    x = x.clone().requires_grad_()
    y = layer(x, offsets, counts, batch_win_inds)
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
    offsets, counts = windows([2, 0, 3])
    assert layer(torch.randn(5, 32), offsets, counts).shape == (5, 32)
    with pytest.raises(ValueError, match='divisible by num_heads=3'):
        SLALayer(32, 3)
    with pytest.raises(ValueError, match='batch_win_inds'):
        layer(torch.randn(5, 32), offsets, counts, torch.zeros(4, dtype=torch.int64))


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
    chunk table gives every window its contiguous chunk range (none for empty windows)."""
    offsets, counts = windows([2, 70, 0, 5])
    cwin, cstart, cend, cptr = sla._triton_impl.chunk_table(offsets, counts, 16)
    assert cwin.tolist() == [0, 1, 1, 1, 1, 1, 3]
    assert cstart.tolist() == [0, 2, 18, 34, 50, 66, 72]
    assert cend.tolist() == [2, 72, 72, 72, 72, 72, 77]
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
    inputs, offsets, counts = gradcheck_inputs(16)
    assert torch.autograd.gradcheck(
        lambda a, b, c: scattered_linear_attention(a, b, c, offsets, counts, backend='triton'),
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
@pytest.mark.parametrize('dtype', ['fp32', 'fp16'])
def test_triton_kernels_compile_for_gpu(dtype):
    """The interpreter accepts code the GPU compiler rejects: compile the five kernels for sm_90
    (Triton frontend, LLVM and the bundled ptxas; no GPU needed) in a fresh process without
    TRITON_INTERPRET."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    proc = subprocess.run([sys.executable, '-c', COMPILE_SCRIPT, '90', dtype], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('compiled') == 5
