"""Scattered linear attention (ScatterFormer, CVPR 2024): ReLU linear attention within windows.

One public function, :func:`scattered_linear_attention`, with a backend switch:

* ``'reference'``: plain PyTorch, every per-row outer product materialised; oracle.
* ``'torch'``: memory-bounded PyTorch, rows in chunks, own backward that recomputes (CPU).
* ``'triton'``: Triton kernels that split long windows across programs (two-pass deterministic
  state reduction, fused normaliser) with a recomputing backward (CUDA; on CPU only under
  ``TRITON_INTERPRET=1``).
* ``'auto'``: ``'triton'`` for CUDA tensors when Triton imports, else ``'torch'``.

All backends take window-sorted rows ``q, k, v (N, H, D)`` and int64 ``offsets, counts (M,)``
(``offsets`` is the exclusive cumsum of ``counts``; a window may be empty). Per window ``w`` and
head: ``S_w = sum_j relu(k_j)^T v_j``, ``z_w = sum_j relu(k_j)`` and
``out_i = (relu(q_i) S_w) / (relu(q_i) . z_w + eps)``; no scale, v is not passed through ReLU,
fp32 accumulation, output in the input dtype.
"""
import torch
from torch import Tensor

from mmattn.ops.dispatch import BACKENDS, resolve_backend

from .chunked import sla_chunked
from .reference import sla_reference, window_ids

try:
    from . import triton as _triton_impl
    HAS_TRITON = True
except ImportError:  # triton is an optional dependency (extras 'kernels')
    _triton_impl = None
    HAS_TRITON = False


def choose_backend(device: torch.device, backend: str = 'auto') -> str:
    """The concrete backend ``backend`` resolves to for tensors on ``device``."""
    return resolve_backend('scattered_linear_attention', device, backend, HAS_TRITON)


def scattered_linear_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, counts: Tensor,
                               backend: str = 'auto', eps: float = 1e-6) -> Tensor:
    """ReLU linear attention of every row over the rows of its window.

    Args:
        q, k, v: (N, H, D) floating tensors, rows sorted by window (strided views are fine).
        offsets: (M,) int64, first row of each window (exclusive cumsum of ``counts``).
        counts: (M,) int64, rows per window (``>= 0``, summing to N).
        backend: ``'auto'`` | ``'reference'`` | ``'torch'`` | ``'triton'``.
        eps: added to the normaliser.

    Returns:
        (N, H, D), same dtype as ``q``.
    """
    _validate(q, k, v, offsets, counts)
    chosen = choose_backend(q.device, backend)
    if chosen == 'reference':
        return sla_reference(q, k, v, offsets, counts, eps)
    if chosen == 'torch':
        return sla_chunked(q, k, v, offsets, counts, eps)
    return _triton_impl.sla_triton(q, k, v, offsets, counts, eps)


def _validate(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, counts: Tensor) -> None:
    name = 'scattered_linear_attention'
    if q.dim() != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f'{name}: expected q, k, v of one shape (N, H, D); got '
                         f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    if not q.dtype.is_floating_point or not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f'{name}: q, k, v must share one floating dtype; got {q.dtype}, '
                        f'{k.dtype}, {v.dtype}')
    if offsets.dim() != 1 or offsets.shape != counts.shape:
        raise ValueError(f'{name}: expected offsets and counts of shape (M,); got '
                         f'{tuple(offsets.shape)}, {tuple(counts.shape)}')
    if offsets.dtype != torch.int64 or counts.dtype != torch.int64:
        raise TypeError(f'{name}: offsets and counts must be int64; got {offsets.dtype}, '
                        f'{counts.dtype}')
    if not (q.device == k.device == v.device == offsets.device == counts.device):
        raise ValueError(f'{name}: q, k, v, offsets, counts must be on one device; got '
                         f'{q.device}, {k.device}, {v.device}, {offsets.device}, {counts.device}')
    n = q.shape[0]
    if counts.numel() and bool((counts < 0).any()):
        raise ValueError(f'{name}: counts must be >= 0')
    total = int(counts.sum()) if counts.numel() else 0
    if total != n:
        raise ValueError(f'{name}: counts sum to {total} but q, k, v have N={n} rows')
    if counts.numel() and not torch.equal(offsets, torch.cumsum(counts, 0) - counts):
        raise ValueError(f'{name}: offsets must be the exclusive cumsum of counts (rows sorted '
                         'by window)')


__all__ = ['BACKENDS', 'HAS_TRITON', 'choose_backend', 'scattered_linear_attention',
           'sla_chunked', 'sla_reference', 'window_ids']
