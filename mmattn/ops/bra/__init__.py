"""Bi-level routing attention (BiFormer, CVPR 2023): region routing + routed-region attention.

One public function, :func:`bra_attention`, with a backend switch:

* ``'reference'``: the official legacy math, gathering the routed K/V (``topk`` x memory); oracle.
* ``'torch'``: memory-lean PyTorch, chunked over query regions with recompute in backward (CPU).
* ``'triton'``: fused Triton kernels, K/V read by index with an online softmax (CUDA; on CPU only
  under ``TRITON_INTERPRET=1``).
* ``'auto'``: the first of ``'triton'``, ``'torch'`` that can run the tensors
  (:func:`can_run_triton`: CUDA, fp16 / bf16 / fp32 / fp64, head dims <= 128), except that
  fp32 / fp64 calls that need gradients go to ``'torch'`` (:func:`auto_skips_triton`: the
  kernels' fp32 backward measured slower; ``backend='triton'`` still runs them).

All backends take region-major tensors: ``q (N, R, Lq, Cqk)``, ``k (N, R, Lk, Cqk)``,
``v (N, R, Lk, Cv)`` (strided views are fine) and ``r_idx (N, R, topk)`` from :func:`topk_routing`.
Under ``torch.autocast`` q, k, v are cast to the autocast dtype (as a matmul would be); the op
then computes in that dtype with fp32 accumulation.
"""
from typing import Optional

import torch
from torch import Tensor

from mmattn.ops import dispatch
from mmattn.ops.dispatch import BACKENDS

from .chunked import bra_chunked
from .reference import bra_reference

HAS_TRITON = dispatch.triton_available()
if HAS_TRITON:  # an ImportError from our own kernel module is a bug: let it propagate
    from . import triton as _triton_impl
else:  # triton is an optional dependency (extras 'kernels')
    _triton_impl = None

_OP = 'bra_attention'
# largest per-head width of the Triton tiles (one BLOCK_M x head-dim fp32 accumulator per program)
TRITON_MAX_HEAD_DIM = 128
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def triton_unsupported(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
                       explicit: bool = False) -> Optional[str]:
    """Why the Triton backend cannot run these tensors, or ``None`` when it can."""
    reason = dispatch.triton_common_reason(_OP, q, HAS_TRITON, TRITON_DTYPES, explicit)
    if reason is not None:
        return reason
    dq, dv = q.shape[-1] // num_heads, v.shape[-1] // num_heads
    if max(dq, dv) > TRITON_MAX_HEAD_DIM:
        return (f'head dims {dq} (q/k), {dv} (v) of q {tuple(q.shape)}, v {tuple(v.shape)} with '
                f'num_heads={num_heads}: at most {TRITON_MAX_HEAD_DIM}')
    return None


def auto_skips_triton(q: Tensor, k: Tensor, v: Tensor) -> Optional[str]:
    """Why ``'auto'`` prefers ``'torch'`` for tensors the Triton kernels can run, or ``None``.

    fp32 / fp64 with gradients: BiFormer-S forward+backward at 800x1344 took 1270 ms with the
    Triton backend and 463 ms with ``'torch'`` on an H200 (``tools/gpu_check.py``, 2026-11-30);
    with bf16 autocast 135 vs 533 ms, and fp32 forward alone 0.65-0.74 vs 4.4-7.4 ms per stage.
    """
    if q.dtype in (torch.float32, torch.float64) and torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad):
        return (f'{q.dtype} with gradients: the Triton backward is slower than the torch '
                "backend in fp32 (measured on an H200); pass backend='triton' to use it anyway")
    return None


def can_run_triton(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int) -> bool:
    """Whether ``'auto'`` may send these tensors to the Triton kernels."""
    return triton_unsupported(q, k, v, r_idx, num_heads) is None


