"""mmattn hooks, registered in ``mmattn.registry.HOOKS``."""
from .prepbn_hook import PRepBNHook
from .visualization import PNGDetVisualizationHook

__all__ = ['PNGDetVisualizationHook', 'PRepBNHook']
