"""Scattered linear attention, memory-bounded PyTorch: rows in chunks, recompute in backward.

Same math as :func:`~mmattn.ops.sla.reference.sla_reference`, but the per-row outer products
``relu(k_j)^T v_j`` (and the gathered per-row window states) only ever exist for one chunk of rows
at a time: ``(chunk, H, D, D)`` with ``chunk * H * D * D <= chunk_elems``, never the full
``(N, H, D, D)``. Only ``q, k, v`` and the window ids are saved for backward; the window states
``S (M, H, D, D)`` and key sums ``z (M, H, D)`` are recomputed there, and their gradients are
accumulated with ``index_add_`` in fp32 (fp64 for fp64 inputs; deterministic on CPU). This is the
CPU backend.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from mmattn.ops.dispatch import autocast_function

from .reference import acc_dtype, window_ids

# Default budget for one chunk's outer products, in elements (8 MiB in fp32).
CHUNK_ELEMS = 1 << 21


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Allocation of outputs that every chunk overwrites (tests poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _chunk_rows(n: int, h: int, d: int, chunk_elems: int) -> int:
    return max(1, min(max(n, 1), chunk_elems // max(1, h * d * d)))


def _rowvec_mat(x: Tensor, mat: Tensor) -> Tensor:
    """Per-row vector times per-row matrix: (c, H, D) x (c, H, D, E) -> (c, H, E)."""
    return (x.unsqueeze(-2) @ mat).squeeze(-2)


def _window_state(k: Tensor, v: Tensor, win: Tensor, m: int, step: int,
                  acc: torch.dtype) -> Tuple[Tensor, Tensor]:
    """``S (M, H, D, D)`` and ``z (M, H, D)`` in ``acc``, built chunk by chunk."""
    n, h, d = k.shape
    state = torch.zeros(m, h, d, d, dtype=acc, device=k.device)
    ksum = torch.zeros(m, h, d, dtype=acc, device=k.device)
    for s in range(0, n, step):
        w = win[s:s + step]
        kf = torch.relu(k[s:s + step].to(acc))
        state.index_add_(0, w, kf.unsqueeze(-1) * v[s:s + step].to(acc).unsqueeze(-2))
        ksum.index_add_(0, w, kf)
    return state, ksum


class _ChunkedSLA(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, eps: float,
                chunk_elems: int) -> Tensor:
        n, h, d = q.shape
        m, acc = cu_seqlens.numel() - 1, acc_dtype(q.dtype)
        win = window_ids(cu_seqlens, n)
        step = _chunk_rows(n, h, d, chunk_elems)
        state, ksum = _window_state(k, v, win, m, step, acc)
        out = _empty((n, h, d), q.dtype, q.device)
        for s in range(0, n, step):
            w = win[s:s + step]
            qf = torch.relu(q[s:s + step].to(acc))
            den = (qf * ksum[w]).sum(-1, keepdim=True) + eps
            out[s:s + step] = (_rowvec_mat(qf, state[w]) / den).to(q.dtype)
        if any(ctx.needs_input_grad[:3]):
            ctx.save_for_backward(q, k, v, win)
            ctx.cfg = (m, eps, step)
        return out

    @staticmethod
    def backward(ctx, dout: Tensor) -> Tuple[Optional[Tensor], ...]:
        q, k, v, win = ctx.saved_tensors
        m, eps, step = ctx.cfg
        n, h, d = q.shape
        acc = acc_dtype(q.dtype)
        state, ksum = _window_state(k, v, win, m, step, acc)
        dstate = torch.zeros_like(state)
        dksum = torch.zeros_like(ksum)
        dq = _empty(q.shape, q.dtype, q.device)
        for s in range(0, n, step):
            w = win[s:s + step]
            qs = q[s:s + step]
            qf = torch.relu(qs.to(acc))
            st, z = state[w], ksum[w]
            den = (qf * z).sum(-1, keepdim=True) + eps
            out = _rowvec_mat(qf, st) / den
            g = dout[s:s + step].to(acc)
            dnum = g / den  # d L / d (relu(q) S)
            dden = -(g * out).sum(-1, keepdim=True) / den  # d L / d (relu(q) . z)
            dqf = _rowvec_mat(dnum, st.transpose(-1, -2)) + dden * z
            # relu's backward: zero where the input is <= 0 (a NaN input passes its gradient)
            dq[s:s + step] = torch.where(qs <= 0, 0., dqf).to(q.dtype)
            dstate.index_add_(0, w, qf.unsqueeze(-1) * dnum.unsqueeze(-2))
            dksum.index_add_(0, w, dden * qf)
        del state, ksum
        dk = _empty(k.shape, k.dtype, k.device)
        dv = _empty(v.shape, v.dtype, v.device)
        for s in range(0, n, step):
            w = win[s:s + step]
            ks = k[s:s + step]
            ds = dstate[w]
            dkf = _rowvec_mat(v[s:s + step].to(acc), ds.transpose(-1, -2)) + dksum[w]
            dk[s:s + step] = torch.where(ks <= 0, 0., dkf).to(k.dtype)
            dv[s:s + step] = _rowvec_mat(torch.relu(ks.to(acc)), ds).to(v.dtype)
        return dq, dk, dv, None, None, None


_AUTOCAST_FUNCTIONS = {d: autocast_function(_ChunkedSLA, d) for d in ('cpu', 'cuda')}


def sla_chunked(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, eps: float = 1e-6,
                chunk_elems: int = CHUNK_ELEMS) -> Tensor:
    """Memory-bounded SLA; arguments and result as :func:`~mmattn.ops.sla.reference.sla_reference`.

    ``chunk_elems`` bounds the per-row outer products materialised at once (rows per chunk =
    ``chunk_elems // (H * D * D)``, at least 1).
    """
    fn = _AUTOCAST_FUNCTIONS.get(q.device.type, _ChunkedSLA)
    return fn.apply(q, k, v, cu_seqlens, eps, chunk_elems)
