"""Swin skeleton with a pluggable token mixer and norm, and two backbones built on it:

* ``AgentSwinTransformer`` — Agent Attention (Han et al., ECCV 2024): 'A' blocks run global agent
  attention over the whole stage map, 'B' blocks are Swin (shifted) window attention.
* ``SLABSwinTransformer`` — SLAB (Guo et al., ICML 2024): 'L' blocks run simplified linear
  attention on (shifted) 56x56 / 28x28 windows, 'S' blocks Swin window attention, every norm in
  the trunk is PRepBN (LayerNorm -> RepBN, see :mod:`mmattn.models.layers.prepbn`).

Both reproduce the official detection backbones (``downstream/.../agent_swin.py``,
``mmdet_custom/swin_transformer_slab.py``) for any input size and load the official classifier
(``{'model': sd}``) and detection (``prefix='backbone.'``) checkpoints through ``init_cfg``. Key
names are the official ones; :func:`convert_agent_swin` / :func:`convert_slab_swin` only drop the
derived buffers and classifier-only entries (and add SLAB's missing ``warm`` counters).

Layout: tokens (B, N, C) inside the stages, NCHW outputs, one per ``out_indices`` entry.
"""
import re
from functools import lru_cache, partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models.swin_transformer import WindowAttention, window_partition, window_reverse

from mmattn.registry import MODELS
from mmattn.utils.checkpoint import CheckpointError, register_family, strip_prefix
from mmattn.utils.checkpoint import init_weights as init_weights_from_cfg
from ..layers.agent_attention import AgentAttention
from ..layers.linear_attention import SimplifiedLinearAttention
from ..layers.prepbn import LinearNorm, switch_to_deploy
from .base import (BackboneMixin, drop_path_rates, maybe_checkpoint, parse_arch,
                   parse_out_indices, reject_kwargs)

__all__ = ['SwinMixerBackbone', 'AgentSwinTransformer', 'SLABSwinTransformer',
           'agent_swin_filter_fn', 'convert_agent_swin', 'convert_slab_swin',
           'slab_swin_filter_fn']

NormLayer = Callable[[int], nn.Module]


