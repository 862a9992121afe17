"""Compatibility patches for mmattn's pinned stack, applied by :func:`apply_all` (which
``mmattn`` runs once mmengine is imported). Each patch first probes whether the installed code
is broken, applies only then, and logs once that it did; ``APPLIED`` lists those in force.

* ``cpu_distributed`` -- mmengine 0.10.7's PyTorch launcher (``_init_dist_pytorch``) calls
  ``torch.cuda.set_device`` unconditionally, so ``torchrun`` on a machine without a GPU dies
  before the first iteration. Probe: no CUDA device and the launcher's code selects one. Patched,
  the process group (gloo) is initialised without selecting a device.
* ``cityscapes_in1d`` -- numpy 2.4 removed ``np.in1d``, which cityscapesscripts 2.3.0 (the newest
  release) still calls in its pixel- and instance-level evaluation, which mmseg's
  ``CityscapesMetric`` and mmdet's Cityscapes metric run. Probe: numpy has no ``in1d``. Patched,
  those two cityscapesscripts modules (when imported) see a numpy namespace with ``in1d`` (``isin``
  of the flattened input, numpy's own definition); numpy itself is left alone.
* ``onecycle_state`` -- mmengine 0.10.7's ``OneCycleParamScheduler`` keeps its annealing function
  as a bound method in ``__dict__``, which ``state_dict()`` returns whole: every checkpoint of a
  one-cycle run (the ScatterFormer configs) then pickles the scheduler object itself (and its
  optimizer), which a ``weights_only=True`` load refuses, so ``--resume`` fails. Probe: the
  state of a one-cycle scheduler holds a callable. Patched, ``state_dict()`` leaves out
  ``anneal_func``, which ``__init__`` sets from ``anneal_strategy`` (a string that is kept).

Not a compatibility patch but applied with them: :func:`mmattn.utils.checkpoint.use_safe_loader`
makes mmengine read checkpoints with ``weights_only=True`` (see that module).
"""
import importlib.abc
import importlib.util
import inspect
import sys
import types
from typing import Callable, Dict, List

import torch

APPLIED: List[str] = []
#: The functions each patch replaced, by dotted name (tests call them to show the need).
ORIGINALS: Dict[str, Callable] = {}

IN1D_CALLERS = ('cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling',
                'cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling')


def _log_once(name: str, why: str) -> None:
    from mmengine.logging import print_log
    print_log(f'mmattn.utils.compat: applied {name!r} ({why})', logger='current')


# ------------------------------------------------------------------------------ cpu_distributed
def cpu_distributed_needed() -> bool:
    """No CUDA device, and mmengine's launcher selects a CUDA device anyway."""
    import mmengine.dist.utils as dist_utils
    if torch.cuda.is_available():
        return False
    fn = ORIGINALS.get('mmengine.dist.utils._init_dist_pytorch', dist_utils._init_dist_pytorch)
    try:
        return 'cuda.set_device' in inspect.getsource(fn)
    except (OSError, TypeError):
        return False


def _patch_cpu_distributed() -> bool:
    if not cpu_distributed_needed():
        return False
    import mmengine.dist.utils as dist_utils
    original = dist_utils._init_dist_pytorch
    ORIGINALS.setdefault('mmengine.dist.utils._init_dist_pytorch', original)

    def init_dist_pytorch(backend: str, init_backend: str = 'torch', **kwargs) -> None:
        if torch.cuda.is_available() or init_backend != 'torch' or \
                dist_utils.is_mlu_available() or dist_utils.is_npu_available() or \
                dist_utils.is_musa_available():
            return original(backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            raise RuntimeError('distributed training without a GPU needs the gloo backend, not '
                               "nccl: set env_cfg.dist_cfg.backend='gloo'")
        torch.distributed.init_process_group(backend=backend, **kwargs)

    dist_utils._init_dist_pytorch = init_dist_pytorch
    _log_once('cpu_distributed', "no CUDA device: mmengine's launcher would select one")
    return True


# ------------------------------------------------------------------------------ cityscapes_in1d
def in1d(ar1, ar2, assume_unique: bool = False, invert: bool = False, *, kind=None):
    """numpy's removed ``in1d``: membership of each element of flattened ``ar1`` in ``ar2``."""
    import numpy as np
    return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique, invert=invert,
                   kind=kind)


class NumpyWithIn1d(types.ModuleType):
    """numpy's namespace plus :func:`in1d`, for one caller module's ``np`` global."""

    def __init__(self, numpy_module: types.ModuleType) -> None:
        super().__init__('numpy')
        self._numpy = numpy_module
        self.in1d = in1d

    def __getattr__(self, name: str):
        return getattr(self._numpy, name)


def _give_in1d(module: types.ModuleType) -> None:
    import numpy as np
    if getattr(module, 'np', None) is np:
        module.np = NumpyWithIn1d(np)


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``sys.meta_path`` hook: runs ``fn(module)`` right after one of ``names`` is executed."""

    def __init__(self, names, fn: Callable[[types.ModuleType], None]) -> None:
        self.names, self.fn, self._loaders = set(names), fn, {}

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in self.names:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        self._loaders[fullname] = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loaders[spec.name].create_module(spec)

    def exec_module(self, module) -> None:
        loader = self._loaders.pop(module.__spec__.name)
        module.__spec__.loader = module.__loader__ = loader
        loader.exec_module(module)
        self.fn(module)


def _patch_cityscapes_in1d() -> bool:
    import numpy as np
    if hasattr(np, 'in1d'):
        return False
    for name in IN1D_CALLERS:
        if name in sys.modules:
            _give_in1d(sys.modules[name])
    sys.meta_path.insert(0, _AfterImport(IN1D_CALLERS, _give_in1d))
    _log_once('cityscapes_in1d', f'numpy {np.__version__} has no in1d; given to '
              f'{", ".join(IN1D_CALLERS)} only')
    return True


def _onecycle_state_has_callable() -> bool:
    from mmengine.optim.scheduler.param_scheduler import OneCycleParamScheduler
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = OneCycleParamScheduler(opt, 'lr', eta_max=0.1, total_steps=2)
    return any(callable(v) for v in sched.state_dict().values())


def _patch_onecycle_state() -> bool:
    if not _onecycle_state_has_callable():
        return False
    from mmengine.optim.scheduler.param_scheduler import OneCycleParamScheduler
    original = OneCycleParamScheduler.state_dict
    ORIGINALS['mmengine.optim.OneCycleParamScheduler.state_dict'] = original

    def state_dict(self) -> dict:
        return {k: v for k, v in original(self).items() if k != 'anneal_func'}

    OneCycleParamScheduler.state_dict = state_dict
    _log_once('onecycle_state', 'OneCycleParamScheduler.state_dict() held its annealing method '
              '(a pickled scheduler in every checkpoint); it is left out (rebuilt by __init__)')
    return True


_PATCHES: Dict[str, Callable[[], bool]] = {
    'cpu_distributed': _patch_cpu_distributed,
    'cityscapes_in1d': _patch_cityscapes_in1d,
    'onecycle_state': _patch_onecycle_state,
}
_probed: List[str] = []


def apply_all() -> List[str]:
    """Probe every patch once and apply those whose target is broken; return the names of the
    patches in force. Also routes mmengine's checkpoint loading through the safe loader."""
    from mmattn.utils.checkpoint import use_safe_loader
    use_safe_loader()
    for name, patch in _PATCHES.items():
        if name not in _probed:
            _probed.append(name)
            if patch():
                APPLIED.append(name)
    return list(APPLIED)
