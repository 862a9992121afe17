"""mmattn dense heads."""
from .scatterformer_head import CenterHeadIoU

__all__ = ['CenterHeadIoU']
