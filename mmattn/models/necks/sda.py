"""Selective dense attention (SDA) with dependency refinement, SDANet's neck after the FPN.

`Towards Real-World Prohibited Item Detection: A Large-Scale X-ray Benchmark`, Wang et al.,
ICCV 2021 (SDANet). Independent re-implementation of the official ``selective_attention`` modules
(``CascadeRCNN.enhance_feature`` of bywang2018/security-dataset) as an mmdet 3.x neck that follows
any FPN: ``neck=[dict(type='FPN', ...), dict(type='mmattn.SDANeck')]``.

For each level ``r`` one :class:`SelectiveDenseAttention` module:

1. gathers all levels to level ``r``'s size: finer levels by adaptive max pooling, coarser ones
   (and ``r`` itself) by nearest interpolation -> ``F`` (N, L, C, H_r, W_r);
2. selective channel attention: ``U = sum_i F_i``; ``z = ReLU(BN(conv1x1(GAP(U))))``; one 1x1
   conv per level gives ``a_i`` (N, C, 1, 1); softmax over the L levels; ``F_C = sum_i a_i F_i``;
3. selective spatial attention: ``m = [mean_c(U), max_c(U)]``; one 7x7 conv (2 -> 1) per level
   gives ``b_i`` (N, 1, H, W); softmax over the levels; ``F_S = sum_i b_i F_i``;
4. dependency refinement: mmcv's GCNet ``ContextBlock(C, 1/16)`` on ``F_C + F_S`` (the official
   ``mmdet.ops.ContextBlock``: same layers, LayerNorm over [C/16, 1, 1], conv_mask kaiming fan_in,
   last conv zero, so it is the identity at initialisation);
5. residual: ``out_r = refined + P_r``.

The only BatchNorm sits on the pooled (N, 128, 1, 1) descriptor, so training needs at least two
images per device (or SyncBN via ``norm_cfg``), as in the official config (2 images per GPU).
"""
import re
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks.context_block import ContextBlock
from mmengine.dist import get_world_size
from mmengine.model import BaseModule
from torch import Tensor

from mmattn.registry import MODELS
from mmattn.utils.checkpoint import (CheckpointError, CheckpointFamily, _is_pretrained,
                                     load_checkpoint, read_checkpoint, unwrap_state_dict)

__all__ = ['SelectiveChannelAttention', 'SelectiveSpatialAttention', 'SelectiveDenseAttention',
           'SDANeck', 'convert_sda_official', 'load_sda_pretrained', 'sda_filter_fn']


class SelectiveChannelAttention(nn.Module):
    """SKNet-style selection of ``num_levels`` maps per channel (official ``channel_attention``).

    Args:
        channels: C of every level.
        num_levels: L, the number of gathered maps.
        reduction_channels: width of the squeezed descriptor (official 128).
        norm_cfg: norm after the squeeze conv (official BN).
    """

    def __init__(self, channels: int = 256, num_levels: int = 5, reduction_channels: int = 128,
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.squeeze = ConvModule(channels, reduction_channels, 1, bias=False, norm_cfg=norm_cfg,
                                  act_cfg=dict(type='ReLU'))
        self.squeeze.conv.reset_parameters()  # official: PyTorch's default, not ConvModule's
        self.fcs = nn.ModuleList(
            nn.Conv2d(reduction_channels, channels, 1) for _ in range(num_levels))

    def forward(self, feats: Tensor) -> Tensor:
        """(N, L, C, H, W) -> attention weights (N, L, C, 1, 1), softmax over L."""
        z = self.squeeze(feats.sum(dim=1).mean(dim=(2, 3), keepdim=True))
        return torch.stack([fc(z) for fc in self.fcs], dim=1).softmax(dim=1)


class SelectiveSpatialAttention(nn.Module):
    """Per-pixel selection of ``num_levels`` maps (official ``spatial_attention``).

    Args:
        num_levels: L, the number of gathered maps.
        kernel_size: of the 2 -> 1 convs (official 7, padding 3).
    """

    def __init__(self, num_levels: int = 5, kernel_size: int = 7) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
            for _ in range(num_levels))

    def forward(self, feats: Tensor) -> Tensor:
        """(N, L, C, H, W) -> attention weights (N, L, 1, H, W), softmax over L."""
        u = feats.sum(dim=1)
        m = torch.cat([u.mean(dim=1, keepdim=True), u.amax(dim=1, keepdim=True)], dim=1)
        return torch.cat([conv(m) for conv in self.convs], dim=1).softmax(dim=1).unsqueeze(2)