# --------------------------------------------------------------------------------------------
# skeleton
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _shift_window_mask(hp: int, wp: int, window: int, shift: int, device: torch.device,
                       inference: bool) -> torch.Tensor:
    """Swin's SW-MSA mask for a padded (hp, wp) map: (nW, w*w, w*w), 0 or -100.

    ``inference`` only keys the cache: tensors made under inference mode cannot enter autograd.
    """
    img = torch.zeros(1, hp, wp, 1, device=device)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(img, (window, window)).reshape(-1, window * window)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class PatchEmbed(nn.Module):
    """4x4/4 conv patch embedding; pads the image right/bottom to a multiple of the patch.

    x (B, 3, H, W) -> tokens (B, h*w, C), (h, w) with h = ceil(H / 4), w = ceil(W / 4).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 4,
                 norm_layer: Optional[NormLayer] = None) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dims) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        p = self.patch_size
        pad_w, pad_h = (-x.shape[3]) % p, (-x.shape[2]) % p
        if pad_w or pad_h:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw


class PatchMerging(nn.Module):
    """2x2 merging: pad odd H/W, concat [x(0,0), x(1,0), x(0,1), x(1,1)] -> norm -> Linear(4C, 2C).

    x (B, h*w, C) -> (B, ceil(h/2)*ceil(w/2), 2C), new (h, w).
    """

    def __init__(self, dim: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        out_hw = (x.shape[1], x.shape[2])
        x = self.reduction(self.norm(x.reshape(b, out_hw[0] * out_hw[1], 4 * c)))
        return x, out_hw


class SwinBlock(nn.Module):
    """Pre-norm Swin block with a pluggable token mixer.

    ``mixer``:
      * ``'window'`` — Swin W-MSA with relative position bias on ``window_size`` windows,
        cyclically shifted by ``shift_size`` with the usual -100 mask;
      * ``'linear'`` — SLAB's simplified linear attention on the same (shifted) windows, no mask;
      * ``'agent'`` — agent attention over the whole map (no windows, no shift).
    Windowed mixers zero-pad the normed map to a multiple of the window and crop after. With
    ``clamp_windows`` (what the official ImageNet classifiers do) a window not smaller than the
    map becomes the whole map, unshifted.

    x (B, h*w, C), hw -> (B, h*w, C).
    """

    def __init__(self, dim: int, num_heads: int, mixer: str, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_layer: NormLayer = nn.LayerNorm, clamp_windows: bool = False,
                 mixer_cfg: Optional[dict] = None) -> None:
        super().__init__()
        mixer_cfg = dict(mixer_cfg or {})
        if mixer not in ('window', 'linear', 'agent'):
            raise ValueError(
                f"SwinBlock: mixer must be 'window', 'linear' or 'agent', got {mixer!r}")
        if mixer != 'agent' and not 0 <= shift_size < window_size:
            raise ValueError(f'SwinBlock: shift {shift_size} not in [0, window {window_size})')
        self.mixer = mixer
        self.window_size = window_size if mixer != 'agent' else 0
        self.shift_size = shift_size if mixer != 'agent' else 0
        self.clamp_windows = clamp_windows
        self.norm1 = norm_layer(dim)
        if mixer == 'window':
            self.attn = WindowAttention(dim, num_heads=num_heads, window_size=window_size,
                                        qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        elif mixer == 'linear':
            self.attn = SimplifiedLinearAttention(dim, num_heads, window_size, qkv_bias=qkv_bias,
                                                  proj_drop=drop, **mixer_cfg)
        else:
            self.attn = AgentAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                       proj_drop=drop, **mixer_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def _mix(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        if self.mixer == 'agent':
            return self.attn(x, hw)
        win, shift = self.window_size, self.shift_size
        if self.clamp_windows and min(h, w) <= win:
            win, shift = min(h, w), 0
        x = x.view(b, h, w, c)
        pad_b, pad_r = (-h) % win, (-w) % win
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(x, (win, win)).reshape(-1, win * win, c)
        if self.mixer == 'window':
            mask = None
            if shift:
                # compiled: the cache is traced through and is_inference_mode_enabled would
                # break the graph, so the flag (a cache key only) is not read
                inference = (not torch.compiler.is_compiling()
                             and torch.is_inference_mode_enabled())
                mask = _shift_window_mask(hp, wp, win, shift, x.device, inference).to(x.dtype)
            windows = self.attn(windows, mask=mask)
        else:
            windows = self.attn(windows)
        x = window_reverse(windows.reshape(-1, win, win, c), (win, win), hp, wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        if pad_b or pad_r:
            x = x[:, :h, :w].contiguous()
        return x.reshape(b, n, c)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        if x.shape[0] == 0:  # timm's WindowAttention cannot reshape an empty batch
            return x
        x = x + self.drop_path(self._mix(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """Blocks then optional PatchMerging. Returns (stage output, its hw, next input, next hw)."""

    def __init__(self, blocks: List[SwinBlock], downsample: Optional[PatchMerging],
                 with_cp: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]):
        for blk in self.blocks:
            x = maybe_checkpoint(blk, self.with_cp, blk.training, x, hw)
        if self.downsample is None:
            return x, hw, x, hw
        x_down, hw_down = self.downsample(x, hw)
        return x, hw, x_down, hw_down


def _parse_attn_type(attn_type: str, depths: Sequence[int], first: str, second: str) -> List[str]:
    """Official per-stage attention string -> one letter per block and stage.

    One letter per stage (``'AAAB'``); an ``'M'`` stage takes its first k blocks as ``first`` and
    the rest as ``second``, k being the digits after the per-stage letters (``'AAMB2'``).
    """
    n = len(depths)
    letters, tail = attn_type[:n], attn_type[n:]
    if len(letters) != n or any(c not in (first, second, 'M') for c in letters):
        raise ValueError(f'attn_type {attn_type!r}: expected {n} letters from '
                         f"{first!r}, {second!r}, 'M' (+ digits for 'M')")
    if 'M' in letters and not tail.isdigit():
        raise ValueError(f"attn_type {attn_type!r}: an 'M' stage needs its count, e.g. 'AAMB2'")
    out = []
    for letter, depth in zip(letters, depths):
        if letter == 'M':
            out.append(''.join(first if i < int(tail) else second for i in range(depth)))
        else:
            out.append(letter * depth)
    return out


class SwinMixerBackbone(BackboneMixin, BaseModule):
    """Swin skeleton: PatchEmbed, 4 stages of :class:`SwinBlock`, PatchMerging, LayerNorm outputs.

    Follows the backbone contract of ``mmattn/models/backbones/README.md``.

    Args:
        embed_dims: C of stage 0 (stage i has C * 2**i), or the per-stage widths (which must
            double).
        depths, num_heads: per stage.
        block_cfgs: per stage, per block: dict(mixer=..., window_size=..., shift_size=...,
            mixer_cfg=...) for :class:`SwinBlock`.
        norm_layer: trunk norm (patch embed, blocks, merging), a callable dim -> module.
        mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, drop_path_rate: as in Swin
            (drop path grows linearly over all blocks).
        out_indices: stages whose outputs (after a LayerNorm ``norm{i}``) are returned, NCHW.
        frozen_stages: -1 none; 0 the patch embed; k the patch embed and stages 0..k-1, each
            with the PatchMerging that feeds it and its output norm. (mmdet's Swin also freezes
            the PatchMerging after stage k-1, which only stage k uses; here it stays trainable.)
        norm_eval: keep every BatchNorm in eval mode while training.
        clamp_windows: classifier window rule (see :class:`SwinBlock`); the detection backbones
            do not clamp.
        with_cp: gradient checkpointing per block.
        checkpoint_converter: official state_dict -> this layout, used by ``init_weights``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, prefix=None)`` loads an official
            or mmattn checkpoint (see :meth:`load_pretrained`); other types go to mmengine.

    Shapes: x (B, in_channels, H, W), any H, W -> tuple of (B, C * 2**i, ceil(H / 2**(i+2)),
    ceil(W / 2**(i+2))) for i in ``out_indices``.
    """

    def __init__(self, embed_dims: Union[int, Sequence[int]], depths: Sequence[int],
                 num_heads: Sequence[int], block_cfgs: Sequence[Sequence[dict]],
                 norm_layer: NormLayer, in_channels: int = 3, patch_size: int = 4,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 patch_norm: bool = True, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False, clamp_windows: bool = False,
                 with_cp: bool = False,
                 checkpoint_converter: Optional[Callable[[dict], dict]] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        num_stages = len(depths)
        if len(num_heads) != num_stages or len(block_cfgs) != num_stages:
            raise ValueError(f'{name}: depths, num_heads and block_cfgs must have one entry per '
                             'stage')
        c0 = embed_dims if isinstance(embed_dims, int) else int(embed_dims[0])
        widths = [c0 * 2 ** i for i in range(num_stages)]
        if not isinstance(embed_dims, int) and list(embed_dims) != widths:
            raise ValueError(f'{name}: embed_dims {tuple(embed_dims)} must double per stage '
                             f'(PatchMerging), e.g. {tuple(widths)}; or pass the int {c0}')
        self.num_stages = num_stages
        self.depths = tuple(depths)
        self.embed_dims = tuple(widths)
        self.num_features = widths
        self.out_indices = parse_out_indices(out_indices, num_stages, name)
        self.frozen_stages = self._check_frozen_stages(frozen_stages, num_stages)
        self.norm_eval = norm_eval
        self.checkpoint_converter = checkpoint_converter
        embed_dims = c0

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size,
                                      norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, heads, cfgs) in enumerate(zip(depths, num_heads, block_cfgs)):
            if len(cfgs) != depth:
                raise ValueError(f'stage {i}: {len(cfgs)} block configs for depth {depth}')
            dim = self.num_features[i]
            blocks = [SwinBlock(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                                attn_drop=attn_drop_rate, drop_path=dpr[start + j],
                                norm_layer=norm_layer, clamp_windows=clamp_windows, **cfg)
                      for j, cfg in enumerate(cfgs)]
            down = PatchMerging(dim, norm_layer) if i < num_stages - 1 else None
            self.layers.append(SwinStage(blocks, down, with_cp=with_cp))
            start += depth
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))
        self.apply(self._init_module)
        self._freeze_stages()

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -- checkpoints ---------------------------------------------------------------------------
    #: the family in :data:`mmattn.utils.checkpoint.FAMILIES` whose filter reads official files
    checkpoint_family: Optional[str] = None

    def init_weights(self) -> None:
        """Other ``init_cfg`` entries, then a ``Pretrained`` one: an official classifier
        (``{'model': sd}``), an official or mmattn detector (the ``backbone.`` prefix is found
        when not given) or a bare state_dict, by :func:`mmattn.utils.checkpoint.init_weights`."""
        if self.checkpoint_family is None:
            super().init_weights()
        else:
            init_weights_from_cfg(self, self.checkpoint_family)

    # -- training mode -------------------------------------------------------------------------
    def _stage_modules(self, i: int) -> List[nn.Module]:
        if i < 0:
            return [self.patch_embed, self.pos_drop]
        mods = [self.layers[i].blocks]
        if i > 0:
            mods.append(self.layers[i - 1].downsample)
        if i in self.out_indices:
            mods.append(getattr(self, f'norm{i}'))
        return mods

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x (B, C_in, H, W) -> one (B, embed_dims[i], h_i, w_i) map per ``out_indices``."""
        b = x.shape[0]
        x, hw = self.patch_embed(x)
        x = self.pos_drop(x)
        outs = []
        for i, stage in enumerate(self.layers):
            out, out_hw, x, hw = stage(x, hw)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(out.view(b, *out_hw, self.num_features[i]).permute(0, 3, 1, 2)
                            .contiguous())
        return tuple(outs)


