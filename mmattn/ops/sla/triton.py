"""Scattered linear attention: Triton kernels (forward, backward) and their autograd.Function.

The rows of every window are cut into chunks of ``block`` rows (aligned to the window start), and
every kernel runs one program per (chunk, head), so a long window (up to 2304 rows in
ScatterFormer) is spread over many programs instead of looping inside one:

Forward:

1. ``_sla_partial_state_kernel``: per chunk, the partial state ``relu(k)^T v`` (D x D) and key sum
   ``sum relu(k)`` (D), stored to an fp32 ``(chunks, H, D * D + D)`` buffer.
2. ``_sla_reduce_kernel``: one program per (window, head, slice of D * D + D) sums its chunks'
   partials in chunk order: a deterministic reduction, no atomics (an empty window gets zeros).
3. ``_sla_fwd_kernel``: per chunk, ``out = (relu(q) S) / (relu(q) . z + eps)`` with the
   normaliser fused.

Backward (recomputes ``S, z`` with 1 and 2; only ``q, k, v`` and the chunk table are saved):

4. ``_sla_bwd_dq_kernel``: per chunk, recomputes out and the normaliser, stores dq, and the
   partial ``dS = relu(q)^T dnum`` and ``dz = sum dden * relu(q)``; 2 reduces them per window.
5. ``_sla_bwd_dkv_kernel``: per chunk, ``dk = (v dS^T + dz) * [k > 0]`` and ``dv = relu(k) dS``.

q, k, v may be strided views (e.g. slices of one qkv projection); the head dim D must be a power
of two in [16, 128] (``tl.arange`` and ``tl.dot`` tile constraints). Products with k and v tiles
are done in the input dtype with fp32 accumulation (IEEE fp32, no TF32, for fp32 inputs); the
states, normaliser and every product with a state are fp32 (fp64 for fp64 inputs, for
gradcheck). The output and gradients are in the input dtype.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from mmattn.ops.dispatch import interpreting
from mmattn.ops.flops import sla_backward_flops, sla_forward_flops

# Rows per chunk (one program per chunk and head).
BLOCK_N = 64


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Allocation of kernel outputs (tests poison it with NaN to catch missed writes)."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _relu(x):
    """max(x, 0) with NaN kept (``torch.relu``'s semantics; a plain max drops NaN)."""
    return tl.maximum(x, 0., propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _sla_partial_state_kernel(
        K, V, CSTART, CEND, P, sk_n, sk_h, sk_d, sv_n, sv_h, sv_d, NH,
        D: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    start = tl.load(CSTART + c)
    end = tl.load(CEND + c)
    rows = start + tl.arange(0, BLOCK_N)
    mask = (rows < end)[:, None]
    offs_d = tl.arange(0, D)
    k = tl.load(K + rows[:, None] * sk_n + h * sk_h + offs_d[None, :] * sk_d, mask=mask, other=0.)
    v = tl.load(V + rows[:, None] * sv_n + h * sv_h + offs_d[None, :] * sv_d, mask=mask, other=0.)
    k = _relu(k).to(v.dtype)
    s = tl.dot(tl.trans(k), v, input_precision=PREC, out_dtype=ACC)  # (D, D)
    z = tl.sum(k.to(ACC), 0)  # (D,)
    base = P + (c * NH + h) * (D * D + D)
    tl.store(base + offs_d[:, None] * D + offs_d[None, :], s)
    tl.store(base + D * D + offs_d, z)


@triton.jit
def _sla_reduce_kernel(P, CPTR, OUT, NH, X: tl.constexpr, BLOCK_X: tl.constexpr,
                       ACC: tl.constexpr):
    w = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    offs = tl.program_id(2) * BLOCK_X + tl.arange(0, BLOCK_X)
    mask = offs < X
    first = tl.load(CPTR + w)
    last = tl.load(CPTR + w + 1)
    acc = tl.zeros([BLOCK_X], dtype=ACC)
    for c in range(first, last):
        acc += tl.load(P + (c * NH + h) * X + offs, mask=mask, other=0.)
    tl.store(OUT + (w * NH + h) * X + offs, acc, mask=mask)


@triton.jit
def _sla_fwd_kernel(
        Q, ST, CWIN, CSTART, CEND, O, sq_n, sq_h, sq_d, so_n, so_h, so_d, NH, eps,
        D: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    w = tl.load(CWIN + c).to(tl.int64)
    start = tl.load(CSTART + c)
    end = tl.load(CEND + c)
    rows = start + tl.arange(0, BLOCK_N)
    mask = (rows < end)[:, None]
    offs_d = tl.arange(0, D)
    base = ST + (w * NH + h) * (D * D + D)
    s = tl.load(base + offs_d[:, None] * D + offs_d[None, :])  # (D, D) in ACC
    z = tl.load(base + D * D + offs_d)
    q = tl.load(Q + rows[:, None] * sq_n + h * sq_h + offs_d[None, :] * sq_d, mask=mask, other=0.)
    qf = _relu(q.to(ACC))
    num = tl.dot(qf, s, input_precision='ieee', out_dtype=ACC)
    den = tl.sum(qf * z[None, :], 1) + eps
    out = num / den[:, None]
    tl.store(O + rows[:, None] * so_n + h * so_h + offs_d[None, :] * so_d,
             out.to(O.dtype.element_ty), mask=mask)


@triton.jit
def _sla_bwd_dq_kernel(
        Q, DO, ST, CWIN, CSTART, CEND, DQ, P, sq_n, sq_h, sq_d, sg_n, sg_h, sg_d,
        sdq_n, sdq_h, sdq_d, NH, eps, D: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    w = tl.load(CWIN + c).to(tl.int64)
    start = tl.load(CSTART + c)
    end = tl.load(CEND + c)
    rows = start + tl.arange(0, BLOCK_N)
    mask = (rows < end)[:, None]
    offs_d = tl.arange(0, D)
    base = ST + (w * NH + h) * (D * D + D)
    s = tl.load(base + offs_d[:, None] * D + offs_d[None, :])
    z = tl.load(base + D * D + offs_d)
    q = tl.load(Q + rows[:, None] * sq_n + h * sq_h + offs_d[None, :] * sq_d, mask=mask, other=0.)
    g = tl.load(DO + rows[:, None] * sg_n + h * sg_h + offs_d[None, :] * sg_d, mask=mask,
                other=0.).to(ACC)
    qf = _relu(q.to(ACC))
    den = tl.sum(qf * z[None, :], 1) + eps
    out = tl.dot(qf, s, input_precision='ieee', out_dtype=ACC) / den[:, None]
    dnum = g / den[:, None]  # dL / d(relu(q) S)
    dden = -tl.sum(g * out, 1) / den  # dL / d(relu(q) . z)
    dqf = (tl.dot(dnum, tl.trans(s), input_precision='ieee', out_dtype=ACC)
           + dden[:, None] * z[None, :])
    dq = tl.where(q <= 0, 0., dqf)  # relu's backward: NaN passes
    tl.store(DQ + rows[:, None] * sdq_n + h * sdq_h + offs_d[None, :] * sdq_d,
             dq.to(DQ.dtype.element_ty), mask=mask)
    ds = tl.dot(tl.trans(qf), dnum, input_precision='ieee', out_dtype=ACC)  # (D, D)
    dz = tl.sum(dden[:, None] * qf, 0)
    pbase = P + (c * NH + h) * (D * D + D)
    tl.store(pbase + offs_d[:, None] * D + offs_d[None, :], ds)
    tl.store(pbase + D * D + offs_d, dz)


@triton.jit
def _sla_bwd_dkv_kernel(
        K, V, DST, CWIN, CSTART, CEND, DK, DV, sk_n, sk_h, sk_d, sv_n, sv_h, sv_d,
        sdk_n, sdk_h, sdk_d, sdv_n, sdv_h, sdv_d, NH,
        D: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    w = tl.load(CWIN + c).to(tl.int64)
    start = tl.load(CSTART + c)
    end = tl.load(CEND + c)
    rows = start + tl.arange(0, BLOCK_N)
    mask = (rows < end)[:, None]
    offs_d = tl.arange(0, D)
    base = DST + (w * NH + h) * (D * D + D)
    ds = tl.load(base + offs_d[:, None] * D + offs_d[None, :])
    dz = tl.load(base + D * D + offs_d)
    k = tl.load(K + rows[:, None] * sk_n + h * sk_h + offs_d[None, :] * sk_d, mask=mask, other=0.)
    v = tl.load(V + rows[:, None] * sv_n + h * sv_h + offs_d[None, :] * sv_d, mask=mask, other=0.)
    kf = _relu(k.to(ACC))
    dkf = tl.dot(v.to(ACC), tl.trans(ds), input_precision='ieee', out_dtype=ACC) + dz[None, :]
    dk = tl.where(k <= 0, 0., dkf)
    dv = tl.dot(kf, ds, input_precision='ieee', out_dtype=ACC)
    tl.store(DK + rows[:, None] * sdk_n + h * sdk_h + offs_d[None, :] * sdk_d,
             dk.to(DK.dtype.element_ty), mask=mask)
    tl.store(DV + rows[:, None] * sdv_n + h * sdv_h + offs_d[None, :] * sdv_d,
             dv.to(DV.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype) -> Tuple[torch.dtype, object]:
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _launch_opts() -> dict:
    return {} if interpreting() else dict(num_warps=4, num_stages=2)


def chunk_table(cu_seqlens: Tensor, num_rows: int, block: int) -> Tuple[Tensor, ...]:
    """Chunks of ``block`` rows, window by window (window-aligned), built without a host sync.

    The number of chunks ``sum_w ceil(count_w / block)`` is data-dependent, so the table has the
    bound ``min(N, N // block + M)`` entries (a shape-only number); entries past the real chunks
    are empty (``cstart = cend = 0``) and their programs write nothing the reduction reads.

    Returns ``cwin`` (C,) int32 window of each chunk, ``cstart`` / ``cend`` (C,) int64 its first
    row and the end of its window, and ``cptr`` (M + 1,) int64 the chunk range of every window.
    """
    m = cu_seqlens.numel() - 1
    device = cu_seqlens.device
    cu = cu_seqlens.long()
    nch = (cu[1:] - cu[:-1] + block - 1) // block
    cptr = torch.zeros(m + 1, dtype=torch.int64, device=device)
    torch.cumsum(nch, 0, out=cptr[1:])
    chunk = torch.arange(min(num_rows, num_rows // block + m), device=device)
    cwin = torch.searchsorted(cptr[1:], chunk, right=True)  # == M past the last real chunk
    real = cwin < m
    cwin = cwin.clamp_(max=max(m - 1, 0))
    cstart = torch.where(real, cu[cwin] + (chunk - cptr[cwin]) * block, 0)
    cend = torch.where(real, cu[cwin + 1], 0)
    return cwin.to(torch.int32), cstart, cend, cptr


def _reduce(partial: Tensor, cptr: Tensor, m: int, nh: int, d: int) -> Tensor:
    """Per-window sums of the chunk partials ``(C, H, D*D + D)`` -> ``(M, H, D*D + D)``."""
    x = d * d + d
    out = _empty((m, nh, x), partial.dtype, partial.device)
    if m == 0:
        return out
    block_x = min(triton.next_power_of_2(x), 4096)
    _sla_reduce_kernel[(m, nh, triton.cdiv(x, block_x))](
        partial, cptr, out, nh, X=x, BLOCK_X=block_x, ACC=_acc(partial.dtype)[1],
        **_launch_opts())
    return out


def _window_state(k: Tensor, v: Tensor, table: Tuple[Tensor, ...], m: int,
                  block: int) -> Tensor:
    """``(M, H, D*D + D)``: every window's state ``S`` (row-major) followed by its key sum."""
    _, nh, d = k.shape
    cwin, cstart, cend, cptr = table
    acc, tl_acc = _acc(k.dtype)
    partial = _empty((cwin.numel(), nh, d * d + d), acc, k.device)
    if cwin.numel():
        _sla_partial_state_kernel[(cwin.numel(), nh)](
            k, v, cstart, cend, partial, *k.stride(), *v.stride(), nh, D=d, BLOCK_N=block,
            ACC=tl_acc, PREC='ieee' if k.dtype in (torch.float32, torch.float64) else None,
            **_launch_opts())
    return _reduce(partial, cptr, m, nh, d)


def sla_triton_forward(q: Tensor, k: Tensor, v: Tensor, table: Tuple[Tensor, ...], m: int,
                       eps: float, block: int) -> Tensor:
    """Forward: ``out (N, H, D)`` in the dtype of ``q``."""
    n, nh, d = q.shape
    cwin, cstart, cend, _ = table
    state = _window_state(k, v, table, m, block)
    out = _empty((n, nh, d), q.dtype, q.device)
    if cwin.numel():
        _sla_fwd_kernel[(cwin.numel(), nh)](
            q, state, cwin, cstart, cend, out, *q.stride(), *out.stride(), nh, eps, D=d,
            BLOCK_N=block, ACC=_acc(q.dtype)[1], **_launch_opts())
    return out


def sla_triton_backward(q: Tensor, k: Tensor, v: Tensor, table: Tuple[Tensor, ...], m: int,
                        eps: float, block: int, dout: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Backward (recomputes the window states): ``(dq, dk, dv)`` shaped like ``q, k, v``."""
    n, nh, d = q.shape
    cwin, cstart, cend, cptr = table
    acc, tl_acc = _acc(q.dtype)
    dq = _empty((n, nh, d), q.dtype, q.device)
    dk = _empty((n, nh, d), k.dtype, k.device)
    dv = _empty((n, nh, d), v.dtype, v.device)
    if not cwin.numel():
        return dq, dk, dv
    state = _window_state(k, v, table, m, block)
    partial = _empty((cwin.numel(), nh, d * d + d), acc, q.device)
    grid = (cwin.numel(), nh)
    _sla_bwd_dq_kernel[grid](
        q, dout, state, cwin, cstart, cend, dq, partial, *q.stride(), *dout.stride(),
        *dq.stride(), nh, eps, D=d, BLOCK_N=block, ACC=tl_acc, **_launch_opts())
    del state
    dstate = _reduce(partial, cptr, m, nh, d)
    del partial
    _sla_bwd_dkv_kernel[grid](
        k, v, dstate, cwin, cstart, cend, dk, dv, *k.stride(), *v.stride(), *dk.stride(),
        *dv.stride(), nh, D=d, BLOCK_N=block, ACC=tl_acc, **_launch_opts())
    return dq, dk, dv


# The kernel launches as custom ops, so that dispatch modes (FlopCounterMode, fake tensors) see
# them; the impl is the launch itself (same tensors, no copies).
@torch.library.custom_op('mmattn::sla_fwd', mutates_args=())
def _sla_fwd_op(q: Tensor, k: Tensor, v: Tensor, cwin: Tensor, cstart: Tensor, cend: Tensor,
                cptr: Tensor, m: int, eps: float, block: int) -> Tensor:
    return sla_triton_forward(q, k, v, (cwin, cstart, cend, cptr), m, eps, block)


@_sla_fwd_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, cwin: Tensor, cstart: Tensor, cend: Tensor, cptr: Tensor,
      m: int, eps: float, block: int) -> Tensor:
    return q.new_empty(q.shape)


@torch.library.custom_op('mmattn::sla_bwd', mutates_args=())
def _sla_bwd_op(q: Tensor, k: Tensor, v: Tensor, cwin: Tensor, cstart: Tensor, cend: Tensor,
                cptr: Tensor, m: int, eps: float, block: int,
                dout: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    return sla_triton_backward(q, k, v, (cwin, cstart, cend, cptr), m, eps, block, dout)


@_sla_bwd_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, cwin: Tensor, cstart: Tensor, cend: Tensor, cptr: Tensor,
      m: int, eps: float, block: int, dout: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


@register_flop_formula(torch.ops.mmattn.sla_fwd)
def _sla_fwd_flop(q_shape, *args, out_shape=None, **kwargs) -> int:
    return sla_forward_flops(q_shape)


@register_flop_formula(torch.ops.mmattn.sla_bwd)
def _sla_bwd_flop(q_shape, *args, out_shape=None, **kwargs) -> int:
    return sla_backward_flops(q_shape)


class SLATritonFunction(torch.autograd.Function):
    """autograd wrapper: saves ``q, k, v`` and the chunk table; recomputes the window states in
    backward. ``cu_seqlens`` gets no gradient. Under CUDA autocast the kernels run in the dtype of
    ``q, k, v``; backward runs with the forward's autocast state (``custom_fwd`` / ``custom_bwd``).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type='cuda')
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, eps: float,
                block: int) -> Tensor:
        table = chunk_table(cu_seqlens, q.shape[0], block)
        m = cu_seqlens.numel() - 1
        out = torch.ops.mmattn.sla_fwd(q, k, v, *table, m, eps, block)
        ctx.save_for_backward(q, k, v, *table)
        ctx.cfg = (m, eps, block)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type='cuda')
    def backward(ctx, dout: Tensor) -> Tuple[Optional[Tensor], ...]:
        q, k, v, *table = ctx.saved_tensors
        m, eps, block = ctx.cfg
        dq, dk, dv = torch.ops.mmattn.sla_bwd(q, k, v, *table, m, eps, block, dout.to(q.dtype))
        return dq, dk, dv, None, None, None


def sla_triton(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, eps: float = 1e-6,
               block: Optional[int] = None) -> Tensor:
    """Triton SLA; arguments and result as :func:`~mmattn.ops.sla.reference.sla_reference`.

    ``block`` is the number of rows per chunk (per program), a power of two >= 16; ``None``:
    :data:`BLOCK_N`. Inputs are checked by :func:`mmattn.ops.sla.scattered_linear_attention`.
    """
    block = BLOCK_N if block is None else block
    if block < 16 or block & (block - 1):
        raise ValueError(f'sla_triton: block={block} must be a power of two >= 16')
    return SLATritonFunction.apply(q, k, v, cu_seqlens, eps, block)
