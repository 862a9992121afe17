"""BEVANet backbone for mmseg 1.x.

`BEVANet: Bilateral Efficient Visual Attention Network for Real-time Semantic Segmentation`,
ICIP 2025, https://arxiv.org/abs/2508.07300. Official code: https://github.com/maomao0819/BEVANet
(MIT); this is an independent re-implementation of its ``BEVANet_SEG`` (PIDNet skeleton with EVA
blocks, DLKPPM and BGAF), with the segmentation heads in ``mmattn.BEVANetHead``.

Layout (c = ``channels``): a stem to 1/8 (2c), a semantic branch (BasicBlocks to 1/16, then one
strided BasicBlock + two EVA blocks at 1/32 and at 1/64), a detail branch at 1/8 fused twice with
the semantic branch (PagFM), DLKPPM context on the 1/64 map and BGAF fusion of the detail (P),
context (I) and boundary (D) maps. The backbone returns, like mmseg's ``PIDNet``, the tuple
``(p_aux, fused, d_final)`` in training and ``fused`` in eval; ``forward_all`` always returns the
tuple. ``convert_bevanet_official`` (and the checkpoint-family filter ``bevanet_filter_fn`` built
on it) is the only code that knows the official key names; ``fold_conv_bn`` /
``BEVANet.switch_to_deploy`` give the deploy model.
"""
import re
import warnings
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.dist import get_world_size
from mmengine.model import BaseModule
from mmseg.models.backbones.pidnet import PagFM
from mmseg.models.utils import BasicBlock, Bottleneck
from timm.layers import DropPath, LayerNorm2d
from torch.nn.modules.batchnorm import _BatchNorm

from mmattn.registry import MODELS

__all__ = [
    'BEVANet', 'EVABlock', 'SDLSKA', 'CKS', 'LSKA', 'DLKPPM', 'BGAF', 'bevanet_filter_fn',
    'convert_bevanet_official', 'guess_bevanet_arch', 'bevanet_from_state_dict', 'fold_conv_bn',
    'load_bevanet_pretrained'
]

# kernel size k -> (small kernel s, strip length K, dilation d), s + (K - 1) * d = k
_STRIPS = {7: (3, 3, 2), 11: (3, 5, 2), 23: (5, 7, 3), 35: (5, 11, 3)}


def _strips(kernel_size: int) -> Tuple[int, int, int]:
    if kernel_size not in _STRIPS:
        raise ValueError(f'BEVANet: unsupported attention kernel size {kernel_size}; '
                         f'choose from {sorted(_STRIPS)}')
    return _STRIPS[kernel_size]


