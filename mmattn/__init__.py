"""mmattn: attention-paper models for OpenMMLab (mmdet 3.x, mmseg 1.x, mmdet3d 1.x).

Importing ``mmattn`` (or ``mmattn.ops``) imports nothing of the OpenMMLab stack: the ops run with
torch (+ triton) alone. The OpenMMLab side runs when the stack itself is imported (one-shot import
hooks; at once for a module already imported when mmattn is):

* ``import mmengine``: the version check of the installed mmengine / mmcv / mmdet / mmseg /
  mmdet3d (:func:`check_optional_versions`);
* ``import mmengine.runner`` (the checkpoint loader, the launcher, the Runner): mmattn's
  compatibility patches and safe checkpoint loading (:func:`mmattn.utils.compat.apply_all`).

So ``import mmattn`` before a config is read or a Runner is built still patches the stack, while
a backbone built with mmengine alone (the GPU kit) does not pull in the Runner (and OpenCV).
"""
import importlib.abc
import importlib.metadata
import importlib.util
import sys
from typing import Callable

from .version import __version__

# (minimum inclusive, maximum exclusive) of each OpenMMLab package mmattn was tested with.
COMPATIBLE_VERSIONS = {
    'mmengine': ('0.10.7', '1.0.0'),
    'mmcv': ('2.0.0', '2.2.0'),
    'mmdet': ('3.3.0', '3.4.0'),
    'mmseg': ('1.2.2', '1.3.0'),
    'mmdet3d': ('1.4.0', '1.5.0'),
}
_DISTRIBUTIONS = {'mmengine': 'mmengine', 'mmcv': 'mmcv', 'mmdet': 'mmdet',
                  'mmseg': 'mmsegmentation', 'mmdet3d': 'mmdet3d'}
_versions_checked = False
_patched = False


def _check_version(name: str, version: str) -> None:
    from mmengine.utils import digit_version
    low, high = COMPATIBLE_VERSIONS[name]
    if not digit_version(low) <= digit_version(version) < digit_version(high):
        raise ImportError(f'{name}=={version} is used but incompatible with mmattn {__version__}: '
                          f'please install {name}>={low},<{high}.')


def check_optional_versions() -> None:
    """Check the versions of the installed OpenMMLab packages (each only if installed)."""
    for module, dist in _DISTRIBUTIONS.items():
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        _check_version(module, version)


def _after_mmengine() -> None:
    global _versions_checked
    if not _versions_checked:
        _versions_checked = True
        check_optional_versions()


def _after_mmengine_runner() -> None:
    global _patched
    if not _patched:
        _patched = True
        from .utils import compat
        compat.apply_all()


def setup_openmmlab() -> None:
    """Version check and compatibility patches of the OpenMMLab stack now (idempotent; imports
    mmengine.runner)."""
    import mmengine.runner  # noqa: F401  (runs both hooks if they have not run)
    _after_mmengine()
    _after_mmengine_runner()


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """One-shot ``sys.meta_path`` hook: calls ``callback()`` right after the module ``name`` has
    been executed by its own loader."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name, self.callback = name, callback
        self._loader = None

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != self.name:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # the other finders (this one is removed)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__spec__.loader = module.__loader__ = self._loader
        self._loader.exec_module(module)
        self.callback()


def _install_hooks() -> None:
    for name, callback in (('mmengine', _after_mmengine),
                           ('mmengine.runner', _after_mmengine_runner)):
        if name in sys.modules:
            callback()
        else:
            sys.meta_path.insert(0, _AfterImport(name, callback))


_install_hooks()

__all__ = ['__version__', 'COMPATIBLE_VERSIONS', 'check_optional_versions', 'setup_openmmlab']
