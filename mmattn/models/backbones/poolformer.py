"""PoolFormer (MetaFormer) backbones for mmdet 3.x / mmseg 1.x.

`MetaFormer is Actually What You Need for Vision`, Yu et al., CVPR 2022,
https://arxiv.org/abs/2111.11418. Official code: https://github.com/sail-sg/poolformer (Apache-2.0);
this is an independent re-implementation of its dense classes ``poolformer_{s12,...,m48}_feat``.

The state_dict layout is the official dense one, so official checkpoints need no key renaming::

    patch_embed.proj.{weight,bias}                      7x7/4 stem conv, no norm
    network.{0,2,4,6}.{j}.norm1 / norm2                 GroupNorm(1, C) of block j of stage 0..3
    network.{0,2,4,6}.{j}.mlp.fc1 / mlp.fc2             1x1 convs C -> r*C -> C
    network.{0,2,4,6}.{j}.layer_scale_1 / layer_scale_2 (C,)
    network.{1,3,5}.proj.{weight,bias}                  3x3/2 downsampling conv before stage 1..3
    norm{0,2,4,6}.{weight,bias}                         GroupNorm(1, C) on the output of stage 0..3

``out_indices`` count *stages* (0..3); the norm of stage ``i`` keeps the official name ``norm{2i}``
(its position in ``network``). ``convert_poolformer_checkpoint`` turns the released layouts
(sail-sg classifier ``poolformer_*.pth.tar``, sail-sg mmdet/mmseg checkpoints, mmpretrain
classifiers and mmseg segmentors built on ``mmpretrain.PoolFormer``) into this layout;
``PoolFormer.init_weights`` applies it for ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import DropPath, Mlp, trunc_normal_

from mmattn.models.layers.norm_layer import build_norm_layer  # mmcv's, or torch's without mmcv
from mmattn.registry import MODELS
from mmattn.utils.checkpoint import (CheckpointError, filter_checkpoint, register_family,
                                     strip_prefix, unwrap_state_dict)
from mmattn.utils.checkpoint import init_weights as init_weights_from_cfg
from .base import BackboneMixin, maybe_checkpoint, parse_arch, parse_out_indices, reject_kwargs

__all__ = [
    'PoolFormer', 'Pooling', 'pool_reference', 'convert_poolformer_checkpoint',
    'poolformer_filter_fn', 'poolformer_from_state_dict'
]


class PatchEmbed(nn.Module):
    """Strided conv embedding without norm: (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def pool_reference(x: torch.Tensor, pool_size: int = 3) -> torch.Tensor:
    """The official token mixer: ``AvgPool2d(k, 1, k // 2, count_include_pad=False)(x) - x``."""
    return F.avg_pool2d(x, pool_size, 1, pool_size // 2, count_include_pad=False) - x


class Pooling(nn.Module):
    """Token mixer ``AvgPool(x) - x``; border windows average in-image pixels only. (B, C, H, W).

    Computed as a depthwise box-sum convolution times the inverse number of in-image pixels: the
    math of ``pool_reference`` (to fp32 rounding), 3-25x faster than ``avg_pool2d`` on CPU.
    """

    def __init__(self, pool_size: int = 3):
        super().__init__()
        if pool_size % 2 != 1:
            raise ValueError(f'pool_size must be odd, got {pool_size}')
        self.pool_size = pool_size
        self._inv_count: Optional[torch.Tensor] = None

    def inv_count(self, x: torch.Tensor) -> torch.Tensor:
        """(H, W): 1 / number of in-image pixels in each window."""
        h, w = x.shape[-2:]
        inv = self._inv_count
        # traced (torch.compile / export): computed in the graph, no module state (reading the
        # cache would break the graph at ``is_inference``)
        compiling = torch.compiler.is_compiling()
        # an inference-mode tensor cannot be saved for backward: recompute when the mode changes
        if (compiling or inv is None or inv.shape != (h, w) or inv.device != x.device
                or inv.dtype != x.dtype
                or inv.is_inference() != torch.is_inference_mode_enabled()):
            r = self.pool_size // 2

            def count(n: int) -> torch.Tensor:
                i = torch.arange(n, device=x.device)
                return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(x.dtype)

            inv = 1 / (count(h)[:, None] * count(w)[None, :])
            if not compiling:
                self._inv_count = inv
        return inv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, c = self.pool_size, x.shape[1]
        with torch.autocast(x.device.type, enabled=False):  # in x's dtype, as avg_pool2d
            box_sum = F.conv2d(x, x.new_ones(c, 1, k, k), padding=k // 2, groups=c)
        # conv2d's backward does not need its output: scaling, subtracting in place is autograd-safe
        return box_sum.mul_(self.inv_count(x)).sub_(x)


class PoolFormerBlock(nn.Module):
    """``x += ls1 * (pool(n) - n)``, ``n = GN(x)``; then ``x += ls2 * Mlp(GN(x))``. (B, C, H, W)."""

    def __init__(self,
                 dim: int,
                 pool_size: int = 3,
                 mlp_ratio: float = 4.,
                 norm_cfg: dict = dict(type='GN', num_groups=1),
                 drop_path: float = 0.,
                 layer_scale_init_value: float = 1e-5):
        super().__init__()
        self.norm1 = build_norm_layer(norm_cfg, dim)[1]
        self.token_mixer = Pooling(pool_size)
        self.norm2 = build_norm_layer(norm_cfg, dim)[1]
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, use_conv=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.layer_scale_1 = nn.Parameter(torch.full((dim, ), layer_scale_init_value))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, ), layer_scale_init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ls1 = self.layer_scale_1[:, None, None]
        ls2 = self.layer_scale_2[:, None, None]
        if isinstance(self.drop_path, nn.Identity):
            x = torch.addcmul(x, ls1, self.token_mixer(self.norm1(x)))
            return torch.addcmul(x, ls2, self.mlp(self.norm2(x)))
        x = x + self.drop_path(ls1 * self.token_mixer(self.norm1(x)))
        return x + self.drop_path(ls2 * self.mlp(self.norm2(x)))


@MODELS.register_module()
class PoolFormer(BackboneMixin, BaseModule):
    """PoolFormer backbone: the GroupNorm-ed stage outputs of the official ``poolformer_*_feat``.

    Follows the backbone contract of ``mmattn/models/backbones/README.md``.

    Args:
        arch: 's12', 's24', 's36', 'm36', 'm48' (:attr:`arch_zoo`), or a dict with ``depths``
            and ``embed_dims`` (one entry per stage) and optionally ``mlp_ratios`` (default 4)
            and ``layer_scale_init_value`` (default 1e-5). mmpretrain's ``layers`` is ``depths``.
        in_channels: Input image channels.
        pool_size: Pooling window of the token mixer.
        out_indices: Stages (0..3, negative allowed) whose normed outputs are returned, ascending.
        frozen_stages: -1 freezes nothing, 0 the stem, k >= 1 the stem and stages 0..k-1 (with their
            downsampling convs and output norms); frozen parts stay in eval mode.
        norm_eval: Keep BatchNorm layers in eval mode while training. The official model has
            GroupNorms only (no running statistics): it matters only with a BatchNorm ``norm_cfg``.
        norm_cfg: Norm of the blocks and outputs. Official: GroupNorm with one group (eps 1e-5).
        drop_path_rate: Stochastic depth; block b of n gets ``drop_path_rate * b / (n - 1)``.
        with_cp: Activation checkpointing of every block while training.
        init_cfg: mmengine init config. ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` (with
            ``prefix='backbone.'`` for detectors) loads any official PoolFormer checkpoint layout
            (see ``convert_poolformer_checkpoint``).

    Input (B, in_channels, H, W), any H, W; output a tuple of (B, C_i, ~H/2^(i+2), ~W/2^(i+2)).
    """

    arch_zoo: Dict[str, dict] = {
        's12': dict(depths=[2, 2, 6, 2], embed_dims=[64, 128, 320, 512],
                    layer_scale_init_value=1e-5),
        's24': dict(depths=[4, 4, 12, 4], embed_dims=[64, 128, 320, 512],
                    layer_scale_init_value=1e-5),
        's36': dict(depths=[6, 6, 18, 6], embed_dims=[64, 128, 320, 512],
                    layer_scale_init_value=1e-6),
        'm36': dict(depths=[6, 6, 18, 6], embed_dims=[96, 192, 384, 768],
                    layer_scale_init_value=1e-6),
        'm48': dict(depths=[8, 8, 24, 8], embed_dims=[96, 192, 384, 768],
                    layer_scale_init_value=1e-6),
    }

    def __init__(self,
                 arch: Union[str, dict] = 's12',
                 in_channels: int = 3,
                 pool_size: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict = dict(type='GN', num_groups=1),
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 **unsupported):
        reject_kwargs('PoolFormer', unsupported, {
            'in_chans': 'renamed in_channels',
            'layers': "pass arch=dict(depths=..., embed_dims=...)",
            'pretrained': "pass init_cfg=dict(type='Pretrained', checkpoint=...)"})
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, dict) and 'layers' in arch:
            raise ValueError("PoolFormer: arch key 'layers' is called 'depths' here")
        arch = parse_arch(arch, self.arch_zoo, ('depths', 'embed_dims'),
                          ('mlp_ratios', 'layer_scale_init_value'), 'PoolFormer')
        depths, dims = list(arch['depths']), list(arch['embed_dims'])
        if len(depths) != len(dims):
            raise ValueError(f'PoolFormer: arch depths {depths} and embed_dims {dims} differ in '
                             'length')
        mlp_ratios = arch.get('mlp_ratios', 4)
        if not isinstance(mlp_ratios, (list, tuple)):
            mlp_ratios = [mlp_ratios] * len(depths)
        self.num_stages = len(depths)
        self.depths = depths
        self.embed_dims = dims
        self.out_indices = parse_out_indices(out_indices, self.num_stages, 'PoolFormer')
        self.frozen_stages = self._check_frozen_stages(frozen_stages, self.num_stages)
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        self.patch_embed = PatchEmbed(in_channels, dims[0], 7, stride=4, padding=2)
        total = sum(depths)
        network = []
        for i, depth in enumerate(depths):
            if i > 0:
                network.append(PatchEmbed(dims[i - 1], dims[i], 3, stride=2, padding=1))
            first = sum(depths[:i])
            network.append(nn.Sequential(*[
                PoolFormerBlock(
                    dims[i],
                    pool_size=pool_size,
                    mlp_ratio=mlp_ratios[i],
                    norm_cfg=norm_cfg,
                    drop_path=drop_path_rate * (first + j) / max(total - 1, 1),
                    layer_scale_init_value=arch.get('layer_scale_init_value', 1e-5))
                for j in range(depth)
            ]))
        self.network = nn.ModuleList(network)
        for i in self.out_indices:
            self.add_module(f'norm{2 * i}', build_norm_layer(norm_cfg, dims[i])[1])

        # the official model initialises at construction: trunc_normal(.02) for the MLP convs
        for m in self.network.modules():
            if isinstance(m, Mlp):
                for fc in (m.fc1, m.fc2):
                    trunc_normal_(fc.weight, std=.02)
                    nn.init.zeros_(fc.bias)
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, C, H, W) -> tuple of the normed outputs of the stages in ``out_indices``."""
        x = self.patch_embed(x)
        outs = []
        for i in range(self.num_stages):
            if i > 0:
                x = self.network[2 * i - 1](x)
            for blk in self.network[2 * i]:
                x = maybe_checkpoint(blk, self.with_cp, blk.training, x)
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{2 * i}')(x))
        return tuple(outs)

    def _stage_modules(self, i: int) -> List[nn.Module]:
        if i < 0:
            return [self.patch_embed]
        mods = [self.network[2 * i]] + ([self.network[2 * i - 1]] if i > 0 else [])
        if i in self.out_indices:
            mods.append(getattr(self, f'norm{2 * i}'))
        return mods

    def init_weights(self) -> None:
        """Other ``init_cfg`` entries, then a ``Pretrained`` checkpoint of any official layout
        (:func:`mmattn.utils.checkpoint.init_weights` with :func:`poolformer_filter_fn`)."""
        init_weights_from_cfg(self, 'poolformer')


# ------------------------------------------------------------------------------------ checkpoints
_OUT_NORM = re.compile(r'^norm\d+\.')


def poolformer_filter_fn(state_dict: Dict[str, torch.Tensor], prefix: str = '',
                         model: Optional[nn.Module] = None) -> 'OrderedDict[str, torch.Tensor]':
    """Official PoolFormer keys (under ``prefix``) -> :class:`PoolFormer` state_dict.

    The layouts: the sail-sg classifier ``poolformer_*.pth.tar`` (raw ``patch_embed`` /
    ``network`` / ``norm`` / ``head``); sail-sg mmdet/mmseg checkpoints and mmseg segmentors built
    on ``mmpretrain.PoolFormer`` (``backbone.patch_embed`` / ``backbone.network`` /
    ``backbone.norm{0,2,4,6}`` + neck, heads); mmpretrain classifiers (``backbone.*`` +
    ``head.fc``). Classifier-only keys are dropped, as the official dense classes do: sail-sg's
    ``norm`` / ``head`` and, in a classifier, the output norms (mmpretrain's ``norm6`` is the
    classifier's final norm). Given a model, output norms it does not have are dropped too.
    """
    inside = strip_prefix(state_dict, prefix)
    outside = [k for k in state_dict if not k.startswith(prefix)] if prefix else []
    is_classifier = (any(k.startswith('head.') for k in outside) or 'head.weight' in inside
                     or 'norm.weight' in inside)
    out = OrderedDict((k, v) for k, v in inside.items()
                      if not (k.startswith(('head.', 'norm.'))
                              or (is_classifier and _OUT_NORM.match(k))))
    if model is not None:
        own = model.state_dict()
        out = OrderedDict((k, v) for k, v in out.items()
                          if not (_OUT_NORM.match(k) and k not in own))
    return out


def poolformer_from_state_dict(state_dict: Dict[str, torch.Tensor]) -> 'PoolFormer':
    """The :class:`PoolFormer` (arch, output norms) whose keys a filtered state_dict has."""
    blocks: Dict[int, int] = {}
    for k in state_dict:
        m = re.match(r'network\.(\d+)\.(\d+)\.', k)
        if m and int(m.group(1)) % 2 == 0:
            stage = int(m.group(1)) // 2
            blocks[stage] = max(blocks.get(stage, 0), int(m.group(2)) + 1)
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointError(f'no PoolFormer stages found (keys e.g. {list(state_dict)[:5]})')
    n = len(blocks)
    dims = [state_dict[f'network.{2 * i}.0.norm1.weight'].shape[0] for i in range(n)]
    ratios = [state_dict[f'network.{2 * i}.0.mlp.fc1.weight'].shape[0] // dims[i]
              for i in range(n)]
    depths = [blocks[i] for i in range(n)]
    name = next((a for a, s in PoolFormer.arch_zoo.items()
                 if list(s['depths']) == depths and list(s['embed_dims']) == dims
                 and set(ratios) == {4}), None)
    outs = [i for i in range(n) if f'norm{2 * i}.weight' in state_dict]
    return PoolFormer(arch=name or dict(depths=depths, embed_dims=dims, mlp_ratios=ratios),
                      out_indices=outs or tuple(range(n)))


def convert_poolformer_checkpoint(
        checkpoint: dict,
        prefix: Optional[str] = None,
        filename: str = '<checkpoint>'
) -> Tuple['OrderedDict[str, torch.Tensor]', List[str], int]:
    """A loaded official PoolFormer checkpoint (any container) in mmattn's layout:
    :func:`poolformer_filter_fn` after unwrapping (``prefix=None``: ``''`` or ``'backbone.'``).

    Returns ``(state_dict, dropped classifier keys, n_ignored)``, ``n_ignored`` counting the keys
    outside ``prefix`` (neck, heads) that are not a classifier head.
    """
    out, used, dropped = filter_checkpoint(checkpoint, 'poolformer', prefix, None, filename)
    sd = unwrap_state_dict(checkpoint, filename)
    outside = [k for k in sd if used and not k.startswith(used)]
    head = [k for k in outside if k.startswith('head.')]
    return out, dropped + head, len(outside) - len(head)


_FAMILY = register_family('poolformer', poolformer_filter_fn, 'patch_embed.proj.weight',
                          optional=_OUT_NORM, model_from_state_dict=poolformer_from_state_dict)