def _dw(dim: int, kernel: Tuple[int, int], dilation: int = 1) -> nn.Conv2d:
    pad = ((kernel[0] - 1) * dilation // 2, (kernel[1] - 1) * dilation // 2)
    return nn.Conv2d(dim, dim, kernel, padding=pad, dilation=dilation, groups=dim)


class CKS(nn.Module):
    """Comprehensive kernel selection of three attention maps, each (B, C, H, W).

    Channel weights sigmoid(ReLU(BN(DW3x3(1x1(...))))) from the pooled sum (a 3x3 depthwise conv on
    the 1x1 pooled map uses only its centre tap, kept as in the official layout); spatial weights
    sigmoid(7x7 conv([mean_c, max_c])). Output sum_j a_j * w_j * sigma_j.
    """

    def __init__(self, dim: int, norm_cfg: dict = dict(type='BN')):
        super().__init__()
        hidden = max(dim // 16, 32)

        def squeeze(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 1),
                ConvModule(cout, cout, 3, padding=1, groups=cout, bias=True, norm_cfg=norm_cfg,
                           act_cfg=dict(type='ReLU', inplace=True)))

        self.fc_reduce = squeeze(dim, hidden)
        self.fc_expand_small = squeeze(hidden, dim)
        self.fc_expand_big_h = squeeze(hidden, dim)
        self.fc_expand_big_v = squeeze(hidden, dim)
        self.conv_squeeze = nn.Conv2d(2, 3, 7, padding=3)

    def forward(self, a_s: torch.Tensor, a_h: torch.Tensor, a_v: torch.Tensor) -> torch.Tensor:
        attn = a_s + a_h + a_v
        z = self.fc_reduce(F.adaptive_avg_pool2d(attn, 1))
        w_s = torch.sigmoid(self.fc_expand_small(z))
        w_h = torch.sigmoid(self.fc_expand_big_h(z))
        w_v = torch.sigmoid(self.fc_expand_big_v(z))
        agg = torch.cat([attn.mean(1, keepdim=True), attn.amax(1, keepdim=True)], dim=1)
        sig_s, sig_h, sig_v = torch.sigmoid(self.conv_squeeze(agg)).chunk(3, dim=1)
        return a_s * w_s * sig_s + a_h * w_h * sig_h + a_v * w_v * sig_v


class SDLSKA(nn.Module):
    """Sparse decomposed large separable kernel attention: ``u * pw(CKS(a_s, a_h, a_v))``.

    a_s = DW s x s (u); a_h, a_v = dilated DW 1 x K / K x 1 strips of a_s, in parallel.
    (B, C, H, W).
    """

    def __init__(self, dim: int, kernel_size: int, norm_cfg: dict = dict(type='BN')):
        super().__init__()
        s, k, d = _strips(kernel_size)
        self.dw_conv = _dw(dim, (s, s))
        self.dw_d_conv_h = _dw(dim, (1, k), d)
        self.dw_d_conv_v = _dw(dim, (k, 1), d)
        self.pwconv = nn.Conv2d(dim, dim, 1)
        self.cks = CKS(dim, norm_cfg)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        a_s = self.dw_conv(u)
        attn = self.cks(a_s, self.dw_d_conv_h(a_s), self.dw_d_conv_v(a_s))
        return u * self.pwconv(attn)


class LSKA(nn.Module):
    """Large separable kernel attention (sequential 1 x s, s x 1, dilated 1 x K, K x 1, 1x1):
    ``u * attn``. (B, C, H, W)."""

    def __init__(self, dim: int, kernel_size: int, norm_cfg: Optional[dict] = None):
        super().__init__()
        s, k, d = _strips(kernel_size)
        self.dw_conv_h = _dw(dim, (1, s))
        self.dw_conv_v = _dw(dim, (s, 1))
        self.dw_d_conv_h = _dw(dim, (1, k), d)
        self.dw_d_conv_v = _dw(dim, (k, 1), d)
        self.pwconv = nn.Conv2d(dim, dim, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        attn = self.dw_d_conv_v(self.dw_d_conv_h(self.dw_conv_v(self.dw_conv_h(u))))
        return u * self.pwconv(attn)


class SpatialAttention(nn.Module):
    """``proj_2(gate(GELU(proj_1(z)))) + z`` with a large-kernel gate. (B, C, H, W)."""

    def __init__(self, dim: int, kernel_size: int, gate: type = SDLSKA,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = gate(dim, kernel_size, norm_cfg=norm_cfg)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(z)))) + z


