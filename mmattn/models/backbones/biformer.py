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
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from torch import Tensor

from mmattn.models.layers.norm_layer import build_norm_layer  # mmcv's, or torch's without mmcv
from mmattn.ops.bra import bra_attention, topk_routing
from mmattn.registry import MODELS
from mmattn.utils.checkpoint import (CheckpointError, filter_checkpoint, match_state_dict,
                                     register_family, strip_prefix)
from mmattn.utils.checkpoint import init_weights as init_weights_from_cfg
from .base import (BackboneMixin, drop_path_rates, maybe_checkpoint, parse_arch,
                   parse_out_indices, reject_kwargs)

__all__ = ['BiFormer', 'BiLevelRoutingAttention', 'biformer_filter_fn', 'biformer_from_state_dict',
           'convert_biformer_checkpoint']

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


_STEM_KEY = 'downsample_layers.0.0.weight'
_CLS_ONLY = ('head.', 'norm.', 'pre_logits.')


def biformer_filter_fn(state_dict: Dict[str, Tensor], prefix: str = '',
                       model: Optional[nn.Module] = None) -> Dict[str, Tensor]:
    """Official BiFormer keys -> :class:`BiFormer` state_dict (the names are the official ones).

    Takes the unwrapped classifier release (``downsample_layers.*``, ``stages.*``, ``norm.*``,
    ``head.*``) or a detection/segmentation state_dict with the backbone under ``prefix``; drops
    the classifier-only ``norm.*`` (BatchNorm2d) and ``head.*``. Given a model, the file's
    dense-task output norms ``extra_norms.i`` of outputs the model does not return are dropped.
    """
    sd = strip_prefix(state_dict, prefix)
    out = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(_CLS_ONLY))
    if model is not None:
        own = model.state_dict()
        out = OrderedDict((k, v) for k, v in out.items()
                          if not (k.startswith('extra_norms.') and k not in own))
    return out


def biformer_from_state_dict(state_dict: Mapping[str, Tensor]) -> 'BiFormer':
    """The :class:`BiFormer` (arch, extra-normed outputs) whose keys a filtered state_dict has."""
    blocks: Dict[int, int] = {}
    for k in state_dict:
        m = re.match(r'stages\.(\d)\.(\d+)\.', k)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    if sorted(blocks) != [0, 1, 2, 3] or any(
            f'stages.{i}.0.norm1.weight' not in state_dict for i in range(4)):
        raise CheckpointError(f'expected 4 BiFormer stages, found blocks in {sorted(blocks)}')
    arch = dict(depths=tuple(blocks[i] for i in range(4)),
                embed_dims=tuple(state_dict[f'stages.{i}.0.norm1.weight'].shape[0]
                                 for i in range(4)))
    name = next((n for n, s in BiFormer.arch_zoo.items()
                 if tuple(s['depths']) == arch['depths']
                 and tuple(s['embed_dims']) == arch['embed_dims']), None)
    outs = tuple(i for i in range(4) if f'extra_norms.{i}.weight' in state_dict)
    return BiFormer(arch=name or arch, out_indices=outs or (0, 1, 2, 3))


def convert_biformer_checkpoint(checkpoint: Mapping, prefix: Optional[str] = None,
                                filename: str = '<checkpoint>') -> 'OrderedDict[str, Tensor]':
    """A loaded official BiFormer checkpoint (any container) as a :class:`BiFormer` state_dict:
    :func:`biformer_filter_fn` after unwrapping; ``prefix=None`` finds ``''`` or ``'backbone.'``."""
    return filter_checkpoint(checkpoint, 'biformer', prefix, None, filename)[0]


