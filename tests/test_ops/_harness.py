"""The one harness of the kernel tests (BRA, SLA): tolerances by dtype, one output / gradient
comparison per tensor, NaN-poisoned allocations, CUDA-like tensors for dispatch tests, and the
GPU-target compile of a kernel module without a GPU."""
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Sequence

import torch

from mmattn.testing.parity import max_rel_error

# (output, gradients) tolerances, relative to max |expected|, against the fp32 reference run on
# the same (dtype-rounded) inputs
TOL = {torch.float32: (2e-6, 2e-5), torch.float16: (3e-3, 1e-2)}


def assert_matches(label: str, got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor],
                   dtype: torch.dtype, names: Sequence[str] = ('output', 'gradient')) -> None:
    """``got`` = (output, gradient, ...) against ``expected``: each keeps ``dtype`` and is within
    that dtype's tolerance (``TOL``: the first entry for outputs, the second for gradients)."""
    tols = TOL[dtype]
    for i, (name, g, e) in enumerate(zip(names, got, expected, strict=True)):
        tol = tols[min(i, 1)]
        assert g.dtype == dtype, f'{label}: {name} is {g.dtype}, expected {dtype}'
        err = max_rel_error(g, e)
        assert err <= tol, f'{label}: {name} max relative error {err:.3g} > {tol:g}'


def nan_empty(shape, dtype, device) -> torch.Tensor:
    """An allocation filled with NaN: a kernel that misses a write leaves NaN behind."""
    return torch.full(shape, float('nan'), dtype=dtype, device=device)


def poison_allocations(monkeypatch, *modules) -> None:
    """Route every ``module._empty`` allocation of these backend modules through ``nan_empty``."""
    for module in modules:
        monkeypatch.setattr(module, '_empty', nan_empty)


def cuda_like(*shape, dtype=torch.float32, requires_grad=False) -> SimpleNamespace:
    """What the dispatch reads of a CUDA tensor (device, dtype, shape, requires_grad), without a
    GPU."""
    return SimpleNamespace(device=torch.device('cuda'), dtype=dtype, shape=torch.Size(shape),
                           requires_grad=requires_grad)


def compile_for_gpu(script: str, arch: int, dtype: str, kernels: int) -> None:
    """Run ``script`` (which compiles an op's kernels with ``triton.compile(...,
    target=GPUTarget('cuda', arch, 32))`` and prints 'compiled' per kernel) in a fresh process
    without ``TRITON_INTERPRET``: the interpreter accepts code the GPU compiler rejects."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    proc = subprocess.run([sys.executable, '-c', script, str(arch), dtype], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('compiled') == kernels, proc.stdout
