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


def window_ids(offsets: Tensor, counts: Tensor, num_rows: int) -> Tensor:
    """(N,) int64 window of each row, from the per-window ``counts`` (rows sorted by window)."""
    return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts,
                                   output_size=num_rows)


def sla_reference(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, counts: Tensor,
                  eps: float = 1e-6) -> Tensor:
    """Softmax-free attention of every row over the rows of its window.

    Args:
        q, k, v: (N, H, D) rows sorted by window.
        offsets: (M,) int64 first row of each window (exclusive cumsum of ``counts``).
        counts: (M,) int64 rows per window (may be 0).
        eps: added to the normaliser ``relu(q) . z``.

    Returns:
        (N, H, D), dtype of ``q``.
    """
    n, h, d = q.shape
    acc = acc_dtype(q.dtype)
    win = window_ids(offsets, counts, n)
    qf, kf, vf = torch.relu(q.to(acc)), torch.relu(k.to(acc)), v.to(acc)
    m = counts.numel()
    state = torch.zeros(m, h, d, d, dtype=acc, device=q.device).index_add(
        0, win, kf[..., :, None] * vf[..., None, :])  # (M, H, D, D)
    ksum = torch.zeros(m, h, d, dtype=acc, device=q.device).index_add(0, win, kf)  # (M, H, D)
    num = torch.einsum('nhd,nhde->nhe', qf, state[win])
    den = (qf * ksum[win]).sum(-1, keepdim=True) + eps
    return (num / den).to(q.dtype)