class ConvFFN(nn.Module):
    """1x1 (C -> rC), depthwise 3x3, GELU, 1x1 (rC -> C). (B, C, H, W)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class EVABlock(BaseModule):
    """Efficient visual attention block:
    ``x += ls1 * Attn(BN(x))``, ``x += ls2 * FFN(BN(x))``. (B, C, H, W).

    Official init at construction: every conv ~ N(0, sqrt(2 / fan_out)), bias 0; layer scales 1e-2.
    """

    def __init__(self,
                 dim: int,
                 kernel_size: int = 35,
                 mlp_ratio: float = 4.,
                 drop_path: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 layer_scale_init_value: float = 1e-2):
        super().__init__()
        self.norm1 = build_norm_layer(norm_cfg, dim)[1]
        self.attn = SpatialAttention(dim, kernel_size, SDLSKA, norm_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = build_norm_layer(norm_cfg, dim)[1]
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.full((dim, ), layer_scale_init_value))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, ), layer_scale_init_value))
        self.official_init()

    def official_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, (2.0 / fan_out)**0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _BatchNorm):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


def _pre_conv(cin: int, cout: int, norm_cfg: dict, kernel_size: int = 1,
              dilation: int = 1) -> ConvModule:
    """BN - ReLU - conv (no bias)."""
    return ConvModule(cin, cout, kernel_size, padding=(kernel_size - 1) * dilation // 2,
                      dilation=dilation, bias=False, norm_cfg=norm_cfg,
                      act_cfg=dict(type='ReLU', inplace=True), order=('norm', 'act', 'conv'))


class DLKPPM(BaseModule):
    """Dilated large-kernel pyramid pooling: (B, in, h, w) -> (B, out, h, w).

    Branches s0 (1x1), s1 (avg 5/2), s2 (avg 9/4), L = s0 + ls * LSKA-attention(BN(s0)),
    s4 (adaptive 2x2), s5 (global), each BN-ReLU-1x1; chained y_k = P_k(up(s_k) + y_{k-1}) with
    dilated 3x3 processes for s1, s2; out = compression(cat y) + shortcut(x).
    """

    def __init__(self, in_channels: int, channels: int, out_channels: int,
                 norm_cfg: dict = dict(type='BN'), align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        self.scale0 = _pre_conv(in_channels, channels, norm_cfg)
        pools = {1: nn.AvgPool2d(5, 2, 2), 2: nn.AvgPool2d(9, 4, 4),
                 4: nn.AdaptiveAvgPool2d((2, 2)), 5: nn.AdaptiveAvgPool2d((1, 1))}
        for i, pool in pools.items():
            self.add_module(f'scale{i}',
                            nn.Sequential(pool, _pre_conv(in_channels, channels, norm_cfg)))
        self.bn = build_norm_layer(norm_cfg, channels)[1]
        self.lska = SpatialAttention(channels, 35, LSKA)
        self.layer_scale_lska = nn.Parameter(torch.full((channels, ), 1e-2))
        self.process1 = _pre_conv(channels, channels, norm_cfg, 3, dilation=2)
        self.process2 = _pre_conv(channels, channels, norm_cfg, 3, dilation=2)
        self.process_lska = _pre_conv(channels, channels, norm_cfg, 3)
        self.process4 = _pre_conv(channels, channels, norm_cfg, 3)
        self.process5 = _pre_conv(channels, channels, norm_cfg, 3)
        self.compression = _pre_conv(channels * 6, out_channels, norm_cfg)
        self.shortcut = _pre_conv(in_channels, out_channels, norm_cfg)

    def _up(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode='bilinear', align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        s0 = self.scale0(x)
        lka = s0 + self.layer_scale_lska[:, None, None] * self.lska(self.bn(s0))
        ys = [s0]
        ys.append(self.process1(self._up(self.scale1(x), size) + ys[-1]))
        ys.append(self.process2(self._up(self.scale2(x), size) + ys[-1]))
        ys.append(self.process_lska(lka + ys[-1]))
        ys.append(self.process4(self._up(self.scale4(x), size) + ys[-1]))
        ys.append(self.process5(self._up(self.scale5(x), size) + ys[-1]))
        return self.compression(torch.cat(ys, 1)) + self.shortcut(x)


class BGAF(BaseModule):
    """Boundary-guided attention fusion of P, I (B, C, H, W) under boundary map D (B, C, H, W):
    ``out(a * P' + (1 - a) * I' + P' + I')``, a = sigmoid(D), P' / I' / out = BN-ReLU-3x3."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.conv_p = _pre_conv(in_channels, out_channels, norm_cfg, 3)
        self.conv_i = _pre_conv(in_channels, out_channels, norm_cfg, 3)
        self.out = _pre_conv(out_channels, out_channels, norm_cfg, 3)

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        p, i = self.conv_p(p), self.conv_i(i)
        a = torch.sigmoid(d)
        return self.out(a * p + (1 - a) * i + (p + i))


def _is_pretrained(cfg: dict) -> bool:
    t = cfg.get('type')
    return getattr(t, '__name__', t) in ('Pretrained', 'PretrainedInit')


