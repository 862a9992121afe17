"""Bi-level routing attention, plain PyTorch: the official (legacy BRA) math, gather and all.

This is the oracle every other backend is tested against. It follows the released BiFormer code
step by step: the key/value tokens of each query region's top-k routed regions are gathered into
one ``(N, R, topk, Lk, Cqk + Cv)`` tensor, then attention is a dense matmul per (region, head) over
all ``topk * Lk`` gathered keys. Memory is ``topk`` times the size of K/V plus the full logits.
"""
import torch
from torch import Tensor


def bra_reference(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
                  scale: float) -> Tensor:
    """Attention of each query region over the tokens of its routed key/value regions.

    Args:
        q: (N, R, Lq, Cqk) queries, region-major; channels are head-major (``h * dq + c``).
        k: (N, R, Lk, Cqk) keys.
        v: (N, R, Lk, Cv) values.
        r_idx: (N, R, topk) int64, the key/value regions each query region attends to.
        num_heads: heads ``m``; ``Cqk`` and ``Cv`` must be divisible by it.
        scale: softmax temperature applied to ``q`` (the legacy BRA uses ``Cqk ** -0.5``).

    Returns:
        (N, R, Lq, Cv).
    """
    n, p2, lq, cqk = q.shape
    lk, cv, topk, m = k.shape[2], v.shape[-1], r_idx.shape[-1], num_heads
    kv = torch.cat([k, v], dim=-1)
    ckv = cqk + cv
    # (N, R, topk, Lk, Cqk + Cv): gathered from a stride-0 expanded view, as the official KVGather
    kv_sel = torch.gather(
        kv.view(n, 1, p2, lk, ckv).expand(-1, p2, -1, -1, -1), dim=2,
        index=r_idx.view(n, p2, topk, 1, 1).expand(-1, -1, -1, lk, ckv))
    k_sel, v_sel = kv_sel.split([cqk, cv], dim=-1)
    k_sel = k_sel.reshape(n, p2, topk, lk, m, cqk // m).permute(0, 1, 4, 5, 2, 3)
    k_sel = k_sel.reshape(n * p2, m, cqk // m, topk * lk)
    v_sel = v_sel.reshape(n, p2, topk, lk, m, cv // m).permute(0, 1, 4, 2, 3, 5)
    v_sel = v_sel.reshape(n * p2, m, topk * lk, cv // m)
    q = q.reshape(n * p2, lq, m, cqk // m).transpose(1, 2)
    attn = torch.softmax((q * scale) @ k_sel, dim=-1)  # (N R, m, Lq, topk Lk)
    out = attn @ v_sel  # (N R, m, Lq, dv)
    return out.transpose(1, 2).reshape(n, p2, lq, cv)
