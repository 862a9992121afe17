"""mmattn: attention-paper models for OpenMMLab (mmdet 3.x, mmseg 1.x, mmdet3d 1.x)."""
import mmcv
import mmengine
from mmengine.utils import digit_version

from .utils import compat
from .version import __version__

# (minimum inclusive, maximum exclusive) of each OpenMMLab package mmattn was tested with.
COMPATIBLE_VERSIONS = {
    'mmengine': ('0.10.7', '1.0.0'),
    'mmcv': ('2.0.0', '2.2.0'),
    'mmdet': ('3.3.0', '3.4.0'),
    'mmseg': ('1.2.2', '1.3.0'),
    'mmdet3d': ('1.4.0', '1.5.0'),
}


def _check_version(name: str, version: str) -> None:
    low, high = COMPATIBLE_VERSIONS[name]
    if not digit_version(low) <= digit_version(version) < digit_version(high):
        raise ImportError(f'{name}=={version} is used but incompatible with mmattn {__version__}: '
                          f'please install {name}>={low},<{high}.')


def check_optional_versions() -> None:
    """Check the versions of the installed task packages (mmdet, mmseg, mmdet3d), if present."""
    import importlib.metadata
    for module, dist in (('mmdet', 'mmdet'), ('mmseg', 'mmsegmentation'), ('mmdet3d', 'mmdet3d')):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        _check_version(module, version)


_check_version('mmengine', mmengine.__version__)
_check_version('mmcv', mmcv.__version__)
check_optional_versions()
compat.apply_all()

__all__ = ['__version__', 'COMPATIBLE_VERSIONS', 'check_optional_versions']
