"""Bi-level routing attention, memory-lean PyTorch: query regions in chunks, recompute in backward.

Same math as :func:`~mmattn.ops.bra.reference.bra_reference`, but the routed keys/values are only
ever gathered for one chunk of query regions at a time, and only head-major copies of ``q, k, v``,
the output and the per-row log-sum-exp are kept for backward (the logits are recomputed chunk by
chunk). Peak extra memory is set by ``chunk_elems`` instead of growing with ``topk * |K/V|``.
Gradients into K/V are accumulated with ``index_add_`` in fp32 (deterministic on CPU). This is
the CPU backend.

Internally every tensor is head-major, ``(m, N*R, L, d)``, so that gathering the routed regions
of a chunk (``x[:, idx]``) directly gives the ``(m, chunk, topk * L, d)`` operand of the matmul.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from mmattn.ops.dispatch import autocast_function

# Default budget for one chunk's logits, in elements (4 MiB in fp32; backward holds ~4 such).
CHUNK_ELEMS = 1 << 20


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Allocation of outputs that every chunk overwrites (tests poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _heads_first(x: Tensor, m: int) -> Tensor:
    """(N, R, L, C) -> contiguous (m, N*R, L, C // m)."""
    n, r, length, c = x.shape
    return x.reshape(n * r, length, m, c // m).permute(2, 0, 1, 3).contiguous()


def _heads_last(x: Tensor, n: int, r: int) -> Tensor:
    """(m, N*R, L, d) -> (N, R, L, m * d)."""
    m, _, length, d = x.shape
    return x.permute(1, 2, 0, 3).reshape(n, r, length, m * d)


def _routed(x: Tensor, idx: Tensor) -> Tensor:
    """Tokens of the routed regions ``idx`` (c, topk) of x (m, NR, L, d) -> (m, c, topk * L, d)."""
    m, _, length, d = x.shape
    c, topk = idx.shape
    return x[:, idx].reshape(m, c, topk * length, d)


def _chunk_size(nr: int, m: int, lq: int, topk: int, lk: int, chunk_elems: int) -> int:
    return max(1, min(nr, chunk_elems // max(1, m * lq * topk * lk)))


class _ChunkedBRA(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
                scale: float, chunk_elems: int) -> Tensor:
        n, r, lq, _ = q.shape
        lk, topk, m = k.shape[2], r_idx.shape[-1], num_heads
        nr = n * r
        qh, kh, vh = _heads_first(q, m), _heads_first(k, m), _heads_first(v, m)
        # routed regions as indices into the flattened (image, region) axis
        gidx = (r_idx + torch.arange(n, device=r_idx.device).view(n, 1, 1) * r).reshape(nr, topk)
        need_lse = any(ctx.needs_input_grad[:3])
        out_h = _empty(qh.shape[:3] + vh.shape[3:], q.dtype, q.device)  # (m, NR, Lq, dv)
        lse = _empty(qh.shape[:3], torch.float32, q.device) if need_lse else None
        step = _chunk_size(nr, m, lq, topk, lk, chunk_elems)
        for s in range(0, nr, step):
            e = min(nr, s + step)
            logits = (qh[:, s:e] * scale) @ _routed(kh, gidx[s:e]).transpose(-1, -2)
            out_h[:, s:e] = torch.softmax(logits, dim=-1) @ _routed(vh, gidx[s:e])
            if need_lse:
                lse[:, s:e] = torch.logsumexp(logits.float(), dim=-1)
            del logits
        out = _heads_last(out_h, n, r)
        if need_lse:
            ctx.save_for_backward(qh, kh, vh, gidx, out_h, lse)
            ctx.cfg = (n, r, scale, step)
        return out

    @staticmethod
    def backward(ctx, dout: Tensor) -> Tuple[Optional[Tensor], ...]:
        qh, kh, vh, gidx, out_h, lse = ctx.saved_tensors
        n, r, scale, step = ctx.cfg
        m, nr, lk = kh.shape[:3]
        doh = _heads_first(dout.to(out_h.dtype), m)  # (m, NR, Lq, dv)
        delta = (doh.float() * out_h.float()).sum(-1)  # rowsum(dO * O) per head: (m, NR, Lq)
        dq = _empty(qh.shape, qh.dtype, qh.device)
        dk = torch.zeros(kh.shape, dtype=torch.float32, device=kh.device)
        dv = torch.zeros(vh.shape, dtype=torch.float32, device=vh.device)
        for s in range(0, nr, step):
            e = min(nr, s + step)
            idx = gidx[s:e]
            qs = qh[:, s:e] * scale  # (m, c, Lq, dq)
            ks, vs = _routed(kh, idx), _routed(vh, idx)  # (m, c, T, d), T = topk * Lk
            do = doh[:, s:e]  # (m, c, Lq, dv)
            p = torch.exp((qs @ ks.transpose(-1, -2)).float() - lse[:, s:e, :, None])
            ds = p * ((do @ vs.transpose(-1, -2)).float() - delta[:, s:e, :, None])
            dq[:, s:e] = (ds.to(ks.dtype) @ ks) * scale
            flat = idx.reshape(-1)
            rows = (m, flat.numel(), lk, -1)
            dv.index_add_(1, flat, (p.to(do.dtype).transpose(-1, -2) @ do).reshape(rows).float())
            dk.index_add_(1, flat, (ds.to(qs.dtype).transpose(-1, -2) @ qs).reshape(rows).float())
            del p, ds
        return (_heads_last(dq, n, r), _heads_last(dk, n, r).to(kh.dtype),
                _heads_last(dv, n, r).to(vh.dtype), None, None, None, None)


_AUTOCAST_FUNCTIONS = {d: autocast_function(_ChunkedBRA, d) for d in ('cpu', 'cuda')}


def bra_chunked(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int, scale: float,
                chunk_elems: int = CHUNK_ELEMS) -> Tensor:
    """Memory-lean BRA; arguments and result as :func:`~mmattn.ops.bra.reference.bra_reference`.

    ``chunk_elems`` bounds the number of logits materialised at once (per chunk of query regions).
    """
    fn = _AUTOCAST_FUNCTIONS.get(q.device.type, _ChunkedBRA)
    return fn.apply(q, k, v, r_idx, num_heads, scale, chunk_elems)