@MODELS.register_module()
class BEVANet(BaseModule):
    """BEVANet backbone (the official ``BEVANet_SEG`` without its three segment heads).

    Args:
        arch: 's', 'sw', 'base', 'l' (the official Cityscapes yaml variants) or a dict with
            ``channels`` (PLANES), ``ppm_channels`` (PPM_PLANES), ``num_blocks`` (the official
            NUM_BLOCKS; entries 0 (layer1 and layer3_detail), 1 (layer2) and 2 (layer3_semantic)
            are used) and optionally ``semantic_kernel_size`` (35), ``detail_kernel_size`` (23),
            ``mlp_ratio`` (4).
        in_channels: Input image channels.
        drop_path_rate: Stochastic depth of the EVA blocks, increasing linearly over the 5 blocks
            (official: 0).
        norm_cfg: Norm of every BatchNorm (official: BN, momentum 0.1, eps 1e-5, per GPU).
        align_corners: ``align_corners`` of the internal bilinear up-sampling (official False).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads an official ImageNet
            classifier (``BEVANet_CLS_32``, ``module.`` / ``state_dict`` wrappers handled): the
            keys the official fine-tuning loads (same name and shape), i.e. all but the stage-5
            EVA blocks, DLKPPM and BGAF, which keep the official init. ``prefix='model.'`` takes
            the backbone of an official fine-tuned ``.pt``, ``prefix='backbone.'`` that of a
            converted segmentor checkpoint. Another arch's file raises an error naming its arch.

    Input (B, in_channels, H, W), any H, W (BatchNorm on pooled maps: B >= 2 per device when
    training). Output: training ``(p_aux (B, 2c, H/8, W/8), fused (B, 4c, H/8, W/8),
    d (B, 2c, H/8, W/8))``, eval ``fused``.
    """

    arch_settings: Dict[str, dict] = {
        's': dict(channels=32, ppm_channels=96, num_blocks=[2, 2, 3, 3, 2]),
        'sw': dict(channels=64, ppm_channels=96, num_blocks=[2, 2, 3, 3, 2]),
        'base': dict(channels=64, ppm_channels=96, num_blocks=[2, 2, 4, 4, 2]),
        'l': dict(channels=64, ppm_channels=112, num_blocks=[3, 3, 4, 4, 2]),
    }
    # decode-head channels (HEAD_PLANES) of each official variant
    head_channels: Dict[str, int] = {'s': 128, 'sw': 128, 'base': 128, 'l': 256}
    _arch_keys = {'channels', 'ppm_channels', 'num_blocks', 'semantic_kernel_size',
                  'detail_kernel_size', 'mlp_ratio'}

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 in_channels: int = 3,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 align_corners: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        arch = self._parse_arch(arch)
        self.arch = arch
        c, n = arch['channels'], arch['num_blocks']
        ks, kd = arch.get('semantic_kernel_size', 35), arch.get('detail_kernel_size', 23)
        r = arch.get('mlp_ratio', 4)
        self.channels = c
        self.norm_cfg = norm_cfg
        self.align_corners = align_corners
        dpr = [drop_path_rate * i / 4 for i in range(5)]

        def eva(dim: int, k: int, i: int) -> EVABlock:
            return EVABlock(dim, k, r, dpr[i], norm_cfg)

        relu = dict(type='ReLU', inplace=True)
        with warnings.catch_warnings():  # the official stem convs have a bias before their BN
            warnings.filterwarnings('ignore', 'Unnecessary conv bias')
            self.conv1 = nn.Sequential(
                ConvModule(in_channels, c, 3, 2, 1, bias=True, norm_cfg=norm_cfg, act_cfg=relu),
                ConvModule(c, c, 3, 2, 1, bias=True, norm_cfg=norm_cfg, act_cfg=relu))
            self.relu = nn.ReLU()
            self.layer1 = self._make_layer(BasicBlock, c, c, n[0])
            self.layer2 = self._make_layer(BasicBlock, c, 2 * c, n[1], stride=2)
            self.layer3_semantic = self._make_layer(BasicBlock, 2 * c, 4 * c, n[2], stride=2)
            self.layer3_detail = self._make_layer(BasicBlock, 2 * c, 2 * c, n[0])
            self.compression3 = ConvModule(4 * c, 2 * c, 1, norm_cfg=norm_cfg, act_cfg=None)
            self.fuse_sd_3 = PagFM(2 * c, c, norm_cfg=norm_cfg)

            self.layer4_down_semantic = self._make_layer(BasicBlock, 4 * c, 8 * c, 1, stride=2)
            self.layer4_semantic_1 = eva(8 * c, ks, 0)
            self.norm4_semantic_1 = LayerNorm2d(8 * c, eps=1e-5)
            self.layer4_semantic_2 = eva(8 * c, ks, 1)
            self.norm4_semantic_2 = LayerNorm2d(8 * c, eps=1e-5)
            self.layer4_detail_conv = self._make_layer(BasicBlock, 2 * c, 2 * c, 1)
            self.layer4_detail = eva(2 * c, kd, 2)
            self.norm4_detail = LayerNorm2d(2 * c, eps=1e-5)
            self.compression4 = ConvModule(8 * c, 2 * c, 1, norm_cfg=norm_cfg, act_cfg=None)
            self.fuse_sd_4 = PagFM(2 * c, c, norm_cfg=norm_cfg)
            self.layer5_detail_semantic = self._make_layer(Bottleneck, 2 * c, 2 * c, 1)

            self.layer5_down_semantic_seg = self._make_layer(BasicBlock, 8 * c, 16 * c, 1, 2)
            self.layer5_semantic_1_seg = eva(16 * c, ks, 3)
            self.norm5_semantic_1_seg = LayerNorm2d(16 * c, eps=1e-5)
            self.layer5_semantic_2_seg = eva(16 * c, ks, 4)
            self.norm5_semantic_2_seg = LayerNorm2d(16 * c, eps=1e-5)
            self.layer5_detail_boundary = self._make_layer(Bottleneck, 2 * c, 2 * c, 1)
            self.spp = DLKPPM(16 * c, arch['ppm_channels'], 4 * c, norm_cfg, align_corners)
            self.dfm = BGAF(4 * c, 4 * c, norm_cfg)
        self.official_init()

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_settings:
                raise ValueError(f'unknown BEVANet arch {arch!r}; choose from '
                                 f'{sorted(cls.arch_settings)} or pass a dict')
            return dict(cls.arch_settings[arch.lower()])
        required = {'channels', 'ppm_channels', 'num_blocks'}
        if not isinstance(arch, dict) or not required <= set(arch):
            raise ValueError('a BEVANet arch dict needs "channels", "ppm_channels" and '
                             f'"num_blocks", got {arch!r}')
        unknown = set(arch) - cls._arch_keys
        if unknown:
            raise ValueError(f'unknown BEVANet arch keys {sorted(unknown)}; '
                             f'allowed: {sorted(cls._arch_keys)}')
        if len(arch['num_blocks']) < 3 or min(arch['num_blocks'][:3]) < 1:
            raise ValueError(f'BEVANet num_blocks {arch["num_blocks"]}: needs >= 3 positive '
                             'entries (layer1 / layer3_detail, layer2, layer3_semantic)')
        return dict(arch)

    def _make_layer(self, block: type, cin: int, channels: int, n: int,
                    stride: int = 1) -> nn.Sequential:
        """PIDNet's ``_make_layer``: n blocks; the last one has no output ReLU when n > 1."""
        downsample = None
        if stride != 1 or cin != channels * block.expansion:
            downsample = ConvModule(cin, channels * block.expansion, 1, stride,
                                    norm_cfg=self.norm_cfg, act_cfg=None)
        relu = dict(type='ReLU', inplace=True)
        # the first block keeps its default (BasicBlock: output ReLU, Bottleneck: none); later
        # blocks have an output ReLU except the last
        layers = [block(cin, channels, stride, downsample, norm_cfg=self.norm_cfg,
                        act_cfg_out=relu if block is BasicBlock else None)]
        cin = channels * block.expansion
        for i in range(1, n):
            layers.append(block(cin, channels, 1, norm_cfg=self.norm_cfg,
                                act_cfg_out=None if i == n - 1 else relu))
        return nn.Sequential(*layers)

    def official_init(self) -> None:
        """The official initialisation: PyTorch defaults outside the EVA blocks (whose own init
        ran at construction)."""
        eva = {id(m) for b in self.modules() if isinstance(b, EVABlock) for m in b.modules()}
        for m in self.modules():  # LayerNorm2d is an nn.LayerNorm
            if id(m) not in eva and isinstance(m, (nn.Conv2d, _BatchNorm, nn.LayerNorm)):
                m.reset_parameters()

    def init_weights(self) -> None:
        """Official init, then a ``Pretrained`` checkpoint (keys matching in name and shape)."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else (
            [self.init_cfg] if self.init_cfg else [])
        pretrained = [c for c in cfgs if _is_pretrained(c)]
        others = [c for c in cfgs if not _is_pretrained(c)]
        if others:
            self.init_cfg, saved = others, self.init_cfg
            super().init_weights()
            self.init_cfg = saved
        else:
            self.official_init()
        if len(pretrained) > 1:
            raise ValueError(f'BEVANet takes one Pretrained init_cfg, got {pretrained}')
        for cfg in pretrained:
            load_bevanet_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'),
                                    map_location=cfg.get('map_location', 'cpu'))
        self._is_init = True

    def _check_batch(self, x: torch.Tensor) -> None:
        if not self.training or x.shape[0] > 1:
            return
        bn = self.layer4_detail.attn.spatial_gating_unit.cks.fc_reduce[1].bn
        if not bn.training:
            return
        synced = isinstance(bn, nn.SyncBatchNorm) and get_world_size() > 1
        if not synced:
            raise ValueError(
                'BEVANet cannot train on a batch of one image per device: the CKS BatchNorms in '
                'every EVA block normalise globally pooled 1x1 maps, i.e. one value per channel. '
                'Use a batch size >= 2 per device (train_dataloader.batch_size), or SyncBN '
                "(norm_cfg=dict(type='SyncBN')) across several devices.")

    def forward_all(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (p_aux, fused, d) at 1/8, whatever the mode (for the auxiliary heads)."""
        self._check_batch(x)
        x = self.relu(self.layer2(self.relu(self.layer1(self.conv1(x)))))  # 1/8, 2c
        xs = self.relu(self.layer3_semantic(x))  # 1/16, 4c
        xd = self.fuse_sd_3(self.layer3_detail(x), self.compression3(xs))
        # the official ReLU here is in place and so also rectifies the map the aux head sees
        xd = self.relu(xd)
        p_aux = xd

        xs = self.norm4_semantic_1(self.layer4_semantic_1(self.layer4_down_semantic(xs)))
        xs = self.norm4_semantic_2(self.layer4_semantic_2(xs))  # 1/32, 8c
        xd = self.norm4_detail(self.layer4_detail(self.layer4_detail_conv(xd)))
        xd = self.fuse_sd_4(xd, self.compression4(xs))  # 1/8, 2c
        xds = self.layer5_detail_semantic(xd)  # 1/8, 4c

        xs = self.layer5_semantic_1_seg(self.layer5_down_semantic_seg(xs))
        xs = self.norm5_semantic_1_seg(xs)
        xs = self.norm5_semantic_2_seg(self.layer5_semantic_2_seg(xs))  # 1/64, 16c
        xdb = self.layer5_detail_boundary(xd)
        xs = F.interpolate(self.spp(xs), size=xds.shape[2:], mode='bilinear',
                           align_corners=self.align_corners)
        return p_aux, self.dfm(xds, xs, xdb), xd

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Training: ``(p_aux, fused, d)``; eval: ``fused`` (B, 4c, H/8, W/8)."""
        outs = self.forward_all(x)
        return outs if self.training else outs[1]

    def switch_to_deploy(self) -> 'BEVANet':
        """Fold every BatchNorm that directly follows a conv into that conv (eval only)."""
        fold_conv_bn(self)
        return self


# ------------------------------------------------------------------------------------ deploy
def _fold(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias * scale + shift)


def fold_conv_bn(module: nn.Module) -> int:
    """Fold, in place, each BatchNorm that directly follows a conv: in ``ConvModule``s ordered
    conv -> norm, and the conv -> ``norm`` of mmseg's ``BasePIDHead``. Returns how many."""
    from mmseg.models.decode_heads.pid_head import BasePIDHead
    n = 0
    for m in list(module.modules()):
        if isinstance(m, ConvModule) and m.with_norm and isinstance(m.norm, _BatchNorm) \
                and m.order.index('conv') < m.order.index('norm'):
            if m.norm.training:
                raise RuntimeError('fold_conv_bn: call model.eval() first (BatchNorm in training)')
            _fold(m.conv, m.norm)
            setattr(m, m.norm_name, nn.Identity())
            n += 1
        elif isinstance(m, BasePIDHead) and isinstance(m.norm, _BatchNorm):
            if m.norm.training:
                raise RuntimeError('fold_conv_bn: call model.eval() first (BatchNorm in training)')
            _fold(m.conv.conv, m.norm)
            m.norm = nn.Identity()
            n += 1
    return n


