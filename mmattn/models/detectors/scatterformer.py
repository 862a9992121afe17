"""ScatterFormer detector in mmdet3d's slots (a ``DynamicVoxelNet``)::

    data_preprocessor  Det3DDataPreprocessor(voxel=True, voxel_type='dynamic')
    voxel_encoder      mmattn.DynamicPFNVFE             points -> voxel features
    middle_encoder     mmattn.ScatterFormerMiddleEncoder voxels -> sparse stem, SLA stages, BEV map
    backbone           mmattn.CascadeDEDBackbone        BEV -> BEV
    bbox_head          mmattn.CenterHeadIoU

Checkpoints saved with the earlier layout (points-in ``backbone``, DED as ``neck``) load through
:func:`~mmattn.models.backbones.scatterformer.scatterformer_filter_fn`, applied by a load hook.
"""
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from mmdet3d.models.detectors.dynamic_voxelnet import DynamicVoxelNet
from mmdet3d.structures.det3d_data_sample import SampleList
from torch import Tensor

from mmattn.models.backbones.scatterformer import scatterformer_filter_fn
from mmattn.registry import MODELS

__all__ = ['ScatterFormer']


def _map_old_keys(state_dict: dict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: rename keys of the earlier layout in place."""
    own = {k[len(prefix):]: k for k in state_dict if k.startswith(prefix)}
    mapped = scatterformer_filter_fn({k: state_dict[v] for k, v in own.items()}, '', None)
    if set(mapped) != set(own):
        for full in own.values():
            del state_dict[full]
        state_dict.update({prefix + k: v for k, v in mapped.items()})


@MODELS.register_module()
class ScatterFormer(DynamicVoxelNet):
    """Wires the slots; the batch size is the number of point clouds (so an empty last cloud
    still gets its BEV map), and points with NaN / inf values are dropped with a warning naming
    the sample."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._register_load_state_dict_pre_hook(_map_old_keys)

    def extract_feat(self, batch_inputs_dict: Dict[str, object]) -> Tuple[Tensor, ...]:
        voxel_dict = batch_inputs_dict.get('voxels')
        if voxel_dict is None:
            raise KeyError("ScatterFormer: batch_inputs_dict has no 'voxels'; use data_preprocessor"
                           "=dict(type='Det3DDataPreprocessor', voxel=True, voxel_type='dynamic', "
                           'voxel_layer=...)')
        batch_size = len(batch_inputs_dict['points'])
        voxel_features, coors = self.voxel_encoder(voxel_dict['voxels'], voxel_dict['coors'])
        x = self.backbone(self.middle_encoder(voxel_features, coors, batch_size))
        if self.with_neck:
            x = self.neck(x)
        return tuple(x) if isinstance(x, (list, tuple)) else (x, )

    @staticmethod
    def drop_non_finite(batch_inputs_dict: dict,
                        batch_data_samples: Optional[SampleList] = None) -> dict:
        """The inputs without the points that have a NaN / inf value (a warning per sample, named
        by its ``lidar_path`` when the data sample has one)."""
        voxel_dict = batch_inputs_dict.get('voxels')
        if voxel_dict is None:
            return batch_inputs_dict
        points, coors = voxel_dict['voxels'], voxel_dict['coors']
        finite = torch.isfinite(points).all(1)
        if bool(finite.all()):
            return batch_inputs_dict
        bad = torch.bincount(coors[~finite, 0].long(), minlength=len(batch_inputs_dict['points']))
        for b in bad.nonzero()[:, 0].tolist():
            meta = batch_data_samples[b].metainfo if batch_data_samples else {}
            name = meta.get('lidar_path', f'sample {b} of the batch')
            warnings.warn(f'{name}: {int(bad[b])} of {int((coors[:, 0] == b).sum())} points have '
                          'NaN / inf values; dropped')
        voxel_dict = dict(voxel_dict, voxels=points[finite], coors=coors[finite])
        return dict(batch_inputs_dict, voxels=voxel_dict)

    def loss(self, batch_inputs_dict: dict, batch_data_samples: SampleList, **kwargs):
        return super().loss(self.drop_non_finite(batch_inputs_dict, batch_data_samples),
                            batch_data_samples, **kwargs)

    def predict(self, batch_inputs_dict: dict, batch_data_samples: SampleList, **kwargs):
        return super().predict(self.drop_non_finite(batch_inputs_dict, batch_data_samples),
                               batch_data_samples, **kwargs)

    def _forward(self, batch_inputs_dict: dict, data_samples: Optional[SampleList] = None,
                 **kwargs) -> List[Tensor]:
        return super()._forward(self.drop_non_finite(batch_inputs_dict, data_samples),
                                data_samples, **kwargs)
