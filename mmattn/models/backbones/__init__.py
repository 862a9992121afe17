"""Backbones, one file per model family. Each is registered as ``mmattn.<ClassName>``."""
__all__: list = []
from .swin_family import AgentSwinTransformer, SLABSwinTransformer  # noqa: F401
from .biformer import BiFormer  # noqa: F401
from .poolformer import PoolFormer  # noqa: F401
from .scatterformer import ScatterFormerBackbone  # noqa: F401