@MODELS.register_module()
class BiFormer(BackboneMixin, BaseModule):
    """BiFormer backbone (tiny / small / base) for detection and segmentation.

    ``BiFormer(arch=A, n_win=16)`` is the official detection backbone ``BiFormer_mm`` and
    ``n_win=8`` the segmentation one (``auto_pad`` on, a LayerNorm2d with eps 1e-6 per output);
    ``n_win=7, with_extra_norms=False`` is the ImageNet classifier trunk. Follows the backbone
    contract of ``mmattn/models/backbones/README.md``.

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'`` (:attr:`arch_zoo`), or a dict with ``depths``
            and ``embed_dims`` (4 entries each).
        in_channels: input channels.
        n_win: regions per side in every routing-attention block.
        auto_pad: pad each routing-attention input to a multiple of ``n_win`` (any input size).
        topks: per stage, routed regions (> 0), or -1 / -2 / 0 for global attention / global
            attention with LePE / conv pseudo-attention.
        qk_dims: per stage, query/key channels (``None``: the stage width).
        mlp_ratios, head_dim, qk_scale, side_dwconv, before_attn_dwconv, kv_downsample_mode,
        kv_per_wins, kv_downsample_ratios, param_attention, layer_scale_init_value, pre_norm,
        mlp_dwconv: the official BiFormer arguments (defaults: the released models).
        drop_path_rate: stochastic depth, linear from 0 over all blocks.
        out_indices: stages (0..3, negative allowed) whose (extra-normed) outputs are returned,
            strides 4, 8, 16, 32.
        with_extra_norms: apply the dense-task LayerNorm2d to each output (``False``: raw stage
            outputs, the classifier trunk).
        frozen_stages: -1 nothing; 0 the stem (``downsample_layers.0``); k the stem and stages
            0..k-1 (each with the downsampling layer before it and its output norm). The old
            BiFormer value k is k + 1 here.
        norm_eval: keep BatchNorm layers in eval mode while training (official detection).
        norm_cfg: norm of the stem and downsample layers (``SyncBN`` in official segmentation;
            ``requires_grad=False`` replaces the official ``disable_bn_grad=True``).
        with_cp: activation checkpointing of every block while training (the official
            ``use_checkpoint_stages`` checkpointed whole stages).
        backend: BRA backend, see :func:`mmattn.ops.bra.bra_attention`.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH[, prefix='backbone.'])`` loads an
            official classifier (``{'model': sd}``) or detection/segmentation checkpoint.

    Official ``BiFormer_mm`` arguments that the released models do not use (``num_classes``,
    ``pe``, ``pe_stages``, ``kv_downsample_kernels``, ``param_routing``, ``diff_routing``,
    ``soft_routing``) and the renamed ones (``in_chans``, ``depth``, ``embed_dim``,
    ``use_checkpoint_stages``, ``disable_bn_grad``, ``pretrained``) raise a TypeError that says
    what to pass instead.
    """
    # depth and width of the released variants (official factory functions biformer_{tiny,...})
    arch_zoo: Dict[str, dict] = {
        'tiny': dict(depths=(2, 2, 8, 2), embed_dims=(64, 128, 256, 512)),
        'small': dict(depths=(4, 4, 18, 4), embed_dims=(64, 128, 256, 512)),
        'base': dict(depths=(4, 4, 18, 4), embed_dims=(96, 192, 384, 768)),
    }
    _renamed = {
        'in_chans': 'renamed in_channels',
        'depth': 'pass arch=dict(depths=..., embed_dims=...)',
        'embed_dim': 'pass arch=dict(depths=..., embed_dims=...)',
        'use_checkpoint_stages': 'pass with_cp=True (checkpoints every block of every stage)',
        'disable_bn_grad': "pass norm_cfg=dict(type='BN', requires_grad=False)",
        'pretrained': "pass init_cfg=dict(type='Pretrained', checkpoint=...)",
        'num_classes': 'the official backbone ignores it: remove it',
        'pe': 'only pe=None (the released models) exists here: remove it',
        'pe_stages': 'only pe=None (the released models) exists here: remove it',
        'kv_downsample_kernels': 'the official code never reads it: remove it',
        'param_routing': 'only detached hard routing (the released models) exists: remove it',
        'diff_routing': 'only detached hard routing (the released models) exists: remove it',
        'soft_routing': 'only detached hard routing (the released models) exists: remove it',
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
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
                 drop_path_rate: float = 0.,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 with_extra_norms: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 with_cp: bool = False,
                 backend: str = 'auto',
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 **unsupported) -> None:
        reject_kwargs('BiFormer', unsupported, self._renamed)
        super().__init__(init_cfg=init_cfg)
        arch = parse_arch(arch, self.arch_zoo, ('depths', 'embed_dims'), (), 'BiFormer')
        depths, embed_dims = tuple(arch['depths']), tuple(arch['embed_dims'])
        if not (len(depths) == len(embed_dims) == len(topks) == len(mlp_ratios) == 4):
            raise ValueError('BiFormer: arch depths / embed_dims, topks and mlp_ratios need 4 '
                             'entries')
        qk_dims = [q or d for q, d in zip(qk_dims or (None, ) * 4, embed_dims)]
        self.num_stages = 4
        self.depths = depths
        self.embed_dims = embed_dims
        self.out_indices = parse_out_indices(out_indices, 4, 'BiFormer')
        self.frozen_stages = self._check_frozen_stages(frozen_stages, 4)
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(
            nn.Conv2d(in_channels, embed_dims[0] // 2, 3, 2, 1),
            build_norm_layer(norm_cfg, embed_dims[0] // 2)[1],
            nn.GELU(),
            nn.Conv2d(embed_dims[0] // 2, embed_dims[0], 3, 2, 1),
            build_norm_layer(norm_cfg, embed_dims[0])[1]))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(embed_dims[i], embed_dims[i + 1], 3, 2, 1),
                build_norm_layer(norm_cfg, embed_dims[i + 1])[1]))

        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            self.stages.append(nn.Sequential(*[
                BiFormerBlock(
                    embed_dims[i], drop_path=dpr[cur + j],
                    layer_scale_init_value=layer_scale_init_value, num_heads=qk_dims[i] // head_dim,
                    n_win=n_win, qk_dim=qk_dims[i], qk_scale=qk_scale, kv_per_win=kv_per_wins[i],
                    kv_downsample_ratio=kv_downsample_ratios[i],
                    kv_downsample_mode=kv_downsample_mode, topk=topks[i],
                    param_attention=param_attention, mlp_ratio=mlp_ratios[i],
                    mlp_dwconv=mlp_dwconv, side_dwconv=side_dwconv,
                    before_attn_dwconv=before_attn_dwconv, pre_norm=pre_norm, auto_pad=auto_pad,
                    backend=backend) for j in range(depths[i])
            ]))
            cur += depths[i]
        if with_extra_norms:
            self.extra_norms = nn.ModuleList(
                LayerNorm2d(embed_dims[i]) if i in self.out_indices else nn.Identity()
                for i in range(4))
        else:
            self.extra_norms = None
        self.apply(self._init_official)
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
        """Official init (done in ``__init__``), the other ``init_cfg`` entries, then the
        ``Pretrained`` one (official or mmattn file); see ``mmattn.utils.checkpoint.init_weights``.
        """
        init_weights_from_cfg(self, 'biformer')

    def load_official_state_dict(self, state_dict: Mapping[str, Tensor],
                                 filename: str = '<checkpoint>') -> None:
        """Load a state_dict from :func:`biformer_filter_fn`; only the dense-task extra norms may
        be missing (classifier files). Anything else raises :class:`CheckpointError`."""
        state_dict = biformer_filter_fn(dict(state_dict), '', self)
        report = match_state_dict(self, state_dict, _FAMILY.optional)
        if not report.ok:
            raise CheckpointError(f'{filename} does not fit this BiFormer (check arch / qk_dims / '
                                  f'topks): {report.problems()}')
        self.load_state_dict(state_dict, strict=False)

    def _stage_modules(self, i: int) -> List[nn.Module]:
        if i < 0:
            return [self.downsample_layers[0]]
        mods = [self.stages[i]] + ([self.downsample_layers[i]] if i > 0 else [])
        return mods + ([self.extra_norms[i]] if self.extra_norms is not None else [])

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """x: (N, C_in, H, W) -> one (N, C_i, ceil(H / 2**(i+2)), ...) map per ``out_indices``."""
        outs = []
        for i in range(4):
            x = self.downsample_layers[i](x)
            for blk in self.stages[i]:
                x = maybe_checkpoint(blk, self.with_cp, blk.training, x)
            if i in self.out_indices:
                outs.append(x if self.extra_norms is None else self.extra_norms[i](x).contiguous())
        return tuple(outs)


_FAMILY = register_family('biformer', biformer_filter_fn, _STEM_KEY, optional=r'extra_norms\.',
                          model_from_state_dict=biformer_from_state_dict)
