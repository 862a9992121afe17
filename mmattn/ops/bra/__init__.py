"""Bi-level routing attention (BiFormer, CVPR 2023): region routing + routed-region attention.

One public function, :func:`bra_attention`, with a backend switch:

* ``'reference'``: the official legacy math, gathering the routed K/V (``topk`` x memory); oracle.
* ``'torch'``: memory-lean PyTorch, chunked over query regions with recompute in backward (CPU).
* ``'triton'``: fused Triton kernels, K/V read by index with an online softmax (CUDA; on CPU only
  under ``TRITON_INTERPRET=1``).
* ``'auto'``: ``'triton'`` for CUDA tensors when Triton imports, else ``'torch'``.

All backends take region-major tensors: ``q (N, R, Lq, Cqk)``, ``k (N, R, Lk, Cqk)``,
``v (N, R, Lk, Cv)`` (strided views are fine) and ``r_idx (N, R, topk)`` from :func:`topk_routing`.
"""
import torch
from torch import Tensor

from mmattn.ops.dispatch import BACKENDS, resolve_backend

from .chunked import bra_chunked
from .reference import bra_reference

try:
    from . import triton as _triton_impl
    HAS_TRITON = True
except ImportError:  # triton is an optional dependency (extras 'kernels')
    _triton_impl = None
    HAS_TRITON = False


def choose_backend(device: torch.device, backend: str = 'auto') -> str:
    """The concrete backend ``backend`` resolves to for tensors on ``device``."""
    return resolve_backend('bra_attention', device, backend, HAS_TRITON)


def topk_routing(q_region: Tensor, k_region: Tensor, topk: int, scale: float) -> Tensor:
    """Region-level routing of the legacy BRA (detached, no learned projection).

    Args:
        q_region, k_region: (N, R, Cqk) region descriptors (mean of q / k over each region).
        topk: regions each query region attends to (``1 <= topk <= R``).
        scale: multiplies ``q_region`` before the dot product (``Cqk ** -0.5``).

    Returns:
        (N, R, topk) int64 indices, largest affinity first.
    """
    num_regions = k_region.shape[1]
    if not 1 <= topk <= num_regions:
        raise ValueError(f'topk_routing: topk={topk} must be in [1, {num_regions}] '
                         f'(number of regions)')
    logits = (q_region * scale) @ k_region.transpose(-2, -1)
    return torch.topk(logits, k=topk, dim=-1).indices


def bra_attention(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int, scale: float,
                  backend: str = 'auto') -> Tensor:
    """Attention of every query region over the tokens of its ``topk`` routed regions.

    Args:
        q: (N, R, Lq, Cqk) queries; head ``h`` owns channels ``[h * Cqk / m, (h + 1) * Cqk / m)``.
        k: (N, R, Lk, Cqk) keys.
        v: (N, R, Lk, Cv) values.
        r_idx: (N, R, topk) integer, routed key/value regions per query region; no gradient.
        num_heads: ``m``.
        scale: logit scale applied to ``q``.
        backend: ``'auto'`` | ``'reference'`` | ``'torch'`` | ``'triton'``.

    Returns:
        (N, R, Lq, Cv), same dtype as ``q``.
    """
    _validate(q, k, v, r_idx, num_heads)
    chosen = choose_backend(q.device, backend)
    if chosen == 'reference':
        return bra_reference(q, k, v, r_idx, num_heads, scale)
    if chosen == 'torch':
        return bra_chunked(q, k, v, r_idx, num_heads, scale)
    return _triton_impl.bra_triton(q, k, v, r_idx, num_heads, scale)


def _validate(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or r_idx.dim() != 3:
        raise ValueError('bra_attention: expected q, k, v of shape (N, R, L, C) and r_idx '
                         f'(N, R, topk); got {tuple(q.shape)}, {tuple(k.shape)}, '
                         f'{tuple(v.shape)}, {tuple(r_idx.shape)}')
    n, r, _, cqk = q.shape
    if k.shape[:2] != (n, r) or v.shape[:3] != k.shape[:3] or k.shape[-1] != cqk:
        raise ValueError(f'bra_attention: inconsistent shapes q {tuple(q.shape)}, '
                         f'k {tuple(k.shape)}, v {tuple(v.shape)}')
    if r_idx.shape[:2] != (n, r):
        raise ValueError(f'bra_attention: r_idx {tuple(r_idx.shape)} does not match q '
                         f'{tuple(q.shape)} in (N, R)')
    if cqk % num_heads or v.shape[-1] % num_heads:
        raise ValueError(f'bra_attention: channels {cqk} (q/k) and {v.shape[-1]} (v) must be '
                         f'divisible by num_heads={num_heads}')
    if r_idx.dtype.is_floating_point:
        raise TypeError(f'bra_attention: r_idx must be an integer tensor, got {r_idx.dtype}')
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f'bra_attention: q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}')


__all__ = ['BACKENDS', 'HAS_TRITON', 'bra_attention', 'bra_chunked', 'bra_reference',
           'choose_backend', 'topk_routing']
