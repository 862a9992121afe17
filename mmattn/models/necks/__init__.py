"""mmattn necks (BEV networks)."""
from .ded import CascadeDEDBackbone, DEDModule

__all__ = ['CascadeDEDBackbone', 'DEDModule']
