"""mmattn evaluation."""
from . import functional, metrics  # noqa: F401
from .metrics import WaymoMetric

__all__ = ['WaymoMetric']