# ------------------------------------------------------------------------------- checkpoints
# official BEVANet_SEG / BEVANet_CLS_32 key -> mmattn key (inside the backbone), applied in order
_BLOCK_LAYERS = (r'(?:layer1|layer2|layer3_semantic|layer3_detail|layer4_down_semantic|'
                 r'layer4_detail_conv|layer5_detail_semantic|layer5_down_semantic_seg|'
                 r'layer5_detail_boundary)')
_RULES = [
    (r'^conv1\.0\.', 'conv1.0.conv.'), (r'^conv1\.1\.', 'conv1.0.bn.'),
    (r'^conv1\.3\.', 'conv1.1.conv.'), (r'^conv1\.4\.', 'conv1.1.bn.'),
    (rf'^({_BLOCK_LAYERS}\.\d+)\.conv(\d)\.', r'\1.conv\2.conv.'),
    (rf'^({_BLOCK_LAYERS}\.\d+)\.bn(\d)\.', r'\1.conv\2.bn.'),
    (rf'^({_BLOCK_LAYERS}\.\d+)\.downsample\.0\.', r'\1.downsample.conv.'),
    (rf'^({_BLOCK_LAYERS}\.\d+)\.downsample\.1\.', r'\1.downsample.bn.'),
    (r'^(compression[34])\.0\.', r'\1.conv.'), (r'^(compression[34])\.1\.', r'\1.bn.'),
    (r'^(fuse_sd_[34])\.f_x\.0\.', r'\1.f_p.conv.'), (r'^(fuse_sd_[34])\.f_x\.1\.', r'\1.f_p.bn.'),
    (r'^(fuse_sd_[34])\.f_y\.0\.', r'\1.f_i.conv.'), (r'^(fuse_sd_[34])\.f_y\.1\.', r'\1.f_i.bn.'),
    (r'\.(?:pwconv|dwconv)\.(weight|bias)$', r'.\1'),  # the DWConv / PWConv wrappers
    (r'\.DW_(?:D_)?conv(?:_[hv])?\.', lambda m: m.group(0).lower()),
    (r'\.FS_kernel\.(fc_\w+)\.1\.', r'.cks.\1.1.conv.'),
    (r'\.FS_kernel\.(fc_\w+)\.2\.', r'.cks.\1.1.bn.'),
    (r'\.FS_kernel\.', '.cks.'),
    (r'^spp\.scale0\.0\.', 'spp.scale0.bn.'), (r'^spp\.scale0\.2\.', 'spp.scale0.conv.'),
    (r'^spp\.scale(\d)\.1\.', r'spp.scale\1.1.bn.'),
    (r'^spp\.scale(\d)\.3\.', r'spp.scale\1.1.conv.'),
    (r'^spp\.(process\w*|compression|shortcut)\.0\.', r'spp.\1.bn.'),
    (r'^spp\.(process\w*|compression|shortcut)\.2\.', r'spp.\1.conv.'),
    (r'^dfm\.(conv_p|conv_i|out)\.0\.', r'dfm.\1.bn.'),
    (r'^dfm\.(conv_p|conv_i|out)\.2\.', r'dfm.\1.conv.'),
]
_RULES = [(re.compile(p), r) for p, r in _RULES]
# the three official segment heads -> BEVANetHead (mmseg PIDHead) modules
_HEADS = {'head': ('i_head', 'conv_seg'), 'seghead_ds': ('p_head', 'p_cls_seg'),
          'seghead_db': ('d_head', 'd_cls_seg')}
