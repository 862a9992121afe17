"""FLOP formulas of mmattn's attention ops (FLOPs = 2 x multiply-accumulates, the convention of
``torch.utils.flop_counter.FlopCounterMode``; only matmul-like products are counted, as
FlopCounterMode does for aten ops: softmax, exp, ReLU, normalisers and masks are free).

The Triton kernels are launched through ``torch.library`` custom ops (``torch.ops.mmattn.*``, see
``mmattn/ops/{bra,sla}/triton.py``) with these formulas registered, so that FlopCounterMode counts
them like the aten matmuls of the ``'torch'`` / ``'reference'`` backends. The formulas count the
work the kernels do:

* BRA forward: per (query region, head), ``Lq x (topk Lk)`` logits (``dq`` MACs each) and the
  same number of rows of ``P V`` (``dv`` MACs each): ``2 N R m Lq topk Lk (dq + dv)`` FLOPs,
  equal to dense attention over ``topk Lk`` keys (and to the ``'torch'`` backend's matmuls).
* BRA backward: the dQ kernel recomputes ``S`` and ``dP`` and forms ``dQ`` (``2 dq + dv``); the
  dK/dV kernel recomputes ``S^T`` and ``dP^T`` and forms ``dK``, ``dV`` (``2 dq + 2 dv``):
  ``2 N R m Lq topk Lk (4 dq + 3 dv)``. (The ``'torch'`` backend recomputes ``S`` and ``dP`` once:
  ``3 dq + 2 dv``.)
* SLA forward: ``relu(k)^T v`` and ``relu(q) S`` per row and head: ``2 x 2 N H D^2``.
* SLA backward: the state recomputed, then ``relu(q) S``, ``dnum S^T``, ``relu(q)^T dnum``,
  ``v dS^T``, ``relu(k) dS``: ``6 x 2 N H D^2``.
"""
from typing import Sequence

import torch
from torch.utils import flop_counter

Shape = Sequence[int]


def bra_forward_flops(q_shape: Shape, k_shape: Shape, v_shape: Shape, r_idx_shape: Shape,
                      num_heads: int) -> int:
    """FLOPs of routed attention: q (N, R, Lq, Cqk), k (N, R, Lk, Cqk), v (N, R, Lk, Cv),
    r_idx (N, R, topk); per-head widths ``Cqk / m``, ``Cv / m``."""
    n, r, lq, cqk = q_shape
    lk, cv, topk = k_shape[2], v_shape[-1], r_idx_shape[-1]
    pairs = n * r * lq * topk * lk  # (query, routed key) pairs, over all heads: x m / m
    return 2 * pairs * (cqk + cv)


def bra_backward_flops(q_shape: Shape, k_shape: Shape, v_shape: Shape, r_idx_shape: Shape,
                       num_heads: int) -> int:
    """FLOPs of the fused Triton backward (dQ kernel + dK/dV kernel, logits recomputed)."""
    n, r, lq, cqk = q_shape
    lk, cv, topk = k_shape[2], v_shape[-1], r_idx_shape[-1]
    pairs = n * r * lq * topk * lk
    return 2 * pairs * (4 * cqk + 3 * cv)


def sla_forward_flops(q_shape: Shape) -> int:
    """FLOPs of scattered linear attention on q, k, v (N, H, D) (window layout does not matter:
    every row adds its outer product to one state and reads one state)."""
    n, h, d = q_shape
    return 2 * 2 * n * h * d * d


def sla_backward_flops(q_shape: Shape) -> int:
    """FLOPs of the Triton backward (window states recomputed)."""
    n, h, d = q_shape
    return 6 * 2 * n * h * d * d


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args,
                            out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                                 value_shape)


def register_cpu_sdpa_flops() -> None:
    """FLOP formulas for the CPU flash-attention kernels that ``scaled_dot_product_attention``
    dispatches to on the CPU (FlopCounterMode counts them as 0 otherwise; on CUDA and on the meta
    device SDPA is already counted). Idempotent."""
    aten = torch.ops.aten
    for op, formula in ((aten._scaled_dot_product_flash_attention_for_cpu, _cpu_sdpa_flop),
                        (aten._scaled_dot_product_flash_attention_for_cpu_backward,
                         _cpu_sdpa_backward_flop)):
        if op not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op)(formula)


register_cpu_sdpa_flops()

__all__ = ['bra_backward_flops', 'bra_forward_flops', 'register_cpu_sdpa_flops',
           'sla_backward_flops', 'sla_forward_flops']
