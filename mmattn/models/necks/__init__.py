"""mmattn necks (BEV networks), each imported on first use (they build on mmdet blocks; see
:mod:`mmattn.models._lazy`)."""
from .._lazy import lazy_getattr

LAZY = {'CascadeDEDBackbone': '.ded', 'SDANeck': '.sda'}
__getattr__ = lazy_getattr(__name__, LAZY)
__all__ = [*LAZY]
