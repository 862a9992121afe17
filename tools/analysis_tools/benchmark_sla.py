"""Scattered linear attention: forward and forward+backward time and peak memory of each backend.

    python tools/analysis_tools/benchmark_sla.py --threads 1 --sizes 1024 4096 16384   # CPU
    python tools/analysis_tools/benchmark_sla.py --device cuda                         # + triton

Each case is ``N`` window-sorted rows with ScatterFormer's attention shape (H=4 heads of D=32)
and a realistic, seeded window-size distribution: rows per window drawn from a lognormal
(median ``--median-rows``, sigma ``--sigma``) clipped to [1, ``--max-rows``] (2304 = a full
12x12x16 window), the last window cut so the sizes sum to N. q, k, v are strided views of one
``(N, 3, H, D)`` leaf (as after the layer's qkv projection); ``out.backward(grad)`` for the
backward.

Backends: ``reference`` (index_add of every per-row outer product: an (N, H, D, D) tensor),
``torch`` (the chunked CPU backend, recompute in backward), ``triton`` (CUDA only) and
``padded``: the softmax-free baseline that pads every window to the largest one and runs dense
batched linear attention on ``(M, H, Lmax, D)`` tensors (skipped when its estimated memory
exceeds ``--padded-limit-mib``). Reported: median milliseconds of forward (no grad) and of
forward+backward over ``--iters`` runs after ``--warmup`` (the backends alternate within every
iteration), and peak memory of one forward+backward above what was allocated before (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the running sum of PyTorch CPU-allocator events seen
by ``torch.profiler``). Ratios are against ``reference``.
"""
import argparse
import math
from typing import List

import torch
from torch import Tensor

from mmattn.ops.sla import cu_seqlens_from_counts, scattered_linear_attention, window_ids
from mmattn.utils.benchmark import interleaved_ms, peak_bytes

HEADS, HEAD_DIM = 4, 32


def window_counts(n: int, max_rows: int = 2304, median_rows: float = 120., sigma: float = 1.2,
                  seed: int = 0) -> Tensor:
    """int64 rows per window, lognormal clipped to [1, max_rows], summing to exactly ``n``."""
    g = torch.Generator().manual_seed(seed)
    counts: List[int] = []
    total = 0
    while total < n:
        draw = torch.empty(256).log_normal_(math.log(median_rows), sigma, generator=g)
        for c in draw.round().clamp(1, max_rows).long().tolist():
            c = min(c, n - total)
            counts.append(c)
            total += c
            if total == n:
                break
    return torch.tensor(counts, dtype=torch.int64)


def make_case(n: int, device: str, dtype: torch.dtype, max_rows: int, median_rows: float,
              sigma: float):
    """``(N, 3, H, D)`` qkv leaf, output gradient, window offsets ``cu_seqlens (M + 1,)`` and rows
    per window ``counts (M,)``."""
    counts = window_counts(n, max_rows, median_rows, sigma).to(device)
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(n, 3, HEADS, HEAD_DIM, generator=g).to(device=device, dtype=dtype)
    grad = torch.randn(n, HEADS, HEAD_DIM, generator=g).to(device=device, dtype=dtype)
    return qkv.requires_grad_(), grad, cu_seqlens_from_counts(counts), counts


def padded_linear_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor,
                            eps: float = 1e-6) -> Tensor:
    """Baseline: pad every window to the largest, dense batched ReLU linear attention."""
    n, h, d = q.shape
    counts = cu_seqlens[1:] - cu_seqlens[:-1]
    m, length = counts.numel(), int(counts.max())
    win = window_ids(cu_seqlens, n)
    pos = torch.arange(n, device=q.device) - cu_seqlens[win]

    def pad(x: Tensor) -> Tensor:  # (N, H, D) -> (M, H, L, D), zeros in the padding
        out = x.new_zeros(m, length, h, d)
        out = out.index_put((win, pos), x)
        return out.transpose(1, 2)

    qp, kp, vp = torch.relu(pad(q)), torch.relu(pad(k)), pad(v)
    state = kp.transpose(-1, -2) @ vp  # (M, H, D, D)
    den = qp @ kp.sum(2).unsqueeze(-1) + eps  # (M, H, L, 1)
    out = (qp @ state) / den
    return out.transpose(1, 2)[win, pos]


