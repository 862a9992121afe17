"""ScatterFormer's scattered linear attention layer (``SLALayer``), on window-sorted rows.

Plain PyTorch around :func:`mmattn.ops.sla.scattered_linear_attention`; no mmdet needed. The
state-dict layout matches the official ``pcdet`` class: ``qkv.weight`` (3C, C), ``proj.weight``
(C, C) and ``proj.bias`` (C,).
"""
from typing import Optional

import torch
import torch.nn as nn

from mmattn.ops.sla import BACKENDS, scattered_linear_attention

__all__ = ['SLALayer']


class SLALayer(nn.Module):
    """ReLU linear attention of every row over the rows of its window, then a projection.

    Args:
        dim: channels C.
        num_heads: heads H (``dim`` divisible by it; head dim ``C / H``).
        backend: kernel backend of :func:`~mmattn.ops.sla.scattered_linear_attention`.
        eps: added to the normaliser.
    """

    def __init__(self, dim: int, num_heads: int, backend: str = 'auto', eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'SLALayer: dim={dim} must be divisible by num_heads={num_heads}')
        if backend not in BACKENDS:
            raise ValueError(f'SLALayer: backend must be one of {BACKENDS}, got {backend!r}')
        self.dim, self.num_heads, self.backend, self.eps = dim, num_heads, backend, eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor,
                batch_win_inds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x (N, C)`` sorted by window, window offsets ``cu_seqlens (M + 1,)`` -> ``(N, C)``.

        ``cu_seqlens`` follows the varlen convention (window ``w`` is rows
        ``[cu_seqlens[w], cu_seqlens[w + 1])``; the official call's ``offsets, counts`` give it
        through :func:`mmattn.ops.sla.cu_seqlens_from_counts`). ``batch_win_inds (N,)`` (the
        window of every row, as the official call passes it) is accepted for API compatibility.
        """
        n, c = x.shape
        if batch_win_inds is not None and batch_win_inds.shape != (n, ):
            raise ValueError(f'SLALayer: batch_win_inds {tuple(batch_win_inds.shape)} does not '
                             f'match x {tuple(x.shape)}')
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, c // self.num_heads).unbind(1)
        y = scattered_linear_attention(q, k, v, cu_seqlens, backend=self.backend, eps=self.eps)
        return self.proj(y.reshape(n, c))

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}, backend={self.backend!r}'
