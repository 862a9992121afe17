"""Agent attention (Han et al., "Agent Attention: On the Integration of Softmax and Linear
Attention", ECCV 2024), as used in Agent-Swin's 'A' blocks. Plain PyTorch, no mmdet needed.

A small set of agent tokens, average-pooled from the queries, first aggregates the values with a
softmax over all keys, then broadcasts the result back with a softmax over the agents. Both
softmaxes get learned position biases; a depthwise conv on the values restores local detail.
Cost is linear in the number of tokens N.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple, trunc_normal_

__all__ = ['AgentAttention']

_Size = Union[int, Sequence[int]]


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float,
               fused: Optional[bool] = None) -> torch.Tensor:
    """softmax(q k^T) v (no scale: q comes scaled). q (B, H, M, e), k (B, H, L, e), v (B, H, L, d).

    PyTorch's fused attention on accelerators; on CPU the plain expression, faster there for
    these thin shapes. ``fused`` forces one or the other.
    """
    if fused if fused is not None else q.device.type != 'cpu':
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=1.0)
    attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    if dropout:
        attn = F.dropout(attn, dropout)
    return attn @ v


class AgentAttention(nn.Module):
    """Agent attention over one (h, w) token map.

    Args:
        dim: channels C.
        num_heads: heads H; head dim d = C / H.
        agent_num: agents the biases were trained with, p * p (9, 16 or 49 in Agent-Swin).
        bias_resolution: map size (h0, w0) the biases were trained at (56, 28, 14, 7 for the
            stages of Agent-Swin at 224); at other sizes they are bilinearly interpolated.
        agent_shape: agent grid (a1, a2) pooled at run time; default (p, p). When it differs
            from (p, p) the biases are also interpolated across the agent grid (Agent-Swin's
            detection backbones use (9, 9), (12, 12), (14, 14), (7, 7)).
        kernel_size: depthwise conv on the values.
        qkv_bias: bias of the qkv projection.
        scale: softmax scale is ``d ** scale``.
        attn_drop: dropout on both attention maps.
        proj_drop: dropout after the output projection.

    Shapes: ``forward(x, hw_shape)`` with x (B, N, C), N = h * w tokens in row-major order,
    returns (B, N, C). Parameters: ``an_bias``/``na_bias`` (H, p*p, 7, 7), ``ah_bias``
    (1, H, p*p, h0, 1), ``aw_bias`` (1, H, p*p, 1, w0), ``ha_bias`` (1, H, h0, 1, p*p),
    ``wa_bias`` (1, H, 1, w0, p*p), ``qkv``, ``proj``, ``dwc``; names and layout are the
    official ones.

    The biases are never materialised at (B, H, N, A): resizing the p x p agent grid to
    (a1, a2) is a fixed linear map G (p*p, A), so ``bias = g @ G`` with g (H, N, p*p) the
    spatially resized biases, and ``q.a * scale + g @ G`` is one product of the concatenations
    ``[q * scale, g]`` and ``[a, G^T]``. Equal to the reference up to fp32 rounding.
    """

    def __init__(self, dim: int, num_heads: int, agent_num: int = 49, bias_resolution: _Size = 7,
                 agent_shape: _Size = None, kernel_size: int = 3, qkv_bias: bool = True,
                 scale: float = -0.5, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'AgentAttention: dim {dim} is not divisible by num_heads {num_heads}')
        pool = int(round(agent_num ** 0.5))
        if pool * pool != agent_num:
            raise ValueError(f'AgentAttention: agent_num {agent_num} is not a square')
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** scale
        self.agent_num = agent_num
        self.pool_size = pool
        self.bias_resolution = tuple(to_2tuple(bias_resolution))
        self.agent_shape = (pool, pool) if agent_shape is None else tuple(to_2tuple(agent_shape))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        h0, w0 = self.bias_resolution
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, h0, 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, w0))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, h0, 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, w0, agent_num))
        for p in self._bias_params():
            trunc_normal_(p, std=0.02)
        # bilinear resize of the p x p agent grid to agent_shape, as a (p*p, A) matrix
        eye = torch.eye(agent_num).view(agent_num, 1, pool, pool)
        grid = eye if self.agent_shape == (pool, pool) else F.interpolate(
            eye, size=self.agent_shape, mode='bilinear', align_corners=False)
        self.register_buffer('agent_grid', grid.reshape(agent_num, -1), persistent=False)

    def _bias_params(self):
        return (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias)

    def _resize(self, b: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if b.shape[-2:] == (h, w):
            return b
        return F.interpolate(b, size=(h, w), mode='bilinear', align_corners=False)

    def bias_factors(self, h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Spatially resized biases per p x p grid cell: agent side, query side, (H, h*w, p*p).

        Bilinear resizing is linear, so each side's two terms are summed after the resize.
        """
        agent_side = (self._resize(self.an_bias, h, w)
                      + self._resize((self.ah_bias + self.aw_bias).squeeze(0), h, w))
        query_side = (self._resize(self.na_bias, h, w) + self._resize(
            (self.ha_bias + self.wa_bias).squeeze(0).permute(0, 3, 1, 2), h, w))
        return agent_side.flatten(2).transpose(1, 2), query_side.flatten(2).transpose(1, 2)

    def position_biases(self, h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The full biases for an (h, w) map: agent side (H, A, h*w), query side (H, h*w, A)."""
        agent_side, query_side = self.bias_factors(h, w)
        return (agent_side @ self.agent_grid).transpose(1, 2), query_side @ self.agent_grid

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = int(hw_shape[0]), int(hw_shape[1])
        if n != h * w or c != self.dim:
            raise ValueError(f'AgentAttention: x {tuple(x.shape)} does not match hw_shape '
                             f'{(h, w)} and dim {self.dim}')
        heads, d, p2 = self.num_heads, self.head_dim, self.agent_num
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)  # (B, N, C) each
        agents = F.adaptive_avg_pool2d(q.reshape(b, h, w, c).permute(0, 3, 1, 2),
                                       self.agent_shape)
        a = agents.shape[-2] * agents.shape[-1]
        agents = agents.reshape(b, heads, d, a).transpose(2, 3)  # (B, H, A, d)
        v_map = v.reshape(b, h, w, c).permute(0, 3, 1, 2)
        q, k, v = (t.reshape(b, n, heads, d).transpose(1, 2) for t in (q, k, v))  # (B, H, N, d)
        g_agent, g_query = (g.to(q.dtype).expand(b, heads, n, p2) for g in self.bias_factors(h, w))
        grid_t = self.agent_grid.t().to(q.dtype).expand(b, heads, a, p2)
        dropout = self.attn_drop if self.training else 0.0
        # agents gather over the N keys: softmax(a.k * scale + bias)
        agent_v = _attention(torch.cat([agents * self.scale, grid_t], -1),
                             torch.cat([k, g_agent], -1), v, dropout)  # (B, H, A, d)
        # queries gather over the A agents: softmax(q.a * scale + bias)
        out = _attention(torch.cat([q * self.scale, g_query], -1),
                         torch.cat([agents, grid_t], -1), agent_v, dropout)  # (B, H, N, d)
        out = out.transpose(1, 2).reshape(b, n, c) + self.dwc(v_map).flatten(2).transpose(1, 2)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, agent_num={self.agent_num}, '
                f'agent_shape={self.agent_shape}, bias_resolution={self.bias_resolution}')
