"""mmattn metrics (registered in ``mmattn.registry.METRICS``)."""
from .waymo_metric import WaymoMetric

__all__ = ['WaymoMetric']