_HEAD_PARTS = {'bn1': '{}.conv.bn', 'conv1': '{}.conv.conv', 'bn2': '{}.norm', 'conv2': None}
# BEVANet_CLS_32 (ImageNet classifier) only; the official fine-tuning drops them
_CLASSIFIER = re.compile(r'^(?:head\.(?:weight|bias)$|last_layer\.|layer5_down\.|'
                         r'layer5_\w+_cls\.|norm5_\w+_cls\.)')
_LOSS_KEYS = ('sem_loss.', 'boundary_loss.')
# backbone parts an ImageNet classifier does not have: they keep the official init
SEG_ONLY = re.compile(r'^(?:layer5_down_semantic_seg|layer5_semantic_[12]_seg|'
                      r'norm5_semantic_[12]_seg|layer5_detail_boundary|spp|dfm)\.')


def convert_bevanet_official(state_dict: Dict[str, torch.Tensor]
                             ) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """An official BEVANet state_dict in mmattn's segmentor layout, and the official keys dropped.

    Accepts ``BEVANet_SEG`` (fine-tuned ``.pt``: every key ``model.``-prefixed, plus the loss's
    ``sem_loss.criterion.weight``, dropped) and ``BEVANet_CLS_32`` ImageNet classifiers (their
    classifier-only keys dropped), with or without a DataParallel ``module.`` prefix. Backbone keys
    get ``backbone.``; the official segment heads become ``decode_head`` (``BEVANetHead``):
    ``head`` -> ``i_head`` + ``conv_seg``, ``seghead_ds`` -> ``p_head`` + ``p_cls_seg``,
    ``seghead_db`` -> ``d_head`` + ``d_cls_seg`` (in each, bn1 -> ``conv.bn``, conv1 ->
    ``conv.conv``, bn2 -> ``norm``, conv2 -> the 1x1 classifier).
    """
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    dropped = []
    for key, value in state_dict.items():
        name = key
        for prefix in ('module.', 'model.'):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name.startswith(_LOSS_KEYS) or _CLASSIFIER.match(name):
            dropped.append(key)
            continue
        head, _, rest = name.partition('.')
        if head in _HEADS:
            part, _, param = rest.partition('.')
            if part not in _HEAD_PARTS:
                raise KeyError(f'unexpected official head key {key!r}')
            module, cls = _HEADS[head]
            target = _HEAD_PARTS[part]
            out[f'decode_head.{target.format(module) if target else cls}.{param}'] = value
            continue
        for pattern, repl in _RULES:
            name = pattern.sub(repl, name)
        out['backbone.' + name] = value
    return out, dropped