def choose_backend(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
                   backend: str = 'auto') -> str:
    """The concrete backend that runs :func:`bra_attention` on these tensors."""
    explicit = backend != 'auto'
    return dispatch.choose_backend(_OP, backend, (
        ('triton', lambda: triton_unsupported(q, k, v, r_idx, num_heads, explicit)
         or (None if explicit else auto_skips_triton(q, k, v))),
        ('torch', lambda: None),
        ('reference', lambda: None)))


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
        r_idx: (N, R, topk) int32 / int64 routed key/value regions per query region, each in
            ``[0, R)``, ``1 <= topk <= R``; no gradient.
        num_heads: ``m``.
        scale: logit scale applied to ``q``.
        backend: ``'auto'`` | ``'reference'`` | ``'torch'`` | ``'triton'``.

    Returns:
        (N, R, Lq, Cv), same dtype as ``q`` (the autocast dtype under ``torch.autocast``).
    """
    q, k, v = dispatch.autocast_inputs(q, k, v)
    _validate(q, k, v, r_idx, num_heads)
    chosen = choose_backend(q, k, v, r_idx, num_heads, backend)
    if chosen == 'reference':
        return bra_reference(q, k, v, r_idx, num_heads, scale)
    if chosen == 'torch':
        return bra_chunked(q, k, v, r_idx, num_heads, scale)
    return _triton_impl.bra_triton(q, k, v, r_idx, num_heads, scale)


def _validate(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int) -> None:
    """Shapes, dtypes and devices (metadata, free); the range of ``r_idx`` without a host sync
    (a device-side assert; a readable message with the values under debug checks)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or r_idx.dim() != 3:
        raise ValueError(f'{_OP}: expected q, k, v of shape (N, R, L, C) and r_idx '
                         f'(N, R, topk); got {tuple(q.shape)}, {tuple(k.shape)}, '
                         f'{tuple(v.shape)}, {tuple(r_idx.shape)}')
    n, r, _, cqk = q.shape
    if k.shape[:2] != (n, r) or v.shape[:3] != k.shape[:3] or k.shape[-1] != cqk:
        raise ValueError(f'{_OP}: inconsistent shapes q {tuple(q.shape)}, '
                         f'k {tuple(k.shape)}, v {tuple(v.shape)}')
    if r_idx.shape[:2] != (n, r):
        raise ValueError(f'{_OP}: r_idx {tuple(r_idx.shape)} does not match q '
                         f'{tuple(q.shape)} in (N, R)')
    topk = r_idx.shape[-1]
    if not 1 <= topk <= r:
        raise ValueError(f'{_OP}: topk={topk} (last dim of r_idx {tuple(r_idx.shape)}) must be '
                         f'in [1, {r}] (number of regions)')
    if cqk % num_heads or v.shape[-1] % num_heads:
        raise ValueError(f'{_OP}: channels {cqk} (q/k) and {v.shape[-1]} (v) must be '
                         f'divisible by num_heads={num_heads}')
    if r_idx.dtype not in (torch.int32, torch.int64):
        raise TypeError(f'{_OP}: r_idx must be an int32 / int64 tensor of region indices, '
                        f'got {r_idx.dtype}')
    if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_floating_point:
        raise TypeError(f'{_OP}: q, k, v must share one floating dtype; got {q.dtype}, '
                        f'{k.dtype}, {v.dtype}')
    if not (q.device == k.device == v.device == r_idx.device):
        raise ValueError(f'{_OP}: q, k, v, r_idx must be on one device; got {q.device}, '
                         f'{k.device}, {v.device}, {r_idx.device}')
    if r_idx.numel() == 0:
        return
    if dispatch.debug_checks():
        lo, hi = (int(x) for x in torch.aminmax(r_idx))
        if lo < 0 or hi >= r:
            raise ValueError(f'{_OP}: r_idx {tuple(r_idx.shape)} holds values in [{lo}, {hi}], '
                             f'outside [0, {r}) (number of regions)')
    else:
        lo, hi = r_idx.min(), r_idx.max()  # not aminmax: the ONNX exporter lacks its amin
        dispatch.assert_async((lo >= 0) & (hi < r),
                              f'{_OP}: r_idx {tuple(r_idx.shape)} holds values outside [0, {r}) '
                              '(number of regions); MMATTN_DEBUG_OPS=1 shows them')


__all__ = ['BACKENDS', 'HAS_TRITON', 'bra_attention', 'bra_chunked', 'bra_reference',
           'auto_skips_triton', 'can_run_triton', 'choose_backend', 'topk_routing',
           'triton_unsupported']
