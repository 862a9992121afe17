"""mmattn datasets; each is imported when its task package is installed (Waymo: mmdet3d, the
`3d` extra; PIDray: mmdet, the `det` extra; CamVid: mmseg, the `seg` extra), so one extra alone
can use its dataset."""
from importlib.util import find_spec

__all__ = []
if find_spec('mmdet3d') is not None:
    from .waymo import WaymoDataset, WaymoInfoError
    __all__ += ['WaymoDataset', 'WaymoInfoError']
if find_spec('mmdet') is not None:
    from .pidray import PIDrayAnnotationError, PIDrayDataset, PIDrayEvaluator
    __all__ += ['PIDrayAnnotationError', 'PIDrayDataset', 'PIDrayEvaluator']
if find_spec('mmseg') is not None:
    from .camvid import CamVidDataset, LoadCamVidAnnotations
    __all__ += ['CamVidDataset', 'LoadCamVidAnnotations']
