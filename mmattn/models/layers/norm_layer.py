"""``build_norm_layer``: mmcv's when mmcv is installed, else a torch-only stand-in.

The stand-in covers the norm types mmattn's backbones build from a ``norm_cfg`` (``BN`` / ``BN1d``
/ ``BN2d`` / ``BN3d``, ``SyncBN``, ``GN``, ``LN``, ``IN`` / ``IN1d`` / ``IN2d`` / ``IN3d``), with
mmcv's signature, layer names and ``requires_grad`` handling, so that a backbone imports and
builds with mmengine alone (the GPU verification kit, ``tools/gpu_check.py``).
"""
from typing import Tuple, Union

import torch.nn as nn

__all__ = ['build_norm_layer']

_TORCH_NORMS = {
    'BN': ('bn', nn.BatchNorm2d), 'BN1d': ('bn', nn.BatchNorm1d), 'BN2d': ('bn', nn.BatchNorm2d),
    'BN3d': ('bn', nn.BatchNorm3d), 'SyncBN': ('bn', nn.SyncBatchNorm),
    'GN': ('gn', nn.GroupNorm), 'LN': ('ln', nn.LayerNorm), 'IN': ('in', nn.InstanceNorm2d),
    'IN1d': ('in', nn.InstanceNorm1d), 'IN2d': ('in', nn.InstanceNorm2d),
    'IN3d': ('in', nn.InstanceNorm3d)}


def _torch_build_norm_layer(cfg: dict, num_features: int,
                            postfix: Union[int, str] = '') -> Tuple[str, nn.Module]:
    """``(name, layer)`` of the norm ``cfg`` (``dict(type=..., requires_grad=..., **kwargs)``)."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'build_norm_layer: cfg must be a dict with a "type" key, got {cfg!r}')
    kwargs = dict(cfg)
    kind = kwargs.pop('type')
    if kind not in _TORCH_NORMS:
        raise KeyError(f'build_norm_layer: norm type {kind!r} needs mmcv (pip install mmcv); '
                       f'without it: {sorted(_TORCH_NORMS)}')
    abbr, cls = _TORCH_NORMS[kind]
    requires_grad = kwargs.pop('requires_grad', True)
    kwargs.setdefault('eps', 1e-5)
    if kind == 'GN':
        if 'num_groups' not in kwargs:
            raise KeyError('build_norm_layer: GN needs num_groups in the norm cfg')
        layer = cls(num_channels=num_features, **kwargs)
    else:
        layer = cls(num_features, **kwargs)
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return abbr + str(postfix), layer


try:
    from mmcv.cnn import build_norm_layer
except ModuleNotFoundError as err:  # mmcv absent (mmengine-only machine): torch's norms
    if err.name is None or err.name.split('.')[0] != 'mmcv':
        raise
    build_norm_layer = _torch_build_norm_layer
