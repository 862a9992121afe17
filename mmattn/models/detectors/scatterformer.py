"""ScatterFormer detector: points -> :class:`~mmattn.ScatterFormerBackbone` (BEV map) ->
BEV backbone (``neck``, e.g. ``mmattn.CascadeDEDBackbone``) -> CenterPoint-style head."""
from typing import Dict, List, Tuple

from mmdet3d.models.detectors.single_stage import SingleStage3DDetector
from torch import Tensor

from mmattn.registry import MODELS

__all__ = ['ScatterFormer']


@MODELS.register_module()
class ScatterFormer(SingleStage3DDetector):
    """Single-stage LiDAR detector on raw point lists (no voxel pre-processing in the data
    preprocessor: the backbone voxelises dynamically).

    ``batch_inputs_dict['points']``: list of ``[Np_b, F]`` tensors (F >= the backbone's
    ``in_channels``). The head receives a tuple with one ``[B, C, H, W]`` BEV map.
    """

    def extract_feat(self, batch_inputs_dict: Dict[str, List[Tensor]]) -> Tuple[Tensor, ...]:
        points = batch_inputs_dict.get('points')
        if points is None:
            raise KeyError("ScatterFormer: batch_inputs_dict has no 'points'")
        x = (self.backbone(points), )
        if self.with_neck:
            x = self.neck(x)
        return tuple(x) if isinstance(x, (list, tuple)) else (x, )
