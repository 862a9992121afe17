"""BiFormer: Vision Transformer with Bi-Level Routing Attention (Zhu et al., CVPR 2023).

A dense-prediction backbone that reproduces the official classifier trunk and its detection /
segmentation adaptation (``BiFormer_mm``: zero padding to a multiple of ``n_win`` inside every
routing-attention block, one channels-first LayerNorm per output), with the official state_dict
layout, so released checkpoints load unchanged. Numerics follow the *legacy* BRA that the released
T/S/B weights were trained with: softmax scale ``qk_dim ** -0.5`` over the full stage width, pad
tokens not masked, routing detached. The routed attention itself runs on
:func:`mmattn.ops.bra.bra_attention` (``backend``: reference gather, memory-lean torch, or fused
Triton).

Layout: NCHW between blocks, NHWC inside a block; a block is
``x = x + dwconv3x3(x)``; ``x = x + DropPath(attn(LN(x)))``; ``x = x + DropPath(mlp(LN(x)))``.
"""
import warnings
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mmattn.ops.bra import bra_attention, topk_routing
from mmattn.registry import MODELS
from mmattn.utils.checkpoint import state_dict_of

__all__ = ['BiFormer', 'BiLevelRoutingAttention', 'convert_biformer_checkpoint']

# depth and width of the released variants (official factory functions biformer_{tiny,small,base})
ARCH_SETTINGS: Dict[str, dict] = {
    'tiny': dict(depth=(2, 2, 8, 2), embed_dim=(64, 128, 256, 512)),
    'small': dict(depth=(4, 4, 18, 4), embed_dim=(64, 128, 256, 512)),
    'base': dict(depth=(4, 4, 18, 4), embed_dim=(96, 192, 384, 768)),
}

_KV_DOWNSAMPLE_MODES = ('identity', 'ada_avgpool', 'ada_maxpool', 'avgpool', 'maxpool')