def bevanet_filter_fn(state_dict: Dict[str, torch.Tensor], prefix: str = '',
                      model: Optional[nn.Module] = None) -> 'OrderedDict[str, torch.Tensor]':
    """Official BEVANet keys (under ``prefix``: ``''``, ``'model.'`` for a fine-tuned ``.pt``)
    -> :class:`BEVANet` state_dict (the checkpoint family's filter; see
    :func:`convert_bevanet_official`). A state_dict already in mmattn's layout passes through."""
    inside = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if 'conv1.0.conv.weight' in inside:  # mmattn layout (a converted checkpoint)
        return OrderedDict(inside)
    converted, _ = convert_bevanet_official(inside)
    return OrderedDict((k[len('backbone.'):], v) for k, v in converted.items()
                       if k.startswith('backbone.'))


def guess_bevanet_arch(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """The official arch ('s', 'sw', 'base', 'l') whose layout an mmattn-layout backbone or
    segmentor state_dict has (widths and block counts), or None."""
    sd = {k[len('backbone.'):] if k.startswith('backbone.') else k: v
          for k, v in state_dict.items()}
    if 'conv1.0.conv.weight' not in sd:
        return None
    c = sd['conv1.0.conv.weight'].shape[0]
    ppm = sd['spp.scale0.conv.weight'].shape[0] if 'spp.scale0.conv.weight' in sd else None

    def count(layer: str) -> int:
        return len({k.split('.')[1] for k in sd if k.startswith(layer + '.')})

    n = [count('layer1'), count('layer2'), count('layer3_semantic')]
    for name, s in BEVANet.arch_settings.items():
        if s['channels'] == c and list(s['num_blocks'][:3]) == n and ppm in (None,
                                                                            s['ppm_channels']):
            return name
    return None


def describe_bevanet_layout(state_dict: Dict[str, torch.Tensor]) -> str:
    """'arch 's'' or the widths and block counts found, for error messages."""
    arch = guess_bevanet_arch(state_dict)
    if arch is not None:
        return f"BEVANet arch {arch!r}"
    sd = {k[len('backbone.'):] if k.startswith('backbone.') else k: v
          for k, v in state_dict.items()}
    if 'conv1.0.conv.weight' not in sd:
        return 'no BEVANet layout'
    c = sd['conv1.0.conv.weight'].shape[0]
    n = [len({k.split('.')[1] for k in sd if k.startswith(f'{layer}.')})
         for layer in ('layer1', 'layer2', 'layer3_semantic')]
    return f'a BEVANet of no official arch (channels {c}, blocks {n})'


def bevanet_from_state_dict(state_dict: Dict[str, torch.Tensor]) -> BEVANet:
    """The :class:`BEVANet` (on the meta device) of the official arch a state_dict has."""
    arch = guess_bevanet_arch(state_dict)
    if arch is None:
        raise ValueError(f'its layout is {describe_bevanet_layout(state_dict)}')
    with torch.device('meta'):
        return BEVANet(arch)


def load_bevanet_pretrained(model: BEVANet, filename: str, prefix: Optional[str] = None,
                            map_location: str = 'cpu') -> None:
    """Load an official (or converted) BEVANet checkpoint into the backbone; an ImageNet
    classifier leaves the stage-5 / DLKPPM / BGAF parts at their init (the official fine-tuning
    loads the keys whose name and shape match: exactly these). Another arch's file raises an error
    naming the arch it looks like."""
    from mmattn.utils.checkpoint import CheckpointError, load_checkpoint
    try:
        load_checkpoint(model, filename, 'bevanet', prefix=prefix, map_location=map_location)
    except CheckpointError as e:
        if 'does not fit' not in str(e):
            raise
        from mmattn.utils.checkpoint import (filter_checkpoint, get_family, read_checkpoint)
        sd, _, _ = filter_checkpoint(read_checkpoint(filename, map_location), get_family('bevanet'),
                                     prefix, model, filename)
        raise CheckpointError(f'{e}. The file holds {describe_bevanet_layout(sd)}; this model is '
                              f'{describe_bevanet_layout(model.state_dict())}') from None


def _register() -> None:
    from mmattn.utils.checkpoint import register_family
    register_family('bevanet', bevanet_filter_fn, 'conv1.0.weight', optional=SEG_ONLY,
                    model_from_state_dict=bevanet_from_state_dict)


_register()
