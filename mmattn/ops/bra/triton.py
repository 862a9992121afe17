"""Bi-level routing attention: fused Triton kernels (forward, backward) and their autograd.Function.

Forward: one program per (image, query region, head, block of query rows) streams over the
``topk`` routed key/value regions **by index** (K/V tiles are loaded straight from the un-gathered
tensors) with an online softmax, so neither gathered K/V nor the logits are ever materialised;
it stores the output and the per-row log-sum-exp.

Backward (recompute, no atomics):

* dQ: same grid as the forward; re-streams the routed regions of each query block.
* dK/dV: one program per (image, key/value region, head, block of key rows) walks the *inverted*
  routing graph (the query regions that picked this key/value region, a CSR list built in torch)
  and accumulates dK and dV in registers; every key/value row is written by exactly one program,
  so the result is deterministic.

Inputs may be strided views (e.g. slices of one qkv projection); head ``h`` owns channels
``[h * d, (h + 1) * d)``. fp32 matmuls use IEEE precision (no TF32) so fp32 results match the
reference to ~1e-6; fp16/bf16 inputs are multiplied in their own dtype with fp32 accumulation;
fp64 accumulates in fp64 (for gradcheck).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from mmattn.ops.dispatch import interpreting
from mmattn.ops.flops import bra_backward_flops, bra_forward_flops


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Allocation of kernel outputs (tests poison it with NaN to catch missed writes)."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _bra_fwd_kernel(
        Q, K, V, IDX, O, LSE,
        sq_n, sq_r, sq_l, sq_c, sk_n, sk_r, sk_l, sk_c, sv_n, sv_r, sv_l, sv_c,
        si_n, si_r, si_t, so_n, so_r, so_l, so_c,
        R, LQ, LK, TOPK, M, scale,
        DQ: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    pid_nr = tl.program_id(0)
    h = tl.program_id(1)
    pid_m = tl.program_id(2)
    n = (pid_nr // R).to(tl.int64)
    r = pid_nr % R
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dq = tl.arange(0, BLOCK_DQ)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_m = offs_m < LQ
    mask_dq = offs_dq < DQ
    mask_dv = offs_dv < DV

    q_ptrs = (Q + n * sq_n + r * sq_r + offs_m[:, None] * sq_l
              + (h * DQ + offs_dq)[None, :] * sq_c)
    q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_dq[None, :], other=0.)
    q = (q.to(ACC) * scale).to(q.dtype)

    m_i = tl.full([BLOCK_M], float('-inf'), dtype=ACC)
    l_i = tl.zeros([BLOCK_M], dtype=ACC)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=ACC)
    for t in range(0, TOPK):
        kr = tl.load(IDX + n * si_n + r * si_r + t * si_t)
        k_base = K + n * sk_n + kr * sk_r
        v_base = V + n * sv_n + kr * sv_r
        for start_n in range(0, LK, BLOCK_N):
            cols = start_n + offs_n
            mask_n = cols < LK
            kt = tl.load(k_base + cols[None, :] * sk_l + (h * DQ + offs_dq)[:, None] * sk_c,
                         mask=mask_dq[:, None] & mask_n[None, :], other=0.)  # (BLOCK_DQ, BLOCK_N)
            s = tl.dot(q, kt, input_precision=PREC, out_dtype=ACC)
            s = tl.where(mask_n[None, :], s, float('-inf'))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            vt = tl.load(v_base + cols[:, None] * sv_l + (h * DV + offs_dv)[None, :] * sv_c,
                         mask=mask_n[:, None] & mask_dv[None, :], other=0.)  # (BLOCK_N, BLOCK_DV)
            acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision=PREC,
                                                out_dtype=ACC)
            m_i = m_new
    acc = acc / l_i[:, None]
    o_ptrs = (O + n * so_n + r * so_r + offs_m[:, None] * so_l
              + (h * DV + offs_dv)[None, :] * so_c)
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_dv[None, :])
    tl.store(LSE + (pid_nr * M + h) * LQ + offs_m, m_i + tl.log(l_i), mask=mask_m)


@triton.jit
def _bra_bwd_dq_kernel(
        Q, K, V, IDX, DO, LSE, DELTA, DQ_OUT,
        sq_n, sq_r, sq_l, sq_c, sk_n, sk_r, sk_l, sk_c, sv_n, sv_r, sv_l, sv_c,
        si_n, si_r, si_t, sd_n, sd_r, sd_l, sd_c, sg_n, sg_r, sg_l, sg_c,
        R, LQ, LK, TOPK, M, scale,
        DQ: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    pid_nr = tl.program_id(0)
    h = tl.program_id(1)
    pid_m = tl.program_id(2)
    n = (pid_nr // R).to(tl.int64)
    r = pid_nr % R
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dq = tl.arange(0, BLOCK_DQ)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_m = offs_m < LQ
    mask_dq = offs_dq < DQ
    mask_dv = offs_dv < DV

    q = tl.load(Q + n * sq_n + r * sq_r + offs_m[:, None] * sq_l
                + (h * DQ + offs_dq)[None, :] * sq_c,
                mask=mask_m[:, None] & mask_dq[None, :], other=0.)
    q = (q.to(ACC) * scale).to(q.dtype)
    do = tl.load(DO + n * sd_n + r * sd_r + offs_m[:, None] * sd_l
                 + (h * DV + offs_dv)[None, :] * sd_c,
                 mask=mask_m[:, None] & mask_dv[None, :], other=0.)
    row = (pid_nr * M + h) * LQ + offs_m
    lse = tl.load(LSE + row, mask=mask_m, other=0.)
    delta = tl.load(DELTA + row, mask=mask_m, other=0.)

    dq = tl.zeros([BLOCK_M, BLOCK_DQ], dtype=ACC)
    for t in range(0, TOPK):
        kr = tl.load(IDX + n * si_n + r * si_r + t * si_t)
        k_base = K + n * sk_n + kr * sk_r
        v_base = V + n * sv_n + kr * sv_r
        for start_n in range(0, LK, BLOCK_N):
            cols = start_n + offs_n
            mask_n = cols < LK
            k = tl.load(k_base + cols[:, None] * sk_l + (h * DQ + offs_dq)[None, :] * sk_c,
                        mask=mask_n[:, None] & mask_dq[None, :], other=0.)  # (BLOCK_N, BLOCK_DQ)
            vt = tl.load(v_base + cols[None, :] * sv_l + (h * DV + offs_dv)[:, None] * sv_c,
                         mask=mask_dv[:, None] & mask_n[None, :], other=0.)  # (BLOCK_DV, BLOCK_N)
            s = tl.dot(q, tl.trans(k), input_precision=PREC, out_dtype=ACC)
            p = tl.exp(s - lse[:, None])
            p = tl.where(mask_m[:, None] & mask_n[None, :], p, 0.)
            dp = tl.dot(do, vt, input_precision=PREC, out_dtype=ACC)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC, out_dtype=ACC)
    dq = dq * scale
    tl.store(DQ_OUT + n * sg_n + r * sg_r + offs_m[:, None] * sg_l
             + (h * DQ + offs_dq)[None, :] * sg_c,
             dq.to(DQ_OUT.dtype.element_ty), mask=mask_m[:, None] & mask_dq[None, :])


@triton.jit
def _bra_bwd_dkv_kernel(
        Q, K, V, PTR, QLIST, DO, LSE, DELTA, DK_OUT, DV_OUT,
        sq_n, sq_r, sq_l, sq_c, sk_n, sk_r, sk_l, sk_c, sv_n, sv_r, sv_l, sv_c,
        sd_n, sd_r, sd_l, sd_c, sgk_n, sgk_r, sgk_l, sgk_c, sgv_n, sgv_r, sgv_l, sgv_c,
        R, LQ, LK, M, scale,
        DQ: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    pid_nr = tl.program_id(0)  # key/value region (image-major)
    h = tl.program_id(1)
    pid_n = tl.program_id(2)
    n = (pid_nr // R).to(tl.int64)
    kr = pid_nr % R
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_dq = tl.arange(0, BLOCK_DQ)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_n = offs_n < LK
    mask_dq = offs_dq < DQ
    mask_dv = offs_dv < DV

    k = tl.load(K + n * sk_n + kr * sk_r + offs_n[:, None] * sk_l
                + (h * DQ + offs_dq)[None, :] * sk_c,
                mask=mask_n[:, None] & mask_dq[None, :], other=0.)  # (BLOCK_N, BLOCK_DQ)
    v = tl.load(V + n * sv_n + kr * sv_r + offs_n[:, None] * sv_l
                + (h * DV + offs_dv)[None, :] * sv_c,
                mask=mask_n[:, None] & mask_dv[None, :], other=0.)  # (BLOCK_N, BLOCK_DV)
    dk = tl.zeros([BLOCK_N, BLOCK_DQ], dtype=ACC)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=ACC)
    start = tl.load(PTR + pid_nr)
    end = tl.load(PTR + pid_nr + 1)
    for e in range(start, end):
        qg = tl.load(QLIST + e)  # query region, image-major like pid_nr
        qn = (qg // R).to(tl.int64)
        qr = qg % R
        for start_m in range(0, LQ, BLOCK_M):
            rows = start_m + offs_m
            mask_m = rows < LQ
            q = tl.load(Q + qn * sq_n + qr * sq_r + rows[:, None] * sq_l
                        + (h * DQ + offs_dq)[None, :] * sq_c,
                        mask=mask_m[:, None] & mask_dq[None, :], other=0.)  # (BLOCK_M, BLOCK_DQ)
            q = (q.to(ACC) * scale).to(q.dtype)
            do = tl.load(DO + qn * sd_n + qr * sd_r + rows[:, None] * sd_l
                         + (h * DV + offs_dv)[None, :] * sd_c,
                         mask=mask_m[:, None] & mask_dv[None, :], other=0.)  # (BLOCK_M, BLOCK_DV)
            row = (qg * M + h) * LQ + rows
            lse = tl.load(LSE + row, mask=mask_m, other=0.)
            delta = tl.load(DELTA + row, mask=mask_m, other=0.)
            st = tl.dot(k, tl.trans(q), input_precision=PREC, out_dtype=ACC)  # (BLOCK_N, BLOCK_M)
            pt = tl.exp(st - lse[None, :])
            pt = tl.where(mask_n[:, None] & mask_m[None, :], pt, 0.)
            dv += tl.dot(pt.to(do.dtype), do, input_precision=PREC, out_dtype=ACC)
            dpt = tl.dot(v, tl.trans(do), input_precision=PREC, out_dtype=ACC)
            dst = pt * (dpt - delta[None, :])
            dk += tl.dot(dst.to(q.dtype), q, input_precision=PREC, out_dtype=ACC)
    tl.store(DK_OUT + n * sgk_n + kr * sgk_r + offs_n[:, None] * sgk_l
             + (h * DQ + offs_dq)[None, :] * sgk_c,
             dk.to(DK_OUT.dtype.element_ty), mask=mask_n[:, None] & mask_dq[None, :])
    tl.store(DV_OUT + n * sgv_n + kr * sgv_r + offs_n[:, None] * sgv_l
             + (h * DV + offs_dv)[None, :] * sgv_c,
             dv.to(DV_OUT.dtype.element_ty), mask=mask_n[:, None] & mask_dv[None, :])


_ACC = {torch.float64: tl.float64}


def _launch_cfg(q: Tensor, dq: int, dv: int) -> dict:
    bd_q, bd_v = max(16, triton.next_power_of_2(dq)), max(16, triton.next_power_of_2(dv))
    cfg = dict(DQ=dq, DV=dv, BLOCK_DQ=bd_q, BLOCK_DV=bd_v, ACC=_ACC.get(q.dtype, tl.float32),
               PREC='ieee' if q.dtype in (torch.float32, torch.float64) else None)
    if not interpreting():
        cfg['num_warps'] = 4
        cfg['num_stages'] = 2
    return cfg


def _blocks(length_q: int, length_k: int) -> Tuple[int, int]:
    """Row tiles: 64 (or the next power of two of a shorter region, at least 16)."""
    return (min(64, max(16, triton.next_power_of_2(length_q))),
            min(64, max(16, triton.next_power_of_2(length_k))))


def _strides(x: Tensor) -> Tuple[int, ...]:
    return tuple(x.stride())


def _inverse_routing(r_idx: Tensor) -> Tuple[Tensor, Tensor]:
    """CSR of the routing graph by key/value region: for each (image-major) kv region, the
    (image-major) query regions that routed to it. Returns ``ptr`` (N R + 1,) and ``qlist``."""
    n, r, topk = r_idx.shape
    base = torch.arange(n, device=r_idx.device).view(n, 1, 1) * r
    kv = (r_idx.long() + base).reshape(-1)
    qs = torch.arange(n * r, device=r_idx.device).repeat_interleave(topk)
    order = torch.argsort(kv, stable=True)
    counts = torch.zeros(n * r, dtype=torch.int64, device=r_idx.device).index_add_(
        0, kv, torch.ones_like(kv))  # bincount would sync with the host on CUDA
    ptr = torch.zeros(n * r + 1, dtype=torch.int32, device=r_idx.device)
    ptr[1:] = torch.cumsum(counts, 0)
    return ptr, qs[order].to(torch.int32).contiguous()


def bra_triton_forward(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
                       scale: float) -> Tuple[Tensor, Tensor]:
    """Fused forward: ``(out (N, R, Lq, Cv), lse (N, R, m, Lq) fp32)``."""
    n, r, lq, cqk = q.shape
    lk, cv, topk = k.shape[2], v.shape[-1], r_idx.shape[-1]
    m = num_heads
    out = _empty((n, r, lq, cv), q.dtype, q.device)
    lse = _empty((n, r, m, lq), torch.float32, q.device)
    bm, bn = _blocks(lq, lk)
    grid = (n * r, m, triton.cdiv(lq, bm))
    _bra_fwd_kernel[grid](
        q, k, v, r_idx, out, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(r_idx),
        *_strides(out), r, lq, lk, topk, m, scale, BLOCK_M=bm, BLOCK_N=bn,
        **_launch_cfg(q, cqk // m, cv // m))
    return out, lse


def bra_triton_backward(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, out: Tensor,
                        lse: Tensor, dout: Tensor, num_heads: int,
                        scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Fused backward: ``(dq, dk, dv)`` shaped like ``q, k, v``."""
    n, r, lq, cqk = q.shape
    lk, cv, topk = k.shape[2], v.shape[-1], r_idx.shape[-1]
    m = num_heads
    dv_head = cv // m
    delta = (dout.float().reshape(n, r, lq, m, dv_head)
             * out.float().reshape(n, r, lq, m, dv_head)).sum(-1).permute(0, 1, 3, 2).contiguous()
    dq = _empty((n, r, lq, cqk), q.dtype, q.device)
    dk = _empty((n, r, lk, cqk), k.dtype, k.device)
    dv = _empty((n, r, lk, cv), v.dtype, v.device)
    bm, bn = _blocks(lq, lk)
    cfg = _launch_cfg(q, cqk // m, dv_head)
    _bra_bwd_dq_kernel[(n * r, m, triton.cdiv(lq, bm))](
        q, k, v, r_idx, dout, lse, delta, dq, *_strides(q), *_strides(k), *_strides(v),
        *_strides(r_idx), *_strides(dout), *_strides(dq), r, lq, lk, topk, m, scale,
        BLOCK_M=bm, BLOCK_N=bn, **cfg)
    ptr, qlist = _inverse_routing(r_idx)
    _bra_bwd_dkv_kernel[(n * r, m, triton.cdiv(lk, bn))](
        q, k, v, ptr, qlist, dout, lse, delta, dk, dv, *_strides(q), *_strides(k),
        *_strides(v), *_strides(dout), *_strides(dk), *_strides(dv), r, lq, lk, m, scale,
        BLOCK_M=bm, BLOCK_N=bn, **cfg)
    return dq, dk, dv


# The kernel launches as custom ops, so that dispatch modes (FlopCounterMode, fake tensors) see
# them; the impl is the launch itself (same tensors, no copies).
@torch.library.custom_op('mmattn::bra_fwd', mutates_args=())
def _bra_fwd_op(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
                scale: float) -> Tuple[Tensor, Tensor]:
    return bra_triton_forward(q, k, v, r_idx, num_heads, scale)


@_bra_fwd_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
      scale: float) -> Tuple[Tensor, Tensor]:
    n, r, lq, _ = q.shape
    return (q.new_empty((n, r, lq, v.shape[-1])),
            q.new_empty((n, r, num_heads, lq), dtype=torch.float32))


