"""Test set-up shared by every test module.

Without a CUDA device, Triton kernels run under the interpreter: ``TRITON_INTERPRET`` must be set
before any ``@triton.jit`` function is defined, so it is set here, before mmattn.ops is imported.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
