"""mmattn models. Importing this package registers every model in the ``mmattn`` scope: those
that need only torch / mmcv / timm at once, those built on mmdet / mmseg / mmdet3d lazily (their
module is imported when a config or ``MODELS.build`` first names them), so e.g. a PoolFormer in
mmseg needs neither mmdet nor mmdet3d.
"""
from . import backbones, detectors, heads, necks
from ._lazy import register_lazy

for _pkg in (backbones, necks, heads, detectors):
    register_lazy(_pkg.__name__, _pkg.LAZY)

__all__ = [*backbones.__all__, *necks.__all__, *heads.__all__, *detectors.__all__]


def __getattr__(name: str):
    for pkg in (backbones, necks, heads, detectors):
        if name in pkg.LAZY:
            return getattr(pkg, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
