"""Cascaded DED (dense encoder-decoder) BEV network of HEDNet, as used by ScatterFormer.

`HEDNet: A Hierarchical Encoder-Decoder Network for 3D Object Detection in Point Clouds`,
Zhang et al., NeurIPS 2023; ScatterFormer (Waymo) stacks 4 DED modules on the 128-channel
BEV map produced by ``HeightCompression``. Independent re-implementation on mmengine / mmdet bricks.

One DED module (all levels at the same width ``C``)::

    level 0 : num_sbb[0] x BasicBlock(C, C)                      (stride down_strides[0])
    level i : BasicBlock(C, C, stride=s_i, 1x1-conv+BN downsample) + num_sbb[i] x BasicBlock(C, C)
    decoder : for i = L-1 .. 1:  x = BN( ReLU(BN(ConvT(k=s_i, s=s_i)(x))) + skip_{i-1} )

The BasicBlock is mmdet's (conv3x3-BN-ReLU-conv3x3-BN-(+id)-ReLU, convs without bias); BN uses
eps 1e-3, momentum 0.01 and convs are kaiming_normal(fan_out) initialised.

Odd spatial sizes: a stride-2 3x3 conv (padding 1) maps ``H`` to ``ceil(H / 2)`` and the k2/s2
transposed conv maps that back to ``2 * ceil(H / 2)``; as every output pixel of a k=s transposed
conv depends on exactly one input pixel, cropping the up-sampled map to the skip's size gives the
exact result for the retained pixels (and is a no-op when ``H`` is divisible by the total stride).
"""
from typing import List, Sequence, Tuple, Union

import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.models.backbones.resnet import BasicBlock
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, kaiming_init
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mmattn.registry import MODELS

__all__ = ['DEDModule', 'CascadeDEDBackbone']

_DEFAULT_NORM = dict(type='BN', eps=1e-3, momentum=0.01)


def _strided_block(in_channels: int, out_channels: int, stride: int, conv_cfg,
                   norm_cfg) -> nn.Module:
    """BasicBlock with a 1x1 conv + BN shortcut (used when stride or width changes)."""
    downsample = nn.Sequential(
        build_conv_layer(conv_cfg, in_channels, out_channels, 1, stride=stride, bias=False),
        build_norm_layer(norm_cfg, out_channels)[1])
    return BasicBlock(
        in_channels, out_channels, stride=stride, downsample=downsample, conv_cfg=conv_cfg,
        norm_cfg=norm_cfg)


class DEDModule(BaseModule):
    """One dense encoder-decoder module (HEDNet's ``DEDBackbone``).

    Args:
        in_channels (int): Input channels; when different from ``channels`` (or when
            ``down_strides[0] != 1``) level 0 starts with a projecting/strided BasicBlock.
        channels (int): Width of every level.
        num_sbb (Sequence[int]): Extra BasicBlocks per level (level 0: all of its blocks).
        down_strides (Sequence[int]): Stride of each level relative to the previous one.
    """

    def __init__(self,
                 in_channels: int = 128,
                 channels: int = 128,
                 num_sbb: Sequence[int] = (2, 1, 1),
                 down_strides: Sequence[int] = (1, 2, 2),
                 conv_cfg=None,
                 norm_cfg=_DEFAULT_NORM,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        assert len(num_sbb) == len(down_strides) and len(num_sbb) >= 1
        self.down_strides = tuple(int(s) for s in down_strides)
        first = []
        if in_channels != channels or self.down_strides[0] != 1:
            first.append(
                _strided_block(in_channels, channels, self.down_strides[0], conv_cfg, norm_cfg))
        first += [BasicBlock(channels, channels, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
                  for _ in range(num_sbb[0])]
        self.layers = nn.ModuleList([nn.Sequential(*first)])
        for idx in range(1, len(num_sbb)):
            blocks = [
                _strided_block(channels, channels, self.down_strides[idx], conv_cfg, norm_cfg)]
            blocks += [BasicBlock(channels, channels, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
                       for _ in range(num_sbb[idx])]
            self.layers.append(nn.Sequential(*blocks))
        # decoder, deepest level first
        self.upsample_layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        for idx in range(len(num_sbb) - 1, 0, -1):
            s = self.down_strides[idx]
            self.upsample_layers.append(nn.Sequential(
                nn.ConvTranspose2d(channels, channels, s, stride=s, bias=False),
                build_norm_layer(norm_cfg, channels)[1],
                nn.ReLU(inplace=True)))
            self.norms.append(build_norm_layer(norm_cfg, channels)[1])

    def forward(self, x: Tensor) -> Tensor:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        x = feats[-1]
        for up, norm, skip in zip(self.upsample_layers, self.norms, feats[-2::-1]):
            y = up(x)[..., :skip.shape[-2], :skip.shape[-1]]
            x = norm(y + skip)
        return x


@MODELS.register_module()
class CascadeDEDBackbone(BaseModule):
    """``num_layers`` DED modules in sequence (HEDNet / ScatterFormer BEV backbone).

    Input: a ``[B, C, H, W]`` tensor or a list/tuple holding one. Output: a 1-tuple with the
    ``[B, out_channels, H, W]`` map (stride unchanged for ``down_strides[0] == 1``).
    """

    def __init__(self,
                 in_channels: int = 128,
                 num_layers: int = 4,
                 num_sbb: Sequence[int] = (2, 1, 1),
                 down_strides: Sequence[int] = (1, 2, 2),
                 out_channels: int = 128,
                 conv_cfg=None,
                 norm_cfg=_DEFAULT_NORM,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.layers = nn.ModuleList([
            DEDModule(in_channels if i == 0 else out_channels, out_channels, num_sbb, down_strides,
                      conv_cfg=conv_cfg, norm_cfg=norm_cfg)
            for i in range(num_layers)])

    def init_weights(self):
        """kaiming_normal(fan_out) convs and unit BN, unless ``init_cfg`` (e.g. Pretrained)."""
        if self.init_cfg is None:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):  # ConvTranspose2d keeps PyTorch's default init
                    kaiming_init(m, mode='fan_out', nonlinearity='relu', distribution='normal')
                elif isinstance(m, _BatchNorm):
                    constant_init(m, 1, bias=0)
        super().init_weights()

    def forward(self, x: Union[Tensor, List[Tensor], Tuple[Tensor]]) -> Tuple[Tensor]:
        if isinstance(x, (list, tuple)):
            assert len(x) == 1, f'{type(self).__name__} takes a single BEV map, got {len(x)}'
            x = x[0]
        for layer in self.layers:
            x = layer(x)
        return (x, )