@torch.library.custom_op('mmattn::bra_bwd', mutates_args=())
def _bra_bwd_op(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, out: Tensor, lse: Tensor,
                dout: Tensor, num_heads: int, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    return bra_triton_backward(q, k, v, r_idx, out, lse, dout, num_heads, scale)


@_bra_bwd_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, out: Tensor, lse: Tensor, dout: Tensor,
      num_heads: int, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


@register_flop_formula(torch.ops.mmattn.bra_fwd)
def _bra_fwd_flop(q_shape, k_shape, v_shape, r_idx_shape, num_heads: int, *args,
                  out_shape=None, **kwargs) -> int:
    return bra_forward_flops(q_shape, k_shape, v_shape, r_idx_shape, num_heads)


@register_flop_formula(torch.ops.mmattn.bra_bwd)
def _bra_bwd_flop(q_shape, k_shape, v_shape, r_idx_shape, *args, out_shape=None,
                  **kwargs) -> int:
    return bra_backward_flops(q_shape, k_shape, v_shape, r_idx_shape, args[-2])


class BRATritonFunction(torch.autograd.Function):
    """autograd wrapper: saves ``q, k, v, r_idx``, the output and the log-sum-exp; recomputes the
    attention weights in backward. ``r_idx`` gets no gradient (routing is detached). Under CUDA
    autocast the kernels run in the dtype of ``q, k, v`` (fp32 accumulation); backward runs with
    the forward's autocast state (``custom_fwd`` / ``custom_bwd``)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type='cuda')
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
                scale: float) -> Tensor:
        out, lse = torch.ops.mmattn.bra_fwd(q, k, v, r_idx, num_heads, scale)
        ctx.save_for_backward(q, k, v, r_idx, out, lse)
        ctx.cfg = (num_heads, scale)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type='cuda')
    def backward(ctx, dout: Tensor) -> Tuple[Optional[Tensor], ...]:
        q, k, v, r_idx, out, lse = ctx.saved_tensors
        num_heads, scale = ctx.cfg
        dq, dk, dv = torch.ops.mmattn.bra_bwd(q, k, v, r_idx, out, lse, dout.to(out.dtype),
                                              num_heads, scale)
        return dq, dk, dv, None, None, None


def bra_triton(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
               scale: float) -> Tensor:
    """Fused BRA; arguments and result as :func:`~mmattn.ops.bra.reference.bra_reference`.

    Inputs are checked by :func:`mmattn.ops.bra.bra_attention` (``triton_unsupported``)."""
    return BRATritonFunction.apply(q, k, v, r_idx, num_heads, scale)
