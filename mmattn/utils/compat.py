"""Every compatibility patch mmattn's stack needs, in one place, applied once on ``import mmattn``.

mmengine 0.10.7 (the newest release) predates two changes in its dependencies; both are fixed on
mmengine's main branch but not released:

* ``checkpoint_weights_only`` -- torch >= 2.6 loads with ``weights_only=True`` by default, which
  rejects mmengine's own Runner checkpoints (``HistoryBuffer``, numpy arrays in ``message_hub``), so
  ``--resume`` and ``load_from`` fail. Local checkpoints are loaded with ``weights_only=False``
  again (they are the user's own files, exactly as with torch < 2.6).
* ``importlib_package_lookup`` -- mmengine finds installed OpenMMLab packages through
  ``pkg_resources``, which setuptools >= 82 no longer ships, and then ``_base_ = 'mmdet::...'``
  configs fail. The lookup is redone with ``importlib.metadata``. Also registers ``mmattn`` in
  ``MODULE2PACKAGE`` so ``mmattn::`` bases and Inferencer lookups work.

mmengine's PyTorch launcher calls ``torch.cuda.set_device`` unconditionally, so ``torchrun`` on a
machine without a GPU dies before the first iteration:

* ``cpu_distributed`` -- without an accelerator the process group (gloo) is initialised without
  selecting a CUDA device.

numpy 2.4 removed ``np.in1d``, which cityscapesscripts 2.3.0 (the newest release) still calls in
its pixel-accuracy and instance-level scores -- and mmseg's ``CityscapesMetric`` and mmdet's
Cityscapes instance metric switch both on:

* ``numpy_in1d`` -- ``np.in1d`` is provided again as ``np.isin`` on the flattened input (exactly
  what numpy's deprecation note says it was).

``apply_all()`` is idempotent; ``APPLIED`` lists the patches in force.
"""
import importlib
import importlib.metadata
import importlib.util
import os.path as osp
from typing import Callable, Dict, List, Optional

import torch

APPLIED: List[str] = []
#: The functions each patch replaced, by dotted name (tests call them to show the need).
ORIGINALS: Dict[str, Callable] = {}


def _module_of_distribution(name: str) -> Optional[str]:
    """The top-level module a distribution installs (``mmsegmentation`` -> ``mmseg``), or None."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    top = dist.read_text('top_level.txt')
    if top and top.split():
        return top.split()[0]
    # Wheels without top_level.txt (editable installs): the distribution name as a module.
    return name.replace('-', '_')


def is_installed(package: str) -> bool:
    """Whether ``package`` (a distribution or a module name) can be imported."""
    module = _module_of_distribution(package) or package
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None


def package2module(package: str) -> str:
    """The module name of an installed distribution, e.g. ``mmsegmentation`` -> ``mmseg``."""
    module = _module_of_distribution(package)
    if module is None:
        raise ValueError(f'can not infer the module name of {package}: it is not installed')
    return module


def get_installed_path(package: str) -> str:
    """The directory of an installed package, found by distribution or module name."""
    module = _module_of_distribution(package) or package
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ModuleNotFoundError(f'{package} is not installed')
    if spec.origin is None:
        raise RuntimeError(f'{package} is a namespace package, which is invalid for '
                           '`get_installed_path`')
    return osp.dirname(spec.origin)


def _patch_package_lookup() -> None:
    import mmengine.config.config as config_mod
    import mmengine.config.utils as config_utils
    import mmengine.utils as utils_mod
    import mmengine.utils.package_utils as package_utils

    for mod in (package_utils, utils_mod, config_mod):
        for name, fn in (('is_installed', is_installed), ('get_installed_path', get_installed_path),
                         ('package2module', package2module)):
            if hasattr(mod, name):
                ORIGINALS.setdefault(f'{mod.__name__}.{name}', getattr(mod, name))
                setattr(mod, name, fn)
    config_utils.MODULE2PACKAGE.setdefault('mmattn', 'mmattn')


def load_local_checkpoint(filename: str, map_location=None) -> dict:
    """mmengine's local checkpoint loader, with ``weights_only=False`` and a clear error."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    try:
        return torch.load(filename, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise RuntimeError(f'{filename} is not a readable PyTorch checkpoint: {e}') from e


def _patch_checkpoint_loader() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader
    ORIGINALS.setdefault('mmengine.runner.checkpoint.load_from_local',
                         CheckpointLoader._schemes[''])
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)


def _patch_cpu_distributed() -> None:
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


def _in1d(ar1, ar2, assume_unique: bool = False, invert: bool = False, *, kind=None):
    """numpy's removed ``in1d``: membership of each element of flattened ``ar1`` in ``ar2``."""
    import numpy as np
    return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique, invert=invert,
                   kind=kind)


def _patch_numpy_in1d() -> None:
    import numpy as np
    if not hasattr(np, 'in1d'):
        np.in1d = _in1d


_PATCHES: Dict[str, Callable[[], None]] = {
    'checkpoint_weights_only': _patch_checkpoint_loader,
    'importlib_package_lookup': _patch_package_lookup,
    'cpu_distributed': _patch_cpu_distributed,
    'numpy_in1d': _patch_numpy_in1d,
}


def apply_all() -> List[str]:
    """Apply every patch not applied yet; return the names of the patches in force."""
    for name, patch in _PATCHES.items():
        if name not in APPLIED:
            patch()
            APPLIED.append(name)
    return list(APPLIED)
