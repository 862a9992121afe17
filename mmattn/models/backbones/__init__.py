"""Backbones, one file per model family. Each is registered as ``mmattn.<ClassName>``.

Backbones that need only torch / mmcv / timm are imported here; those built on a task package
(mmseg for BEVANet) are in ``LAZY``, imported on first use (see :mod:`mmattn.models._lazy`).
"""
from .._lazy import lazy_getattr
from .biformer import BiFormer
from .poolformer import PoolFormer
from .scatterformer import DynamicPFNVFE, ScatterFormerBackbone, ScatterFormerMiddleEncoder
from .swin_family import AgentSwinTransformer, SLABSwinTransformer

LAZY = {'BEVANet': '.bevanet'}
__getattr__ = lazy_getattr(__name__, LAZY)
__all__ = ['AgentSwinTransformer', 'BiFormer', 'PoolFormer', 'SLABSwinTransformer',
           'DynamicPFNVFE', 'ScatterFormerBackbone', 'ScatterFormerMiddleEncoder', *LAZY]
