"""Scattered linear attention, memory-bounded PyTorch: rows in chunks, recompute in backward.

On the CPU, when every window padded to the longest one fits in ``pad_elems`` elements, the same
math runs on zero-padded windows with batched matmuls instead: windows grouped in power-of-two
length buckets, so padding at most doubles the work; plain autograd; no per-row ``D x D``
products; reading the lengths is a host sync, free on the CPU, so CUDA tensors always take the
chunked path.

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
# Default budget for one padded (M, L, H, D) tensor on the CPU, in elements (32 MiB in fp32).
PAD_ELEMS = 1 << 23


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


def _padded_length(q: Tensor, cu_seqlens: Tensor, pad_elems: int) -> Optional[int]:
    """The longest window's length ``L`` when the padded path may run these tensors, else None."""
    if q.device.type != 'cpu' or pad_elems <= 0 or torch.compiler.is_compiling():
        return None
    m = cu_seqlens.numel() - 1
    longest = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if m > 0 else 0
    n, h, d = q.shape
    return longest if m * max(longest, 1) * h * d <= pad_elems else None


def _sla_padded(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, eps: float,
                longest: int) -> Tensor:
    """Windows zero-padded in length buckets (relu(0) = 0 adds nothing to a state): the windows
    whose length ``l`` has the same ``L = min(2 ** ceil(log2 l), longest)`` form one
    ``(H, M_L, L, D)`` batch, so padding at most doubles the work (one bucket padded to the
    longest window padded the sample's windows 2.3-5x). Per bucket, batched matmuls give
    ``S = relu(k)^T v`` and ``z = sum relu(k)`` per window, then ``relu(q) S / (relu(q) . z)``."""
    n, h, d = q.shape
    m, acc = cu_seqlens.numel() - 1, acc_dtype(q.dtype)
    counts = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    win = window_ids(cu_seqlens, n)
    pos = torch.arange(n, device=q.device) - cu_seqlens[win].long()
    bucket = torch.ceil(torch.log2(counts.clamp(min=1).double())).exp2().long().clamp(max=longest)
    bucket = torch.where(counts > 0, bucket, 0)
    with torch.autocast(q.device.type, enabled=False):
        qf, kf, vf = torch.relu(q.to(acc)), torch.relu(k.to(acc)), v.to(acc)
        outs, rows_all = [], []
        for length in bucket.unique().tolist():
            if length == 0:
                continue
            wins = (bucket == length).nonzero()[:, 0]
            rank = torch.full((m, ), -1, dtype=torch.long, device=q.device)
            rank[wins] = torch.arange(wins.numel(), device=q.device)
            rows = (rank[win] >= 0).nonzero()[:, 0]
            slot = rank[win[rows]] * length + pos[rows]

            def pad(x: Tensor) -> Tensor:  # (N, H, D) -> (H, M_L, L, D)
                return x.new_zeros(h, wins.numel() * length, d).index_copy(
                    1, slot, x.index_select(0, rows).transpose(0, 1)).view(h, -1, length, d)

            qp, kp = pad(qf), pad(kf)
            num = qp @ (kp.transpose(-1, -2) @ pad(vf))  # (H, M_L, L, D)
            den = qp @ kp.sum(2).unsqueeze(-1)  # (H, M_L, L, 1)
            out = (num / (den + eps)).reshape(h, -1, d).index_select(1, slot)
            outs.append(out.transpose(0, 1))
            rows_all.append(rows)
        out = torch.cat(outs) if outs else qf  # no rows: qf is empty
        if len(outs) > 1:
            out = out.index_select(0, torch.argsort(torch.cat(rows_all)))
    return out.to(q.dtype)


def sla_chunked(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, eps: float = 1e-6,
                chunk_elems: int = CHUNK_ELEMS, pad_elems: Optional[int] = None) -> Tensor:
    """Memory-bounded SLA; arguments and result as :func:`~mmattn.ops.sla.reference.sla_reference`.

    ``chunk_elems`` bounds the per-row outer products materialised at once (rows per chunk =
    ``chunk_elems // (H * D * D)``, at least 1). ``pad_elems``: budget of the padded CPU path
    (default :data:`PAD_ELEMS`; 0: always chunked).
    """
    longest = _padded_length(q, cu_seqlens, PAD_ELEMS if pad_elems is None else pad_elems)
    if longest is not None:
        return _sla_padded(q, k, v, cu_seqlens, eps, longest)
    fn = _AUTOCAST_FUNCTIONS.get(q.device.type, _ChunkedSLA)
    return fn.apply(q, k, v, cu_seqlens, eps, chunk_elems)
