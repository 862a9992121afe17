"""Eager vs ``torch.compile`` (inductor) forward latency of every 2D backbone on the CPU.

    python tools/analysis_tools/benchmark_compile.py --shape 1 3 224 224 --iters 10 --warmup 2

For each backbone (``--models``, default all: PoolFormer-S12, BiFormer-T, Agent-Swin-T,
SLAB-Swin-T, BEVANet-S) the eval model is compiled with ``torch.compile`` (``--backend``, default
inductor) and its first call timed (compile time). Then, under ``torch.inference_mode``, every
iteration runs eager and compiled once each, alternating which goes first; printed are the median
and min-max milliseconds per forward, the speed-up (eager median / compiled median) and the
largest relative difference of the outputs. Threads: ``torch.get_num_threads()`` (set
``OMP_NUM_THREADS`` / ``--threads``).
"""
import argparse
import statistics
import time
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

# name -> (table label, backbone config)
MODELS: Dict[str, Tuple[str, dict]] = {
    'poolformer': ('PoolFormer-S12', dict(type='mmattn.PoolFormer', arch='s12')),
    'biformer': ('BiFormer-T', dict(type='mmattn.BiFormer', arch='tiny')),
    'agent_swin': ('Agent-Swin-T', dict(type='mmattn.AgentSwinTransformer', arch='tiny')),
    'slab_swin': ('SLAB-Swin-T', dict(type='mmattn.SLABSwinTransformer', arch='tiny')),
    'bevanet': ('BEVANet-S', dict(type='mmattn.BEVANet', arch='s')),
}


def build(cfg: dict) -> nn.Module:
    import mmattn.models  # noqa: F401  registers mmattn's models
    from mmengine.registry import MODELS as REGISTRY
    from mmengine.registry import init_default_scope
    init_default_scope('mmattn')
    torch.manual_seed(0)
    return REGISTRY.build(dict(cfg)).eval()


def as_tuple(outs) -> Tuple[torch.Tensor, ...]:
    return tuple(outs) if isinstance(outs, (tuple, list)) else (outs, )


def rel_diff(got: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> float:
    return max(float((g - r).abs().max()) / (float(r.abs().max()) + 1e-12)
               for g, r in zip(got, ref))


def bench(model: nn.Module, x: torch.Tensor, backend: str, iters: int,
          warmup: int) -> Dict[str, float]:
    """Compile time, interleaved eager / compiled latencies (ms) and output difference."""
    compiled = torch.compile(model, backend=backend)
    with torch.inference_mode():
        t0 = time.perf_counter()
        got = as_tuple(compiled(x))
        compile_s = time.perf_counter() - t0
        diff = rel_diff(got, as_tuple(model(x)))
        times: Dict[str, List[float]] = {'eager': [], 'compiled': []}
        for i in range(warmup + iters):
            order = [('eager', model), ('compiled', compiled)]
            for key, fn in (order if i % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                fn(x)
                if i >= warmup:
                    times[key].append((time.perf_counter() - t0) * 1e3)
    eager, comp = times['eager'], times['compiled']
    return dict(compile_s=compile_s, diff=diff, eager=statistics.median(eager),
                eager_min=min(eager), eager_max=max(eager), compiled=statistics.median(comp),
                compiled_min=min(comp), compiled_max=max(comp),
                speedup=statistics.median(eager) / statistics.median(comp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument('--shape', nargs=4, type=int, default=[1, 3, 224, 224],
                        metavar=('B', 'C', 'H', 'W'))
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--backend', default='inductor')
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(*args.shape, generator=torch.Generator().manual_seed(0))
    print(f'torch {torch.__version__}, backend {args.backend}, input {tuple(args.shape)}, '
          f'{torch.get_num_threads()} threads, {args.iters} iters after {args.warmup} warm-up')
    print('| model | eager ms (median, min-max) | compiled ms (median, min-max) | speed-up | '
          'compile s (1st call) | max rel diff |')
    print('|---|---|---|---|---|---|')
    for name in args.models:
        label, cfg = MODELS[name]
        torch._dynamo.reset()
        r = bench(build(cfg), x, args.backend, args.iters, args.warmup)
        print(f"| {label} | {r['eager']:.1f} ({r['eager_min']:.1f}-{r['eager_max']:.1f}) | "
              f"{r['compiled']:.1f} ({r['compiled_min']:.1f}-{r['compiled_max']:.1f}) | "
              f"{r['speedup']:.2f}x | {r['compile_s']:.1f} | {r['diff']:.1e} |", flush=True)


if __name__ == '__main__':
    main()