_SWIN_RENAMED = {
    'in_chans': 'renamed in_channels',
    'embed_dim': "pass arch=dict(embed_dims=..., depths=..., num_heads=...)",
    'embed_dims': "pass arch=dict(embed_dims=..., depths=..., num_heads=...)",
    'depths': "pass arch=dict(embed_dims=..., depths=..., num_heads=...)",
    'num_heads': "pass arch=dict(embed_dims=..., depths=..., num_heads=...)",
    'use_checkpoint': 'renamed with_cp',
    'pretrained': "pass init_cfg=dict(type='Pretrained', checkpoint=...)",
    'ape': 'absolute position embedding is not in the released models: remove it',
}


_CLS_ONLY = ('head.', 'norm.')
_DERIVED = ('attn_mask', 'relative_position_index')
_OUT_NORM = re.compile(r'norm\d+\.')
_STEM_KEY = 'patch_embed.proj.weight'


def _drop_unused_norms(sd: Dict[str, torch.Tensor],
                       model: Optional[nn.Module]) -> Dict[str, torch.Tensor]:
    if model is None:
        return sd
    own = model.state_dict()
    return {k: v for k, v in sd.items() if not (_OUT_NORM.match(k) and k not in own)}


def _swin_from_state_dict(cls: type, state_dict: Dict[str, torch.Tensor]) -> 'SwinMixerBackbone':
    """The ``cls`` model (arch from its zoo, output norms) whose keys a filtered state_dict has."""
    blocks: Dict[int, int] = {}
    for k in state_dict:
        m = re.match(r'layers\.(\d+)\.blocks\.(\d+)\.', k)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    depths = tuple(blocks[i] for i in sorted(blocks))
    dims = state_dict[_STEM_KEY].shape[0] if _STEM_KEY in state_dict else None
    name = next((a for a, z in cls.arch_zoo.items()
                 if tuple(z['depths']) == depths and z['embed_dims'] == dims), None)
    if name is None:
        raise CheckpointError(f'no {cls.__name__} arch has embed_dims {dims} and depths {depths} '
                              f'(known: {sorted(cls.arch_zoo)})')
    outs = tuple(i for i in range(len(depths)) if f'norm{i}.weight' in state_dict)
    return cls(arch=name, out_indices=outs or tuple(range(len(depths))))