def padded_bytes(counts: Tensor, itemsize: int) -> int:
    """Rough peak of the padded baseline's forward+backward: ~12 padded (M, L, H, D) tensors."""
    return 12 * counts.numel() * int(counts.max()) * HEADS * HEAD_DIM * itemsize


def fwd_bwd(backend: str, qkv: Tensor, grad: Tensor, cu_seqlens: Tensor,
            backward: bool = True) -> Tensor:
    q, k, v = qkv.unbind(1)
    if backend == 'padded':
        out = padded_linear_attention(q, k, v, cu_seqlens)
    else:
        out = scattered_linear_attention(q, k, v, cu_seqlens, backend=backend)
    if backward:
        out.backward(grad)
        qkv.grad = None
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', type=int,
                        default=[1024, 4096, 16384, 65536, 131072], help='rows N')
    parser.add_argument('--backends', nargs='+', default=None,
                        help='default: reference torch padded (+ triton on cuda)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--max-rows', type=int, default=2304, help='largest window')
    parser.add_argument('--median-rows', type=float, default=120.)
    parser.add_argument('--sigma', type=float, default=1.2)
    parser.add_argument('--padded-limit-mib', type=float, default=16384.,
                        help='skip the padded baseline above this estimated peak')
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads (torch.set_num_threads); on a shared machine 1 avoids '
                        'timing thread-synchronisation stalls instead of the operators')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = args.backends or (['reference', 'torch', 'padded']
                                 + (['triton'] if args.device == 'cuda' else []))
    dtype = getattr(torch, args.dtype)
    dev_name = (torch.cuda.get_device_name() if args.device == 'cuda' else
                f'CPU, {torch.get_num_threads()} threads')
    print(f'# SLA forward / forward+backward, H={HEADS}, D={HEAD_DIM}, {args.dtype}, window rows '
          f'lognormal(median {args.median_rows:g}, sigma {args.sigma:g}) clipped to '
          f'[1, {args.max_rows}], {dev_name}, torch {torch.__version__}')
    print('| N | windows (mean / max rows) | backend | fwd ms | fwd+bwd ms | peak MiB | '
          'time / ref | mem / ref |')
    print('|---|---|---|---|---|---|---|---|')
    for n in args.sizes:
        qkv, grad, cu_seqlens, counts = make_case(n, args.device, dtype, args.max_rows,
                                               args.median_rows, args.sigma)
        shape = f'{counts.numel()} ({n / counts.numel():.0f} / {int(counts.max())})'
        run = [b for b in backends if b != 'padded'
               or padded_bytes(counts, qkv.element_size()) <= args.padded_limit_mib * 2**20]
        calls = {b: (lambda b=b: fwd_bwd(b, qkv, grad, cu_seqlens)) for b in run}
        fwds = {b: (lambda b=b: fwd_bwd(b, qkv, grad, cu_seqlens, False)) for b in run}
        mem = {b: peak_bytes(calls[b], args.device) / 2**20 for b in run}
        with torch.no_grad():
            t_fwd = interleaved_ms(fwds, args.device, args.iters, args.warmup)
        t_all = interleaved_ms(calls, args.device, args.iters, args.warmup)
        ref = ((t_all['reference'], mem['reference']) if 'reference' in run else None)
        for backend in backends:
            if backend not in run:
                print(f'| {n} | {shape} | {backend} | skipped (estimated peak over '
                      f'{args.padded_limit_mib:g} MiB) | | | | |')
                continue
            ratio_t = f'{t_all[backend] / ref[0]:.2f}' if ref else '-'
            ratio_m = f'{mem[backend] / ref[1]:.2f}' if ref else '-'
            print(f'| {n} | {shape} | {backend} | {t_fwd[backend]:.1f} | {t_all[backend]:.1f} | '
                  f'{mem[backend]:.1f} | {ratio_t} | {ratio_m} |')


if __name__ == '__main__':
    main()