class SelectiveDenseAttention(nn.Module):
    """SDA + dependency refinement of one target level (official ``selective_attention``).

    Args:
        level: index of the refined level in the input sequence.
        channels, num_levels, reduction_channels, norm_cfg: see :class:`SDANeck`.
        spatial_kernel: kernel of the spatial attention convs.
        context_ratio: bottleneck ratio of the ContextBlock (official 1/16).
    """

    def __init__(self, level: int, channels: int = 256, num_levels: int = 5,
                 reduction_channels: int = 128, spatial_kernel: int = 7,
                 context_ratio: float = 1. / 16, norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        self.level = level
        self.channel_att = SelectiveChannelAttention(channels, num_levels, reduction_channels,
                                                     norm_cfg)
        self.spatial_att = SelectiveSpatialAttention(num_levels, spatial_kernel)
        self.refine = ContextBlock(channels, context_ratio)

    def gather(self, inputs: Sequence[Tensor]) -> Tensor:
        """All levels at this level's size: (N, L, C, H_r, W_r)."""
        size = inputs[self.level].shape[2:]
        return torch.stack([
            F.adaptive_max_pool2d(x, size) if i < self.level else
            F.interpolate(x, size=size, mode='nearest') for i, x in enumerate(inputs)], dim=1)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """L maps (N, C, H_i, W_i) -> the refined level (N, C, H_r, W_r)."""
        feats = self.gather(inputs)
        fused = (feats * self.channel_att(feats)).sum(dim=1) + \
            (feats * self.spatial_att(feats)).sum(dim=1)
        # the official residual adaptive_max_pool2d to the same size is the identity
        return self.refine(fused) + inputs[self.level]


@MODELS.register_module()
class SDANeck(BaseModule):
    """SDANet's selective dense attention over all FPN levels; put it after an FPN.

    Args:
        in_channels: channels of every input level (official 256).
        num_levels: number of input levels, each refined by its own module (official 5).
        reduction_channels: channel-attention squeeze width (official 128).
        spatial_kernel: spatial-attention kernel (official 7).
        context_ratio: ContextBlock bottleneck ratio (official 1/16).
        norm_cfg: norm of the channel-attention squeeze (official BN; SyncBN for 1 image / GPU).
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=PATH)`` loads the
            ``selective_attention_{i}.*`` modules of an official SDANet detector checkpoint (the
            rest of the file is ignored) or an mmattn checkpoint of this neck or of a converted
            detector (its ``neck.1.`` found; :func:`load_sda_pretrained`).

    Forward: a sequence of ``num_levels`` maps (N, in_channels, H_i, W_i) -> tuple of the same
    shapes.
    """

    def __init__(self, in_channels: int = 256, num_levels: int = 5, reduction_channels: int = 128,
                 spatial_kernel: int = 7, context_ratio: float = 1. / 16,
                 norm_cfg: dict = dict(type='BN'), init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.in_channels = in_channels
        self.num_levels = num_levels
        self.attentions = nn.ModuleList(
            SelectiveDenseAttention(i, in_channels, num_levels, reduction_channels,
                                    spatial_kernel, context_ratio, norm_cfg)
            for i in range(num_levels))

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """``num_levels`` maps (N, C, H_i, W_i) (FPN outputs) -> the refined maps, same shapes."""
        if len(inputs) != self.num_levels:
            raise ValueError(f'SDANeck(num_levels={self.num_levels}) got {len(inputs)} levels')
        for i, x in enumerate(inputs):
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(f'SDANeck(in_channels={self.in_channels}): level {i} has shape '
                                 f'{tuple(x.shape)}, expected (N, {self.in_channels}, H, W)')
        self._check_batch(inputs[0])
        if inputs[0].shape[0] == 0:
            return tuple(inputs)
        return tuple(att(inputs) for att in self.attentions)

    def _check_batch(self, x: Tensor) -> None:
        bn = self.attentions[0].channel_att.squeeze.norm
        if not (self.training and bn.training and x.shape[0] == 1):
            return
        if isinstance(bn, nn.SyncBatchNorm) and get_world_size() > 1:
            return
        raise ValueError('SDANeck: training with 1 image per device: the channel attention '
                         f'BatchNorm normalises a pooled (N, {bn.num_features}, 1, 1) descriptor '
                         'over the batch '
                         'and needs batch size >= 2 per device (official: 2 images / GPU), or '
                         "SyncBN across devices (norm_cfg=dict(type='SyncBN'))")

    def init_weights(self) -> None:
        """Official init (PyTorch defaults, ContextBlock's own), then a ``Pretrained`` checkpoint
        through :func:`mmattn.utils.checkpoint.load_checkpoint` (family ``'sdanet'``)."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else (
            [self.init_cfg] if self.init_cfg else [])
        pretrained = [c for c in cfgs if _is_pretrained(c)]
        others = [c for c in cfgs if not _is_pretrained(c)]
        if others:
            self.init_cfg, saved = others, self.init_cfg
            super().init_weights()
            self.init_cfg = saved
        if len(pretrained) > 1:
            raise CheckpointError(f'SDANeck takes one Pretrained init_cfg, got {pretrained}')
        for cfg in pretrained:
            if 'checkpoint' not in cfg:
                raise CheckpointError(f'SDANeck: Pretrained init_cfg needs `checkpoint`, got {cfg}')
            load_sda_pretrained(self, cfg['checkpoint'], cfg.get('prefix'),
                                cfg.get('map_location', 'cpu'))
        self._is_init = True


# ------------------------------------------------------------------------------- official keys
OFFICIAL_STEM = 'selective_attention_0.channel_att.fc.0.weight'
_OFFICIAL_MODULE = re.compile(r'^selective_attention_(\d+)\.(.+)$')
#: official key inside one module -> ours (the rest is the same: fcs.i, refine.*)
_RENAMES = (('channel_att.fc.0.', 'channel_att.squeeze.conv.'),
            ('channel_att.fc.1.', 'channel_att.squeeze.bn.'),
            ('spatial_att.conv.', 'spatial_att.convs.'))


MMATTN_STEM = 'attentions.0.channel_att.squeeze.conv.weight'


def load_sda_pretrained(neck: nn.Module, filename: str, prefix: Optional[str] = None,
                        map_location='cpu') -> None:
    """Load ``neck`` from an official SDANet detector checkpoint (top-level
    ``selective_attention_{i}.*``) or an mmattn one: a neck file (``attentions.*``) or a converted
    detector (found under ``neck.1.`` or any other prefix when ``prefix`` is not given)."""
    try:
        load_checkpoint(neck, filename, 'sdanet', prefix=prefix, map_location=map_location)
        return
    except CheckpointError as e:
        if prefix is not None or 'holds no sdanet weights' not in str(e):
            raise
        keys = unwrap_state_dict(read_checkpoint(filename, map_location), filename)
        found = sorted(k[:-len(MMATTN_STEM)] for k in keys if k.endswith(MMATTN_STEM))
        if len(found) != 1:
            raise CheckpointError(f'{e}; nor mmattn SDANeck keys (*{MMATTN_STEM}): found under '
                                  f'{found or "no prefix"}') from None
    if found[0]:
        load_checkpoint(neck, filename, 'sdanet', prefix=found[0], map_location=map_location)
    else:
        family = CheckpointFamily('sdanet', sda_filter_fn, MMATTN_STEM)
        load_checkpoint(neck, filename, family, map_location=map_location)


def convert_sda_official(state_dict: Dict[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """``selective_attention_{i}.*`` keys of an official SDANet detector -> :class:`SDANeck` keys
    (``attentions.{i}.*``); every other key is left out."""
    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    for key, value in state_dict.items():
        m = _OFFICIAL_MODULE.match(key)
        if m is None:
            continue
        rest = m.group(2)
        for old, new in _RENAMES:
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        out[f'attentions.{m.group(1)}.{rest}'] = value
    return out


def sda_filter_fn(state_dict: Dict[str, Tensor], prefix: str = '',
                  model: Optional[nn.Module] = None) -> 'OrderedDict[str, Tensor]':
    """Checkpoint-family filter: the SDANeck state_dict in ``state_dict`` under ``prefix``, from
    the official layout (top-level ``selective_attention_{i}.*``) or mmattn's (``attentions.*``,
    e.g. ``prefix='neck.1.'`` of a converted detector)."""
    inside = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if any(k.startswith('attentions.') for k in inside):
        return OrderedDict((k, v) for k, v in inside.items() if k.startswith('attentions.'))
    return convert_sda_official(inside)


def _neck_from_state_dict(state_dict: Dict[str, Tensor]) -> SDANeck:
    levels = {int(k.split('.')[1]) for k in state_dict if k.startswith('attentions.')}
    w = state_dict.get('attentions.0.channel_att.squeeze.conv.weight')
    if w is None:
        raise KeyError('no attentions.0.channel_att.squeeze.conv.weight')
    return SDANeck(in_channels=w.shape[1], num_levels=len(levels), reduction_channels=w.shape[0])


def _register() -> None:
    from mmattn.utils.checkpoint import register_family
    register_family('sdanet', sda_filter_fn, OFFICIAL_STEM,
                    model_from_state_dict=_neck_from_state_dict)


_register()
