"""mmattn hooks, registered in ``mmattn.registry.HOOKS``."""
from .prepbn_hook import PRepBNHook
from .visualization import BEVVisualizationHook, PNGDetVisualizationHook

__all__ = ['BEVVisualizationHook', 'PNGDetVisualizationHook', 'PRepBNHook']