# --------------------------------------------------------------------------------------------
# Agent-Swin
# --------------------------------------------------------------------------------------------
def convert_agent_swin(sd: dict) -> dict:
    """Official Agent-Swin state_dict (classifier or detection backbone) -> mmattn.

    Drops the classifier head and final norm (``head.*``, ``norm.*``) and the derived buffers
    (``attn_mask``, ``relative_position_index``); every other key is kept under its name.
    """
    return {k[7:] if k.startswith('module.') else k: v for k, v in sd.items()
            if not k.startswith(_CLS_ONLY) and not k.endswith(_DERIVED)}


def agent_swin_filter_fn(state_dict: Dict[str, torch.Tensor], prefix: str = '',
                         model: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
    """The checkpoint filter of the family ``agent_swin``: :func:`convert_agent_swin` of the
    entries under ``prefix``; given a model, output norms it does not have are dropped."""
    return _drop_unused_norms(convert_agent_swin(strip_prefix(state_dict, prefix)), model)


@MODELS.register_module()
class AgentSwinTransformer(SwinMixerBackbone):
    """Agent-Swin backbone (official detection/segmentation ``AgentSwinTransformer``).

    Args:
        arch: 'tiny', 'small', 'base' (:attr:`arch_zoo`) or dict(embed_dims, depths,
            num_heads[, attn_type]).
        attn_type: per-stage 'A' (agent) / 'B' (Swin window) string; 'M' stages start with k
            'A' blocks (``'AAMB2'``). Default per arch: T 'AAAB', S 'AABB', B 'AAMB2'.
        img_size: classifier resolution; sets the agent biases' size (img_size / 4 / 2**i).
        window_size: 56 as in the official configs; 'B' blocks use ``max(7, window_size // 8)``
            windows, shifted by half a window on odd blocks (counted from the stage start).
        agent_num: agents the classifier was trained with, per stage (9, 16, 49, 49).
        downstream_agent_shapes: agent grid pooled at run time, per stage; the official
            detection/segmentation configs use (9, 9), (12, 12), (14, 14), (7, 7). Pass the
            classifier's ((3, 3), (4, 4), (7, 7), (7, 7)) with ``clamp_windows=True`` to run the
            classifier trunk.
        kernel_size: agent attention's depthwise conv.
        scale: softmax scale exponent (head_dim ** scale).
        drop_path_rate: stochastic depth (default 0); the official detection configs use
            T 0.1, S 0.1 (Mask R-CNN 1x), B 0.4 (Cascade Mask R-CNN 3x).
        norm_eval: keep BatchNorm layers in eval mode while training (Agent-Swin has none:
            accepted for the common contract).
        Others as in :class:`SwinMixerBackbone`.
    """
    checkpoint_family = 'agent_swin'
    arch_zoo: Dict[str, dict] = {
        'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                     attn_type='AAAB'),
        'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                      attn_type='AABB'),
        'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                     attn_type='AAMB2'),
    }

    def __init__(self, arch: Union[str, dict] = 'tiny', attn_type: Optional[str] = None,
                 img_size: int = 224, patch_size: int = 4, in_channels: int = 3,
                 window_size: int = 56, agent_num: Sequence[int] = (9, 16, 49, 49),
                 downstream_agent_shapes: Sequence[Sequence[int]] = ((9, 9), (12, 12), (14, 14),
                                                                     (7, 7)),
                 kernel_size: int = 3, scale: float = -0.5, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, patch_norm: bool = True,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, clamp_windows: bool = False, with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None, **unsupported) -> None:
        reject_kwargs('AgentSwinTransformer', unsupported,
                      {**_SWIN_RENAMED, 'pretrain_img_size': 'renamed img_size'})
        s = parse_arch(arch, self.arch_zoo, ('embed_dims', 'depths', 'num_heads'),
                       ('attn_type', ), 'AgentSwinTransformer')
        depths = tuple(s['depths'])
        attn_type = attn_type or s.get('attn_type', 'B' * len(depths))
        b_window = max(7, window_size // 8)
        res0 = img_size // patch_size
        block_cfgs = []
        for i, letters in enumerate(_parse_attn_type(attn_type, depths, 'A', 'B')):
            cfgs = []
            for j, letter in enumerate(letters):
                if letter == 'A':
                    cfgs.append(dict(mixer='agent', mixer_cfg=dict(
                        agent_num=int(agent_num[i]), bias_resolution=res0 // 2 ** i,
                        agent_shape=tuple(downstream_agent_shapes[i]), kernel_size=kernel_size,
                        scale=scale)))
                else:
                    cfgs.append(dict(mixer='window', window_size=b_window,
                                     shift_size=b_window // 2 if j % 2 else 0))
            block_cfgs.append(cfgs)
        super().__init__(
            s['embed_dims'], depths, s['num_heads'], block_cfgs, nn.LayerNorm,
            in_channels=in_channels, patch_size=patch_size, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, patch_norm=patch_norm, out_indices=out_indices,
            frozen_stages=frozen_stages, norm_eval=norm_eval, clamp_windows=clamp_windows,
            with_cp=with_cp, checkpoint_converter=convert_agent_swin, init_cfg=init_cfg)
        self.attn_type = attn_type


# --------------------------------------------------------------------------------------------
# SLAB-Swin
# --------------------------------------------------------------------------------------------
def convert_slab_swin(sd: dict) -> dict:
    """Official SLAB-Swin state_dict (classifier or ``SwinTransformer_SLAB``) -> mmattn.

    Drops ``head.*``, the classifier's final PRepBN ``norm.*`` and the derived buffers; adds the
    ``warm`` counter (0) to every PRepBN of a detection checkpoint, which has none. The
    schedule counters ``iter``/``total_step`` are kept: a converged checkpoint has ``iter`` 0.
    """
    out = convert_agent_swin(sd)
    for k in [k for k in out if k.endswith('.total_step')]:
        warm = k[:-len('total_step')] + 'warm'
        if warm not in out:
            out[warm] = torch.zeros((), dtype=torch.long)
    return out


def slab_swin_filter_fn(state_dict: Dict[str, torch.Tensor], prefix: str = '',
                        model: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
    """The checkpoint filter of the family ``slab_swin``: :func:`convert_slab_swin` of the
    entries under ``prefix``; given a model, output norms it does not have are dropped."""
    return _drop_unused_norms(convert_slab_swin(strip_prefix(state_dict, prefix)), model)


@MODELS.register_module()
class SLABSwinTransformer(SwinMixerBackbone):
    """SLAB-Swin backbone (official ``SwinTransformer_SLAB`` detection backbone).

    Args:
        arch: 'tiny', 'small', 'base' (:attr:`arch_zoo`) or dict(embed_dims, depths,
            num_heads).
        attn_type: per-stage 'L' (simplified linear attention) / 'S' (Swin window); default
            'LLSS'.
        window_sizes: per-stage windows, (56, 28, 7, 7) as in the official detection backbone;
            every block on an odd index is shifted by half its window, the linear-attention
            windows included (they ignore the mask, as in the reference).
        kernel_size: depthwise conv of the linear attention.
        norm_step: PRepBN decay length for freshly built norms (official detection default
            300000; checkpoints bring their own counters).
        norm_eval: keep every BatchNorm in eval mode in training, as the official detection
            backbone does (default True, unlike the other backbones).
        drop_path_rate: stochastic depth (default 0); the official detection configs use
            T 0.1, S 0.2.
        Others as in :class:`SwinMixerBackbone`.

    ``switch_to_deploy()`` folds every PRepBN (eval mode: RepBN) into a plain BatchNorm.
    """
    checkpoint_family = 'slab_swin'
    arch_zoo: Dict[str, dict] = {
        'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
        'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
        'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    }

    def __init__(self, arch: Union[str, dict] = 'tiny', attn_type: str = 'LLSS',
                 patch_size: int = 4, in_channels: int = 3,
                 window_sizes: Sequence[int] = (56, 28, 7, 7), kernel_size: int = 5,
                 norm_step: int = 300000, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, patch_norm: bool = True,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = True, clamp_windows: bool = False, with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None, **unsupported) -> None:
        reject_kwargs('SLABSwinTransformer', unsupported, {
            **_SWIN_RENAMED, 'pretrain_img_size': 'not needed: any input size runs',
            'window_size': 'pass window_sizes=(56, 28, w, w) (official: window_size=w)'})
        s = parse_arch(arch, self.arch_zoo, ('embed_dims', 'depths', 'num_heads'), (),
                       'SLABSwinTransformer')
        depths = tuple(s['depths'])
        if len(window_sizes) != len(depths):
            raise ValueError(f'window_sizes {tuple(window_sizes)} needs one entry per stage')
        block_cfgs = []
        for i, letters in enumerate(_parse_attn_type(attn_type, depths, 'L', 'S')):
            win = int(window_sizes[i])
            block_cfgs.append([
                dict(mixer='linear' if letter == 'L' else 'window', window_size=win,
                     shift_size=win // 2 if j % 2 else 0,
                     mixer_cfg=dict(kernel_size=kernel_size) if letter == 'L' else None)
                for j, letter in enumerate(letters)])
        def norm_layer(dim: int) -> nn.Module:
            return LinearNorm(dim, step=norm_step)

        super().__init__(
            s['embed_dims'], depths, s['num_heads'], block_cfgs, norm_layer,
            in_channels=in_channels, patch_size=patch_size, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, patch_norm=patch_norm, out_indices=out_indices,
            frozen_stages=frozen_stages, norm_eval=norm_eval, clamp_windows=clamp_windows,
            with_cp=with_cp, checkpoint_converter=convert_slab_swin, init_cfg=init_cfg)
        self.attn_type = attn_type

    def switch_to_deploy(self) -> 'SLABSwinTransformer':
        """Fold every PRepBN into the plain BatchNorm its eval mode equals (in place)."""
        switch_to_deploy(self)
        return self


register_family('agent_swin', agent_swin_filter_fn, _STEM_KEY, optional=_OUT_NORM,
                derived=r'(attn_mask|relative_position_index)$',
                model_from_state_dict=partial(_swin_from_state_dict, AgentSwinTransformer))
register_family('slab_swin', slab_swin_filter_fn, _STEM_KEY, optional=_OUT_NORM,
                derived=r'(attn_mask|relative_position_index)$',
                model_from_state_dict=partial(_swin_from_state_dict, SLABSwinTransformer))
