"""Scattered linear attention (ScatterFormer, CVPR 2024): ReLU linear attention within windows.

One public function, :func:`scattered_linear_attention`, with a backend switch:

* ``'reference'``: plain PyTorch, every per-row outer product materialised; oracle.
* ``'torch'``: memory-bounded PyTorch, rows in chunks, own backward that recomputes (CPU).
* ``'triton'``: Triton kernels that split long windows across programs (two-pass deterministic
  state reduction, fused normaliser) with a recomputing backward (CUDA; on CPU only under
  ``TRITON_INTERPRET=1``).
* ``'auto'``: the first of ``'triton'``, ``'torch'`` that can run the tensors
  (:func:`can_run_triton`: CUDA, fp16 / bf16 / fp32 / fp64, head dim a power of two in [16, 128]).

All backends take window-sorted rows ``q, k, v (N, H, D)`` and one offsets tensor
``cu_seqlens (M + 1,)`` (the varlen convention of flash-attention / fla: window ``w`` is rows
``[cu_seqlens[w], cu_seqlens[w + 1])``, ``cu_seqlens[0] = 0``, ``cu_seqlens[-1] = N``; a window may
be empty). Per window ``w`` and head: ``S_w = sum_j relu(k_j)^T v_j``, ``z_w = sum_j relu(k_j)``
and ``out_i = (relu(q_i) S_w) / (relu(q_i) . z_w + eps)``; no scale, v is not passed through ReLU,
fp32 accumulation, output in the input dtype. No backend syncs with the host: the offsets are
checked by a device-side assert (in full, with the values, under ``MMATTN_DEBUG_OPS=1``). Under
``torch.autocast`` q, k, v are cast to the autocast dtype (as a matmul would be).
"""
from typing import Optional

import torch
from torch import Tensor

from mmattn.ops import dispatch
from mmattn.ops.dispatch import BACKENDS

from .chunked import sla_chunked
from .reference import sla_reference, window_ids

HAS_TRITON = dispatch.triton_available()
if HAS_TRITON:  # an ImportError from our own kernel module is a bug: let it propagate
    from . import triton as _triton_impl
else:  # triton is an optional dependency (extras 'kernels')
    _triton_impl = None

_OP = 'scattered_linear_attention'
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def cu_seqlens_from_counts(counts: Tensor) -> Tensor:
    """``(M + 1,)`` int64 window offsets ``[0, c0, c0 + c1, ...]`` from rows per window ``(M,)``."""
    cu = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, 0, out=cu[1:])
    return cu


def triton_unsupported(q: Tensor, k: Tensor, v: Tensor, explicit: bool = False) -> Optional[str]:
    """Why the Triton backend cannot run these tensors, or ``None`` when it can."""
    reason = dispatch.triton_common_reason(_OP, q, HAS_TRITON, TRITON_DTYPES, explicit)
    if reason is not None:
        return reason
    d = q.shape[-1]
    if d < 16 or d > 128 or d & (d - 1):
        return (f'head dim D={d} of q, k, v (N, H, D)={tuple(q.shape)} must be a power of two in '
                '[16, 128] (Triton tile shapes)')
    return None


def can_run_triton(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether ``'auto'`` may send these tensors to the Triton kernels."""
    return triton_unsupported(q, k, v) is None


def choose_backend(q: Tensor, k: Tensor, v: Tensor, backend: str = 'auto') -> str:
    """The concrete backend that runs :func:`scattered_linear_attention` on these tensors."""
    explicit = backend != 'auto'
    return dispatch.choose_backend(_OP, backend, (
        ('triton', lambda: triton_unsupported(q, k, v, explicit)),
        ('torch', lambda: None),
        ('reference', lambda: None)))


def scattered_linear_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor,
                               backend: str = 'auto', eps: float = 1e-6) -> Tensor:
    """ReLU linear attention of every row over the rows of its window.

    Args:
        q, k, v: (N, H, D) floating tensors, rows sorted by window (strided views are fine).
        cu_seqlens: (M + 1,) int32 / int64 window offsets, non-decreasing from 0 to N (see the
            module docstring; :func:`cu_seqlens_from_counts` builds it from rows per window).
        backend: ``'auto'`` | ``'reference'`` | ``'torch'`` | ``'triton'``.
        eps: added to the normaliser.

    Returns:
        (N, H, D), same dtype as ``q`` (the autocast dtype under ``torch.autocast``).
    """
    q, k, v = dispatch.autocast_inputs(q, k, v)
    _validate(q, k, v, cu_seqlens)
    chosen = choose_backend(q, k, v, backend)
    if chosen == 'reference':
        return sla_reference(q, k, v, cu_seqlens, eps)
    if chosen == 'torch':
        return sla_chunked(q, k, v, cu_seqlens, eps)
    return _triton_impl.sla_triton(q, k, v, cu_seqlens, eps)


def _validate(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor) -> None:
    """Shapes, dtypes and devices (metadata, free); the offsets' values without a host sync."""
    if q.dim() != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f'{_OP}: expected q, k, v of one shape (N, H, D); got '
                         f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    if not q.dtype.is_floating_point or not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f'{_OP}: q, k, v must share one floating dtype; got {q.dtype}, '
                        f'{k.dtype}, {v.dtype}')
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f'{_OP}: expected cu_seqlens of shape (M + 1,) (window offsets, '
                         f'M >= 0 windows); got {tuple(cu_seqlens.shape)}')
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f'{_OP}: cu_seqlens must be int32 / int64, got {cu_seqlens.dtype}')
    if not (q.device == k.device == v.device == cu_seqlens.device):
        raise ValueError(f'{_OP}: q, k, v, cu_seqlens must be on one device; got {q.device}, '
                         f'{k.device}, {v.device}, {cu_seqlens.device}')
    n = q.shape[0]
    rule = (f'{_OP}: cu_seqlens {tuple(cu_seqlens.shape)} must rise from 0 to N={n} (rows of '
            'q, k, v), never decreasing (rows sorted by window)')
    if dispatch.debug_checks():
        first, last = int(cu_seqlens[0]), int(cu_seqlens[-1])
        bad = (cu_seqlens[1:] < cu_seqlens[:-1]).nonzero().flatten().tolist()
        if first != 0 or last != n or bad:
            raise ValueError(f'{rule}; got cu_seqlens[0]={first}, cu_seqlens[-1]={last}, '
                             f'decreasing after windows {bad[:8]}')
    else:
        ok = (cu_seqlens[0] == 0) & (cu_seqlens[-1] == n)
        if cu_seqlens.numel() > 1:
            ok = ok & (cu_seqlens[1:] >= cu_seqlens[:-1]).all()
        dispatch.assert_async(ok, f'{rule}; MMATTN_DEBUG_OPS=1 shows the values')


__all__ = ['BACKENDS', 'HAS_TRITON', 'can_run_triton', 'choose_backend', 'cu_seqlens_from_counts',
           'scattered_linear_attention', 'sla_chunked', 'sla_reference', 'triton_unsupported',
           'window_ids']