class _QKVLinear(nn.Module):
    """The single ``[q | k | v]`` projection, nested as in the official layout (``qkv.qkv``)."""

    def __init__(self, dim: int, qk_dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.qkv(x)


class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention (legacy BRA numerics), NHWC in and out.

    The map is split into ``n_win x n_win`` regions; each query region attends to the tokens of
    the ``topk`` regions whose mean key best matches its mean query (routing detached). A 5x5
    depthwise conv of V on the full map (``lepe``) is added before the output projection ``wo``.

    Args:
        dim: channels C.
        num_heads: heads m (``qk_dim // 32`` in the released models).
        n_win: regions per side S.
        qk_dim: query/key channels (defaults to ``dim``).
        qk_scale: logit scale (defaults to ``qk_dim ** -0.5``, the full width, not per head).
        topk: routed regions per query region.
        side_dwconv: kernel of the ``lepe`` depthwise conv (0: none).
        auto_pad: zero-pad the (normalised) input on the right/bottom to a multiple of ``n_win``;
            pad tokens are not masked, as in the official code. Without it, H and W must be
            multiples of ``n_win``.
        kv_downsample_mode: ``'identity'`` (released models), ``'ada_avgpool'``,
            ``'ada_maxpool'`` (to ``kv_per_win`` x ``kv_per_win`` per region), ``'avgpool'``,
            ``'maxpool'`` (kernel ``kv_downsample_ratio``); pools K and V per region after
            routing descriptors are taken.
        param_attention: ``'qkvo'`` (output Linear) or ``'qkv'`` (none).
        backend: :func:`~mmattn.ops.bra.bra_attention` backend.
    """

    def __init__(self, dim: int, num_heads: int = 8, n_win: int = 7, qk_dim: Optional[int] = None,
                 qk_scale: Optional[float] = None, topk: int = 4, side_dwconv: int = 3,
                 auto_pad: bool = False, kv_downsample_mode: str = 'identity',
                 kv_per_win: int = 4, kv_downsample_ratio: int = 4,
                 param_attention: str = 'qkvo', backend: str = 'auto') -> None:
        super().__init__()
        self.dim = dim
        self.qk_dim = qk_dim or dim
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        self.auto_pad = auto_pad
        self.backend = backend
        if self.qk_dim % num_heads or dim % num_heads:
            raise ValueError(f'BiLevelRoutingAttention: qk_dim {self.qk_dim} and dim {dim} must '
                             f'be divisible by num_heads={num_heads}')
        if not 1 <= topk <= n_win * n_win:
            raise ValueError(f'BiLevelRoutingAttention: topk={topk} must be in [1, n_win**2='
                             f'{n_win * n_win}]')
        self.scale = qk_scale or self.qk_dim ** -0.5
        self.lepe = (nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)
                     if side_dwconv > 0 else None)
        self.qkv = _QKVLinear(dim, self.qk_dim)
        if param_attention == 'qkvo':
            self.wo = nn.Linear(dim, dim)
        elif param_attention == 'qkv':
            self.wo = nn.Identity()
        else:
            raise ValueError(f"param_attention must be 'qkvo' or 'qkv', got {param_attention!r}")
        if kv_downsample_mode not in _KV_DOWNSAMPLE_MODES:
            raise NotImplementedError(f'kv_downsample_mode {kv_downsample_mode!r} is not '
                                      f'supported (choose from {_KV_DOWNSAMPLE_MODES})')
        self.kv_downsample_mode = kv_downsample_mode
        if kv_downsample_mode == 'ada_avgpool':
            self.kv_down = nn.AdaptiveAvgPool2d(kv_per_win)
        elif kv_downsample_mode == 'ada_maxpool':
            self.kv_down = nn.AdaptiveMaxPool2d(kv_per_win)
        elif kv_downsample_mode in ('avgpool', 'maxpool') and kv_downsample_ratio > 1:
            pool = nn.AvgPool2d if kv_downsample_mode == 'avgpool' else nn.MaxPool2d
            self.kv_down = pool(kv_downsample_ratio)
        else:
            self.kv_down = None

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) -> (N, H, W, C)."""
        n, h_in, w_in, c = x.shape
        s = self.n_win
        if self.auto_pad:
            pad_r, pad_b = (s - w_in % s) % s, (s - h_in % s) % s
            if pad_r or pad_b:
                x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        elif h_in % s or w_in % s:
            raise ValueError(f'BiLevelRoutingAttention: feature map {h_in}x{w_in} is not a '
                             f'multiple of n_win={s}; set auto_pad=True')
        _, hp, wp, _ = x.shape
        h, w = hp // s, wp // s
        # regions, row-major: (N, S*S, h*w, C)
        x = x.view(n, s, h, s, w, c).permute(0, 1, 3, 2, 4, 5).reshape(n, s * s, h * w, c)
        qkv = self.qkv(x)
        q, k, v = qkv.split([self.qk_dim, self.qk_dim, c], dim=-1)
        r_idx = topk_routing(q.mean(2), k.mean(2), self.topk, self.scale)
        k_att, v_att = k, v
        if self.kv_down is not None:
            kv = qkv[..., self.qk_dim:].reshape(n * s * s, h, w, -1).permute(0, 3, 1, 2)
            kv = self.kv_down(kv).flatten(2).transpose(1, 2).reshape(n, s * s, -1, kv.shape[1])
            k_att, v_att = kv.split([self.qk_dim, c], dim=-1)
        out = bra_attention(q, k_att, v_att, r_idx, self.num_heads, self.scale, self.backend)
        out = out.view(n, s, s, h, w, c).permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, c)
        if self.lepe is not None:
            v_map = v.reshape(n, s, s, h, w, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, hp, wp)
            out = out + self.lepe(v_map).permute(0, 2, 3, 1)
        out = self.wo(out)
        if hp != h_in or wp != w_in:
            out = out[:, :h_in, :w_in, :].contiguous()
        return out


class GlobalAttention(nn.Module):
    """Plain multi-head self-attention over all tokens, NHWC in and out (last BiFormer stage).

    ``topk=-2`` (``AttentionLePE``): adds a depthwise conv of the block input (after LN) before
    ``proj``; ``topk=-1`` (``Attention``): ``side_dwconv=0``. 8 heads, qkv without bias,
    scale ``head_dim ** -0.5``.
    """

    def __init__(self, dim: int, num_heads: int = 8, side_dwconv: int = 5) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.lepe = (nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)
                     if side_dwconv > 0 else None)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) -> (N, H, W, C)."""
        n, h, w, c = x.shape
        qkv = self.qkv(x).reshape(n, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, h, w, c)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out)


class _NHWC2NCHW(nn.Module):

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2)


class _NCHW2NHWC(nn.Module):

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


class _DWConvNHWC(nn.Module):
    """3x3 depthwise conv on an NHWC tensor (``mlp_dwconv=True``); key ``dwconv``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class BiFormerBlock(nn.Module):
    """One BiFormer block, NCHW in and out.

    ``topk > 0``: bi-level routing attention; ``-1``: global attention; ``-2``: global attention
    with LePE; ``0``: a conv "pseudo attention" (1x1, 5x5 depthwise, 1x1).
    """

    def __init__(self, dim: int, drop_path: float = 0., layer_scale_init_value: float = -1,
                 num_heads: int = 8, n_win: int = 7, qk_dim: Optional[int] = None,
                 qk_scale: Optional[float] = None, kv_per_win: int = 4,
                 kv_downsample_ratio: int = 4, kv_downsample_mode: str = 'identity',
                 topk: int = 4, param_attention: str = 'qkvo', mlp_ratio: float = 4,
                 mlp_dwconv: bool = False, side_dwconv: int = 5, before_attn_dwconv: int = 3,
                 pre_norm: bool = True, auto_pad: bool = False, backend: str = 'auto') -> None:
        super().__init__()
        qk_dim = qk_dim or dim
        # padding is 1 whatever the kernel, as in the official code
        self.pos_embed = (nn.Conv2d(dim, dim, before_attn_dwconv, padding=1, groups=dim)
                          if before_attn_dwconv > 0 else None)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(
                dim, num_heads=num_heads, n_win=n_win, qk_dim=qk_dim, qk_scale=qk_scale,
                topk=topk, side_dwconv=side_dwconv, auto_pad=auto_pad,
                kv_downsample_mode=kv_downsample_mode, kv_per_win=kv_per_win,
                kv_downsample_ratio=kv_downsample_ratio, param_attention=param_attention,
                backend=backend)
        elif topk == -1:
            self.attn = GlobalAttention(dim, side_dwconv=0)
        elif topk == -2:
            self.attn = GlobalAttention(dim, side_dwconv=side_dwconv)
        elif topk == 0:
            self.attn = nn.Sequential(_NHWC2NCHW(), nn.Conv2d(dim, dim, 1),
                                      nn.Conv2d(dim, dim, 5, padding=2, groups=dim),
                                      nn.Conv2d(dim, dim, 1), _NCHW2NHWC())
        else:
            raise ValueError(f'BiFormerBlock: topk={topk} (expected > 0, 0, -1 or -2)')
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden),
                                 _DWConvNHWC(hidden) if mlp_dwconv else nn.Identity(),
                                 nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        if layer_scale_init_value > 0:
            self.gamma1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = None
        self.pre_norm = pre_norm

    def _scaled(self, y: Tensor, gamma: Optional[Tensor]) -> Tensor:
        return self.drop_path(y if gamma is None else gamma * y)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> (N, C, H, W)."""
        if self.pos_embed is not None:
            x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)
        if self.pre_norm:
            x = x + self._scaled(self.attn(self.norm1(x)), self.gamma1)
            x = x + self._scaled(self.mlp(self.norm2(x)), self.gamma2)
        else:
            x = self.norm1(x + self._scaled(self.attn(x), self.gamma1))
            x = self.norm2(x + self._scaled(self.mlp(x), self.gamma2))
        return x.permute(0, 3, 1, 2)


def convert_biformer_checkpoint(checkpoint: Mapping, prefix: Optional[str] = None,
                                filename: str = '<checkpoint>') -> 'OrderedDict[str, Tensor]':
    """An official BiFormer checkpoint as a :class:`BiFormer` state_dict.

    Accepts the classifier release (``{'model': sd}``, keys ``downsample_layers.*``, ``stages.*``,
    ``norm.*``, ``head.*``), detection/segmentation checkpoints (``{'state_dict': sd}`` with keys
    under ``backbone.``), a bare state_dict, or this function's own output. The classifier-only
    ``norm.*`` (BatchNorm2d) and ``head.*`` are dropped; other keys keep their official names.

    Args:
        checkpoint: the loaded checkpoint.
        prefix: keep only keys under this prefix (e.g. ``'backbone.'``) and strip it. With
            ``None``, a ``backbone.`` prefix is stripped if the trunk is only found under it.
        filename: named in errors.
    """
    sd = state_dict_of(checkpoint, filename)
    if prefix is None and 'downsample_layers.0.0.weight' not in sd \
            and 'backbone.downsample_layers.0.0.weight' in sd:
        prefix = 'backbone.'
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sd:
            raise KeyError(f'{filename}: no keys under prefix {prefix!r}')
    if 'downsample_layers.0.0.weight' not in sd:
        raise KeyError(f'{filename}: not a BiFormer checkpoint (no downsample_layers.0.0.weight; '
                       f'keys e.g. {sorted(sd)[:5]})')
    return OrderedDict((k, v) for k, v in sd.items()
                       if not k.startswith(('head.', 'norm.', 'pre_logits.')))


@MODELS.register_module()
class BiFormer(BaseModule):
    """BiFormer backbone (tiny / small / base) for detection and segmentation.

    ``BiFormer(arch=A, n_win=16)`` is the official detection backbone ``BiFormer_mm`` and
    ``n_win=8`` the segmentation one (``auto_pad`` on, a LayerNorm2d with eps 1e-6 per output);
    ``n_win=7, with_extra_norms=False`` is the ImageNet classifier trunk.

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'``, or a dict with ``depth`` and ``embed_dim``.
        in_chans: input channels.
        n_win: regions per side in every routing-attention block.
        auto_pad: pad each routing-attention input to a multiple of ``n_win`` (any input size).
        topks: per stage, routed regions (> 0), or -1 / -2 / 0 for global attention / global
            attention with LePE / conv pseudo-attention.
        qk_dims: per stage, query/key channels (``None``: the stage width).
        mlp_ratios, head_dim, qk_scale, side_dwconv, before_attn_dwconv, kv_downsample_mode,
        kv_per_wins, kv_downsample_ratios, param_attention, layer_scale_init_value, pre_norm,
        mlp_dwconv: the official BiFormer arguments (defaults: the released models).
        depth, embed_dim: override ``arch``.
        drop_path_rate: stochastic depth, linear over all blocks.
        out_indices: stages whose (extra-normed) outputs are returned, strides 4, 8, 16, 32.
        with_extra_norms: apply the dense-task LayerNorm2d to each output (``False``: raw stage
            outputs, the classifier trunk).
        frozen_stages: freeze stem/downsample + blocks (and output norms) of stages
            ``0..frozen_stages`` (-1: none).
        norm_eval: keep BatchNorm layers in eval mode while training (official detection).
        norm_cfg: norm of the stem and downsample layers (``SyncBN`` in official segmentation).
        disable_bn_grad: freeze BatchNorm affine parameters.
        use_checkpoint_stages: stages run under activation checkpointing while training.
        backend: BRA backend, see :func:`mmattn.ops.bra.bra_attention`.
        num_classes, pe, pe_stages, kv_downsample_kernels, param_routing, diff_routing,
        soft_routing: accepted for official-config compatibility; only the released values
            (``pe=None``, routing flags False) are supported; ``num_classes`` is ignored.
        pretrained: deprecated, use ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH[, prefix='backbone.'])`` loads an
            official classifier (``{'model': sd}``) or detection/segmentation checkpoint.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_chans: int = 3,
                 n_win: int = 7,
                 auto_pad: bool = True,
                 topks: Sequence[int] = (1, 4, 16, -2),
                 qk_dims: Optional[Sequence[Optional[int]]] = None,
                 mlp_ratios: Sequence[float] = (3, 3, 3, 3),
                 head_dim: int = 32,
                 qk_scale: Optional[float] = None,
                 side_dwconv: int = 5,
                 before_attn_dwconv: int = 3,
                 kv_downsample_mode: str = 'identity',
                 kv_per_wins: Sequence[int] = (-1, -1, -1, -1),
                 kv_downsample_ratios: Sequence[int] = (4, 2, 1, 1),
                 param_attention: str = 'qkvo',
                 layer_scale_init_value: float = -1,
                 pre_norm: bool = True,
                 mlp_dwconv: bool = False,
                 depth: Optional[Sequence[int]] = None,
                 embed_dim: Optional[Sequence[int]] = None,
                 drop_path_rate: float = 0.,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 with_extra_norms: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 disable_bn_grad: bool = False,
                 use_checkpoint_stages: Sequence[int] = (),
                 backend: str = 'auto',
                 num_classes: Optional[int] = None,
                 pe: Optional[str] = None,
                 pe_stages: Sequence[int] = (0, ),
                 kv_downsample_kernels: Sequence[int] = (4, 2, 1, 1),
                 param_routing: bool = False,
                 diff_routing: bool = False,
                 soft_routing: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('BiFormer: give init_cfg or pretrained, not both')
            warnings.warn('BiFormer: pretrained= is deprecated, use '
                          "init_cfg=dict(type='Pretrained', checkpoint=...)")
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in ARCH_SETTINGS:
                raise ValueError(f'BiFormer: arch {arch!r} not in {sorted(ARCH_SETTINGS)}')
            arch = ARCH_SETTINGS[arch]
        depth = tuple(depth if depth is not None else arch['depth'])
        embed_dim = tuple(embed_dim if embed_dim is not None else arch['embed_dim'])
        qk_dims = [q or d for q, d in zip(qk_dims or (None, ) * 4, embed_dim)]
        if not (len(depth) == len(embed_dim) == len(topks) == len(mlp_ratios) == 4):
            raise ValueError('BiFormer: depth, embed_dim, topks and mlp_ratios need 4 entries')
        if pe is not None:
            raise NotImplementedError(f'BiFormer: pe={pe!r}; only pe=None (released models)')
        if param_routing or diff_routing or soft_routing:
            raise NotImplementedError(
                'BiFormer: param_routing / diff_routing / soft_routing are not supported (the '
                'released models use detached hard routing)')
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f'BiFormer: out_indices {out_indices} must be a subset of 0..3')
        if not -1 <= frozen_stages <= 3:
            raise ValueError(f'BiFormer: frozen_stages={frozen_stages} must be in -1..3')
        del num_classes, pe_stages, kv_downsample_kernels  # official-only arguments
        self.embed_dim = embed_dim
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.use_checkpoint_stages = tuple(use_checkpoint_stages)

        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(
            nn.Conv2d(in_chans, embed_dim[0] // 2, 3, 2, 1),
            build_norm_layer(norm_cfg, embed_dim[0] // 2)[1],
            nn.GELU(),
            nn.Conv2d(embed_dim[0] // 2, embed_dim[0], 3, 2, 1),
            build_norm_layer(norm_cfg, embed_dim[0])[1]))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(embed_dim[i], embed_dim[i + 1], 3, 2, 1),
                build_norm_layer(norm_cfg, embed_dim[i + 1])[1]))

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depth))]
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            self.stages.append(nn.Sequential(*[
                BiFormerBlock(
                    embed_dim[i], drop_path=dpr[cur + j],
                    layer_scale_init_value=layer_scale_init_value, num_heads=qk_dims[i] // head_dim,
                    n_win=n_win, qk_dim=qk_dims[i], qk_scale=qk_scale, kv_per_win=kv_per_wins[i],
                    kv_downsample_ratio=kv_downsample_ratios[i],
                    kv_downsample_mode=kv_downsample_mode, topk=topks[i],
                    param_attention=param_attention, mlp_ratio=mlp_ratios[i],
                    mlp_dwconv=mlp_dwconv, side_dwconv=side_dwconv,
                    before_attn_dwconv=before_attn_dwconv, pre_norm=pre_norm, auto_pad=auto_pad,
                    backend=backend) for j in range(depth[i])
            ]))
            cur += depth[i]
        if with_extra_norms:
            self.extra_norms = nn.ModuleList(
                LayerNorm2d(embed_dim[i]) if i in out_indices else nn.Identity() for i in range(4))
        else:
            self.extra_norms = None
        self.apply(self._init_official)
        if disable_bn_grad:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.requires_grad_(False)
        self._freeze_stages()

    @staticmethod
    def _init_official(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def init_weights(self) -> None:
        """Official init (done in ``__init__``), or load ``init_cfg``'s Pretrained checkpoint."""
        if self.init_cfg is None or self.init_cfg.get('type') != 'Pretrained':
            super().init_weights()
            return
        logger = MMLogger.get_current_instance()
        filename = self.init_cfg['checkpoint']
        ckpt = CheckpointLoader.load_checkpoint(filename, map_location='cpu', logger=logger)
        self.load_official_state_dict(
            convert_biformer_checkpoint(ckpt, self.init_cfg.get('prefix'), filename), filename)
        logger.info(f'BiFormer: loaded {filename}')
        self._is_init = True

    def load_official_state_dict(self, state_dict: Mapping[str, Tensor],
                                 filename: str = '<checkpoint>') -> None:
        """Load a converted official state_dict; only the dense-task extra norms may be missing
        (classifier checkpoints do not have them) or left over (outputs this backbone does not
        return). Anything else raises, naming the keys."""
        own = self.state_dict()
        unused = [k for k in state_dict if k.startswith('extra_norms.') and k not in own]
        if unused:
            MMLogger.get_current_instance().info(
                f'BiFormer: {filename}: not loading {unused} (outputs not in out_indices)')
            state_dict = {k: v for k, v in state_dict.items() if k not in unused}
        unexpected = [k for k in state_dict if k not in own]
        missing = [k for k in own if k not in state_dict and not k.startswith('extra_norms.')]
        mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                      for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
        if unexpected or missing or mismatched:
            raise ValueError(
                f'{filename} does not match this BiFormer (check arch / qk_dims / topks): '
                f'{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys '
                f'{unexpected[:5]}, {len(mismatched)} shape mismatches {mismatched[:3]}')
        self.load_state_dict(state_dict, strict=False)

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages + 1):
            frozen = [self.downsample_layers[i], self.stages[i]]
            if self.extra_norms is not None:
                frozen.append(self.extra_norms[i])
            for m in frozen:
                m.eval()
                m.requires_grad_(False)

    def train(self, mode: bool = True) -> 'BiFormer':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """x: (N, 3, H, W) -> one (N, C_i, ceil(H / 2**(i+2)), ...) map per ``out_indices``."""
        outs = []
        for i in range(4):
            x = self.downsample_layers[i](x)
            if i in self.use_checkpoint_stages and self.training and x.requires_grad:
                x = cp.checkpoint(self.stages[i], x, use_reentrant=False)
            else:
                x = self.stages[i](x)
            if i in self.out_indices:
                outs.append(x if self.extra_norms is None else self.extra_norms[i](x).contiguous())
        return tuple(outs)
