"""Detectors assembled from mmattn parts, registered as ``mmattn.<ClassName>``; each imported on
first use (they build on mmdet3d; see :mod:`mmattn.models._lazy`)."""
from .._lazy import lazy_getattr

LAZY = {'ScatterFormer': '.scatterformer'}
__getattr__ = lazy_getattr(__name__, LAZY)
__all__ = [*LAZY]
