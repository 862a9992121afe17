"""Timing and peak-memory helpers shared by the benchmark scripts in tools/analysis_tools/."""
import statistics
import time
from typing import Callable, Dict, List

import torch

__all__ = ['interleaved_ms', 'peak_bytes']


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def interleaved_ms(fns: Dict[str, Callable[[], object]], device: str, iters: int,
                   warmup: int) -> Dict[str, float]:
    """Median milliseconds per call of each function; every iteration runs all of them, in an
    order that alternates, so that load changes on a shared machine hit them alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(iters):
        for name in (names if i % 2 == 0 else names[::-1]):
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Most bytes allocated at once during ``fn()``, above the level before it (CUDA: the
    allocator's peak; CPU: the profiler's raw allocation/free events replayed in time order)."""
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # raw '[memory]' events (prof.events() folds those made inside an operator into its totals)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]' and e.device_type() == DeviceType.CPU)
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak
