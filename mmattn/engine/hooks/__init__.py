"""mmattn hooks, registered in ``mmattn.registry.HOOKS``."""
from .prepbn_hook import PRepBNHook
from .rng_state import RNGStateHook
from .visualization import BEVVisualizationHook, PNGDetVisualizationHook

__all__ = ['BEVVisualizationHook', 'PNGDetVisualizationHook', 'PRepBNHook', 'RNGStateHook']
