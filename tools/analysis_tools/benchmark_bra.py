"""Bi-level routing attention: forward+backward time and peak memory of each backend, in one run.

    python tools/analysis_tools/benchmark_bra.py --threads 1           # CPU: reference vs torch
    python tools/analysis_tools/benchmark_bra.py --device cuda         # GPU: + triton
    python tools/analysis_tools/benchmark_bra.py --sizes 800x1344 --stages 2 --iters 3

Settings are BiFormer-S's routing-attention stages (width 64/128/256, 2/4/8 heads, topk 1/4/16)
at an input size and ``n_win`` (``800x1344``: detection, n_win 16; ``512x512``: segmentation,
n_win 8; ``224x224``: classification, n_win 7), with the stage map zero-padded to a multiple of
``n_win`` as ``auto_pad`` does. Each case runs the op alone: q, k, v are strided views of one
``[q | k | v]`` leaf tensor (as in the model), the routing is computed once from region means, then
``out = bra_attention(q, k, v, r_idx, backend=...)`` and ``out.backward(grad)``.

Backends: ``reference`` (the official gather), ``torch`` (chunked over query regions, recompute
in backward), ``triton`` (fused kernels; CUDA only here). Reported: median milliseconds of
forward and of forward+backward over ``--iters`` runs (after ``--warmup``; the backends alternate
within each iteration), and peak memory:
the most memory allocated at once during one forward+backward above what was allocated before
(the inputs). On CUDA that is ``torch.cuda.max_memory_allocated``; on CPU the running sum of
allocations and frees of PyTorch's CPU allocator recorded by ``torch.profiler`` (scratch memory of
BLAS that bypasses PyTorch's allocator is not counted). Ratios are against ``reference``.
"""
import argparse
from typing import Tuple

import torch

from mmattn.ops.bra import bra_attention, topk_routing
from mmattn.utils.benchmark import interleaved_ms, peak_bytes

# BiFormer-S (and T) routing-attention stages: (width, heads, topk); stage 3 is global attention
STAGES = {0: (64, 2, 1), 1: (128, 4, 4), 2: (256, 8, 16)}
N_WIN = {'800x1344': 16, '512x512': 8, '224x224': 7}


def stage_geometry(size: str, stage: int, n_win: int) -> Tuple[int, int]:
    """Region height and width of stage ``stage`` for an input ``HxW`` after auto_pad."""
    h, w = (int(v) for v in size.split('x'))
    for _ in range(stage + 2):  # stem (stride 4) then one stride-2 downsample per stage
        h, w = (h + 1) // 2, (w + 1) // 2
    return -(-h // n_win), -(-w // n_win)


def make_case(size: str, stage: int, batch: int, device: str, dtype: torch.dtype, n_win: int):
    dim, heads, topk = STAGES[stage]
    rh, rw = stage_geometry(size, stage, n_win)
    g = torch.Generator().manual_seed(0)
    shape = (batch, n_win * n_win, rh * rw, 3 * dim)
    qkv = torch.randn(shape, generator=g).to(device=device, dtype=dtype).requires_grad_()
    grad = torch.randn(shape[:3] + (dim, ), generator=g).to(device=device, dtype=dtype)
    with torch.no_grad():
        q, k, _ = qkv.split(dim, dim=-1)
        r_idx = topk_routing(q.mean(2), k.mean(2), topk, dim ** -0.5)
    return qkv, grad, r_idx, heads, dim ** -0.5, (n_win * n_win, rh * rw, topk)


def fwd_bwd(backend: str, qkv, grad, r_idx, heads: int, scale: float, backward: bool = True):
    q, k, v = qkv.split(qkv.shape[-1] // 3, dim=-1)
    out = bra_attention(q, k, v, r_idx, heads, scale, backend=backend)
    if backward:
        out.backward(grad)
        qkv.grad = None
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', default=['800x1344'], choices=sorted(N_WIN))
    parser.add_argument('--stages', nargs='+', type=int, default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument('--backends', nargs='+', default=None,
                        help='default: reference torch (+ triton on cuda)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads (torch.set_num_threads); on a shared machine 1 avoids '
                        'timing thread-synchronisation stalls instead of the operators')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = args.backends or (['reference', 'torch'] + (['triton'] if args.device == 'cuda'
                                                          else []))
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    dev_name = (torch.cuda.get_device_name() if args.device == 'cuda' else
                f'CPU, {torch.get_num_threads()} threads')
    print(f'# BRA forward+backward, BiFormer-S stages, batch {args.batch}, {args.dtype}, '
          f'{dev_name}, torch {torch.__version__}')
    print('| input (n_win) | stage | regions x tokens, topk | backend | fwd ms | fwd+bwd ms | '
          'peak MiB | time / ref | mem / ref |')
    print('|---|---|---|---|---|---|---|---|---|')
    for size in args.sizes:
        for stage in args.stages:
            qkv, grad, r_idx, heads, scale, (r, length, topk) = make_case(
                size, stage, args.batch, args.device, dtype, N_WIN[size])
            calls = {b: (lambda b=b: fwd_bwd(b, qkv, grad, r_idx, heads, scale)) for b in backends}
            fwds = {b: (lambda b=b: fwd_bwd(b, qkv, grad, r_idx, heads, scale, False))
                    for b in backends}
            mem = {b: peak_bytes(calls[b], args.device) / 2**20 for b in backends}
            with torch.no_grad():
                t_fwd = interleaved_ms(fwds, args.device, args.iters, args.warmup)
            t_all = interleaved_ms(calls, args.device, args.iters, args.warmup)
            rows = {b: (t_fwd[b], t_all[b], mem[b]) for b in backends}
            ref = rows.get('reference')
            for backend, (t_fwd, t_all, mem) in rows.items():
                ratio_t = f'{t_all / ref[1]:.2f}' if ref else '-'
                ratio_m = f'{mem / ref[2]:.2f}' if ref else '-'
                print(f'| {size} ({N_WIN[size]}) | {stage} | {r} x {length}, {topk} | {backend} | '
                      f'{t_fwd:.1f} | {t_all:.1f} | {mem:.1f} | {ratio_t} | {ratio_m} |')


if __name__ == '__main__':
    main()
