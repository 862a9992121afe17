"""Detectors assembled from mmattn parts, registered as ``mmattn.<ClassName>``."""
from .scatterformer import ScatterFormer  # noqa: F401
