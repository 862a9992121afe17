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


def _subclasses(cls: type) -> list:
    out = []
    for sub in cls.__subclasses__():
        out += [sub] + _subclasses(sub)
    return out


@pytest.fixture(autouse=True)
def _fresh_mmengine_instances():
    """mmengine keeps one global instance per name (the configs' ``Visualizer`` is always named
    'visualizer'): a runner built by a later test would reuse the earlier test's visualizer and
    write into that test's (deleted) work dir. Each test starts with none, as a new process does."""
    yield
    import sys
    if 'mmengine' not in sys.modules:
        return
    import logging

    from mmengine.utils import ManagerMixin
    for cls in _subclasses(ManagerMixin):
        instances = cls.__dict__.get('_instance_dict')
        if not instances:
            continue
        for instance in instances.values():
            for handler in getattr(instance, 'handlers', []):
                if isinstance(handler, logging.FileHandler):
                    handler.close()
        instances.clear()
