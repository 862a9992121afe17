"""Scattered linear attention (ScatterFormer), plain PyTorch: the oracle.

Follows the official ``SLALayer`` math step by step, with every intermediate materialised:
ReLU on q and k (v raw, no scale), the per-(window, head) state ``S = sum relu(k)^T v`` built by
``index_add`` of the per-row outer products (an ``(N, H, D, D)`` tensor), the key sum
``z = sum relu(k)``, then ``out = (relu(q) S) / (relu(q) . z + eps)``, accumulated in fp32 (fp64
for fp64 inputs). Memory grows as ``N * H * D * D``; use it to check the other backends only.
"""
import torch
from torch import Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp64 for fp64 inputs, fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def window_ids(cu_seqlens: Tensor, num_rows: int) -> Tensor:
    """(N,) int64 window of each row, from the window offsets ``cu_seqlens (M + 1,)`` (rows sorted
    by window); no host sync."""
    counts = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts,
                                   output_size=num_rows)


def sla_reference(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor,
                  eps: float = 1e-6) -> Tensor:
    """Softmax-free attention of every row over the rows of its window.

    Args:
        q, k, v: (N, H, D) rows sorted by window.
        cu_seqlens: (M + 1,) int window offsets: window ``w`` is rows
            ``[cu_seqlens[w], cu_seqlens[w + 1])`` (may be empty); ``cu_seqlens[-1] = N``.
        eps: added to the normaliser ``relu(q) . z``.

    Returns:
        (N, H, D), dtype of ``q``.
    """
    n, h, d = q.shape
    acc = acc_dtype(q.dtype)
    win = window_ids(cu_seqlens, n)
    qf, kf, vf = torch.relu(q.to(acc)), torch.relu(k.to(acc)), v.to(acc)
    m = cu_seqlens.numel() - 1
    state = torch.zeros(m, h, d, d, dtype=acc, device=q.device).index_add(
        0, win, kf[..., :, None] * vf[..., None, :])  # (M, H, D, D)
    ksum = torch.zeros(m, h, d, dtype=acc, device=q.device).index_add(0, win, kf)  # (M, H, D)
    num = torch.einsum('nhd,nhde->nhe', qf, state[win])
    den = (qf * ksum[win]).sum(-1, keepdim=True) + eps
    return (num / den).to(q.dtype)
