"""Simplified linear attention (SLA) from SLAB (Guo et al., "SLAB: Efficient Transformers with
Simplified Linear Attention and Progressive Re-parameterized Batch Normalization", ICML 2024).
Plain PyTorch, no mmdet needed.

ReLU feature maps on queries and keys (keys get a learned positional encoding first), a
normalised linear attention ``(phi(q) (phi(k)^T v)) / (phi(q) . sum_j phi(k_j) + 1e-6)`` in fp32,
and a depthwise conv on the values shared by all heads.
"""
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple

__all__ = ['SimplifiedLinearAttention', 'simplified_linear_attention']


def simplified_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                eps: float = 1e-6) -> torch.Tensor:
    """Normalised linear attention of non-negative features, in fp32.

    q, k: (B, N, d) and (B, M, d) feature maps (already non-negative); v: (B, M, e).
    Returns (B, N, e) fp32: ``(q (k^T v)) / (q . sum_j k_j + eps)``; the two matmul orders are
    chosen by cost as in the reference.
    """
    q, k, v = q.float(), k.float(), v.float()
    n, m, d, e = q.shape[-2], k.shape[-2], k.shape[-1], v.shape[-1]
    # the reference's einsum contractions, one pair at a time: bit-identical results, whatever
    # contraction path torch.einsum would pick for three operands
    z = 1.0 / (torch.einsum('bic,bc->bi', q, k.sum(dim=1)) + eps)
    if n * m * (d + e) > d * e * (n + m):
        out = torch.einsum('bic,bcd->bid', q, torch.einsum('bjc,bjd->bcd', k, v))
    else:
        out = torch.einsum('bij,bjd->bid', torch.einsum('bic,bjc->bij', q, k), v)
    return out * z.unsqueeze(-1)


class SimplifiedLinearAttention(nn.Module):
    """SLAB's simplified linear attention over a window of ``window_size`` tokens.

    Args:
        dim: channels C.
        num_heads: heads H; head dim d = C / H.
        window_size: token grid (wh, ww) of one window; the positional encoding has wh * ww
            entries, so every call must pass windows of exactly this size.
        kernel_size: depthwise conv on the values (d channels, shared by the heads).
        qkv_bias: bias of the qkv projection.
        proj_drop: dropout after the output projection.

    Shapes: ``forward(x)`` with x (B', N, C), N = wh * ww tokens of one window in row-major
    order (B' = batch x windows), returns (B', N, C). Parameters (official names):
    ``qkv``, ``proj``, ``positional_encoding`` (1, N, C), ``dwc`` (d, 1, k, k).
    """

    def __init__(self, dim: int, num_heads: int, window_size: Union[int, Sequence[int]],
                 kernel_size: int = 5, qkv_bias: bool = True, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'SimplifiedLinearAttention: dim {dim} is not divisible by '
                             f'num_heads {num_heads}')
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = tuple(to_2tuple(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2,
                             groups=self.head_dim)
        self.positional_encoding = nn.Parameter(
            torch.zeros(1, self.window_size[0] * self.window_size[1], dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        wh, ww = self.window_size
        if n != wh * ww or c != self.dim:
            raise ValueError(f'SimplifiedLinearAttention: got x {tuple(x.shape)}, expected '
                             f'(B, {wh * ww}, {self.dim}) for window {self.window_size}')
        heads, d = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        q = F.relu(q)
        k = F.relu(k + self.positional_encoding)
        # (B, N, H*d) -> (B*H, N, d)
        q, k, v = (t.reshape(b, n, heads, d).transpose(1, 2).reshape(b * heads, n, d)
                   for t in (q, k, v))
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = simplified_linear_attention(q, k, v)
            v_map = v.float().transpose(1, 2).reshape(b * heads, d, wh, ww)
            bias = None if self.dwc.bias is None else self.dwc.bias.float()
            v_map = F.conv2d(v_map, self.dwc.weight.float(), bias, padding=self.dwc.padding,
                             groups=d)
            out = out + v_map.flatten(2).transpose(1, 2)
        out = out.to(x.dtype).reshape(b, heads, n, d).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}'
