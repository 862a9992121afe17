"""Test set-up shared by every test module.

Without a CUDA device, Triton kernels run under the interpreter: ``TRITON_INTERPRET`` must be set
before any ``@triton.jit`` function is defined, so it is set here, before mmattn.ops is imported.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

from mmattn.testing.threads import cpu_threads  # noqa: E402  (after TRITON_INTERPRET)

if 'PYTEST_XDIST_WORKER' in os.environ:
    # ``make test`` runs one pytest-xdist worker per core: each worker and the tools it starts
    # as subprocesses get their share of the cores instead of all of them.
    torch.set_num_threads(cpu_threads())
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ[var] = str(cpu_threads())

# The files with the longest runs (minutes of module fixtures) are collected first, so that with
# ``--dist loadfile`` a worker starts them at once instead of finishing the suite alone on them.
LONGEST_FIRST = ('test_scatterformer_e2e.py', 'test_train_resume.py', 'test_compile_export.py',
                 'test_bad_inputs.py', 'test_sdanet_sample.py', 'test_biformer_train.py')


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: the order within a file and among the others is kept


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
