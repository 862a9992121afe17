"""Test set-up shared by every test module.

Without a CUDA device, Triton kernels run under the interpreter: ``TRITON_INTERPRET`` must be set
before any ``@triton.jit`` function is defined, so it is set here, before mmattn.ops is imported.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Tools run in-process (the benchmark scripts' ``--threads 1``) set torch's thread count for
    the whole process: every later test would run single-threaded."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
