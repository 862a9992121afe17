"""mmattn dense / decode heads, each imported on first use (they build on mmdet3d / mmseg heads;
see :mod:`mmattn.models._lazy`)."""
from .._lazy import lazy_getattr

LAZY = {'CenterHeadIoU': '.scatterformer_head', 'BEVANetHead': '.bevanet_head',
        'PixelMeanCrossEntropyLoss': '.bevanet_head', 'BVRRetinaHead': '.bvr',
        'BVRFCOSHead': '.bvr', 'BVRATSSHead': '.bvr'}
__getattr__ = lazy_getattr(__name__, LAZY)
__all__ = [*LAZY]
