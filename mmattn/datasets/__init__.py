"""mmattn datasets."""
from .waymo import WaymoDataset, WaymoInfoError

__all__ = ['WaymoDataset', 'WaymoInfoError']
