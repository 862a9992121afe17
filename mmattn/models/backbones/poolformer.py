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
import logging
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from timm.layers import DropPath, Mlp, trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from mmattn.registry import MODELS
from mmattn.utils.checkpoint import state_dict_of

__all__ = [
    'PoolFormer', 'Pooling', 'pool_reference', 'convert_poolformer_checkpoint',
    'load_poolformer_checkpoint'
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
        # an inference-mode tensor cannot be saved for backward: recompute when the mode changes
        if (inv is None or inv.shape != (h, w) or inv.device != x.device or inv.dtype != x.dtype
                or inv.is_inference() != torch.is_inference_mode_enabled()):
            r = self.pool_size // 2

            def count(n: int) -> torch.Tensor:
                i = torch.arange(n, device=x.device)
                return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(x.dtype)

            inv = self._inv_count = 1 / (count(h)[:, None] * count(w)[None, :])
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
class PoolFormer(BaseModule):
    """PoolFormer backbone: the GroupNorm-ed stage outputs of the official ``poolformer_*_feat``.

    Args:
        arch: 's12', 's24', 's36', 'm36', 'm48', or a dict with ``layers`` and ``embed_dims`` (one
            entry per stage) and optionally ``mlp_ratios`` (default 4) and
            ``layer_scale_init_value`` (default 1e-5).
        in_channels: Input image channels.
        pool_size: Pooling window of the token mixer.
        out_indices: Stages (0..3, negative allowed) whose normed outputs are returned, ascending.
        frozen_stages: -1 freezes nothing, 0 the stem, k >= 1 the stem and stages 0..k-1 (with their
            downsampling convs and output norms); frozen parts stay in eval mode.
        norm_eval: Keep BatchNorm layers in eval mode while training. The official model has
            GroupNorms only (no running statistics): it matters only with a BatchNorm ``norm_cfg``.
        norm_cfg: Norm of the blocks and outputs. Official: GroupNorm with one group (eps 1e-5).
        drop_path_rate: Stochastic depth; block b of n gets ``drop_path_rate * b / (n - 1)``.
        init_cfg: mmengine init config. ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` (with
            ``prefix='backbone.'`` for detectors) loads any official PoolFormer checkpoint layout
            (see ``convert_poolformer_checkpoint``).

    Input (B, in_channels, H, W), any H, W; output a tuple of (B, C_i, ~H/2^(i+2), ~W/2^(i+2)).
    """

    arch_settings: Dict[str, dict] = {
        's12': dict(layers=[2, 2, 6, 2], embed_dims=[64, 128, 320, 512],
                    layer_scale_init_value=1e-5),
        's24': dict(layers=[4, 4, 12, 4], embed_dims=[64, 128, 320, 512],
                    layer_scale_init_value=1e-5),
        's36': dict(layers=[6, 6, 18, 6], embed_dims=[64, 128, 320, 512],
                    layer_scale_init_value=1e-6),
        'm36': dict(layers=[6, 6, 18, 6], embed_dims=[96, 192, 384, 768],
                    layer_scale_init_value=1e-6),
        'm48': dict(layers=[8, 8, 24, 8], embed_dims=[96, 192, 384, 768],
                    layer_scale_init_value=1e-6),
    }
    _arch_keys = {'layers', 'embed_dims', 'mlp_ratios', 'layer_scale_init_value'}

    def __init__(self,
                 arch: Union[str, dict] = 's12',
                 in_channels: int = 3,
                 pool_size: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict = dict(type='GN', num_groups=1),
                 drop_path_rate: float = 0.,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        arch = self._parse_arch(arch)
        layers, dims = arch['layers'], arch['embed_dims']
        mlp_ratios = arch.get('mlp_ratios', 4)
        if not isinstance(mlp_ratios, (list, tuple)):
            mlp_ratios = [mlp_ratios] * len(layers)
        self.num_stages = len(layers)
        self.embed_dims = list(dims)

        if isinstance(out_indices, int):
            out_indices = [out_indices]
        out = sorted({i + self.num_stages if i < 0 else i for i in out_indices})
        if not out or out[0] < 0 or out[-1] >= self.num_stages:
            raise ValueError(f'out_indices {tuple(out_indices)} must be stage indices in '
                             f'[-{self.num_stages}, {self.num_stages})')
        self.out_indices = tuple(out)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} must be in [-1, {self.num_stages}]')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.patch_embed = PatchEmbed(in_channels, dims[0], 7, stride=4, padding=2)
        total = sum(layers)
        network = []
        for i, depth in enumerate(layers):
            if i > 0:
                network.append(PatchEmbed(dims[i - 1], dims[i], 3, stride=2, padding=1))
            first = sum(layers[:i])
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

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_settings:
                raise ValueError(f'unknown PoolFormer arch {arch!r}; choose from '
                                 f'{sorted(cls.arch_settings)} or pass a dict')
            return cls.arch_settings[arch.lower()]
        if not isinstance(arch, dict) or not {'layers', 'embed_dims'} <= set(arch):
            raise ValueError(
                f'a PoolFormer arch dict needs "layers" and "embed_dims", got {arch!r}')
        unknown = set(arch) - cls._arch_keys
        if unknown:
            raise ValueError(f'unknown PoolFormer arch keys {sorted(unknown)}; '
                             f'allowed: {sorted(cls._arch_keys)}')
        if len(arch['layers']) != len(arch['embed_dims']):
            raise ValueError(f'arch layers {arch["layers"]} and embed_dims {arch["embed_dims"]} '
                             'differ in length')
        return dict(arch)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, C, H, W) -> tuple of the normed outputs of the stages in ``out_indices``."""
        x = self.patch_embed(x)
        outs = []
        for i in range(self.num_stages):
            if i > 0:
                x = self.network[2 * i - 1](x)
            x = self.network[2 * i](x)
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{2 * i}')(x))
        return tuple(outs)

    def _stage_modules(self, i: int) -> List[nn.Module]:
        mods = [self.network[2 * i]] + ([self.network[2 * i - 1]] if i > 0 else [])
        if i in self.out_indices:
            mods.append(getattr(self, f'norm{2 * i}'))
        return mods

    def _freeze_stages(self) -> None:
        mods = [self.patch_embed] if self.frozen_stages >= 0 else []
        for i in range(max(self.frozen_stages, 0)):
            mods += self._stage_modules(i)
        for m in mods:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'PoolFormer':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self) -> None:
        """Other ``init_cfg`` entries, then a ``Pretrained`` checkpoint of any official layout."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else (
            [self.init_cfg] if self.init_cfg else [])
        pretrained = [c for c in cfgs if getattr(c.get('type'), '__name__', c.get('type'))
                      in ('Pretrained', 'PretrainedInit')]
        if not pretrained:
            super().init_weights()
            return
        if len(pretrained) > 1:
            raise ValueError(f'PoolFormer takes one Pretrained init_cfg, got {pretrained}')
        others = [c for c in cfgs if c not in pretrained]
        if others:
            self.init_cfg, saved = others, self.init_cfg
            super().init_weights()
            self.init_cfg = saved
        cfg = pretrained[0]
        load_poolformer_checkpoint(self, cfg['checkpoint'], prefix=cfg.get('prefix'),
                                   map_location=cfg.get('map_location', 'cpu'))
        self._is_init = True


# ------------------------------------------------------------------------------------ checkpoints
_OUT_NORM = re.compile(r'^norm\d+\.')
_TRUNK = re.compile(r'^(patch_embed|network)\.')


def convert_poolformer_checkpoint(
        checkpoint: dict,
        prefix: Optional[str] = None,
        filename: str = '<checkpoint>'
) -> Tuple['OrderedDict[str, torch.Tensor]', List[str], int]:
    """An official PoolFormer checkpoint in mmattn's layout.

    Accepted layouts (``checkpoint`` is the loaded file; ``state_dict`` / ``model`` wrappers are
    unwrapped):

    * sail-sg classifier ``poolformer_*.pth.tar``: raw ``patch_embed`` / ``network`` / ``norm`` /
      ``head`` keys;
    * sail-sg mmdet/mmseg checkpoints and mmseg segmentors built on ``mmpretrain.PoolFormer``:
      ``backbone.patch_embed`` / ``backbone.network`` / ``backbone.norm{0,2,4,6}`` (+ neck, heads);
    * mmpretrain classifiers: ``backbone.patch_embed`` / ``backbone.network`` / ``backbone.norm6``
      + ``head.fc``.

    ``prefix`` selects the backbone inside a larger model (``'backbone.'``); when None it is
    inferred. Classifier-only keys are dropped, as the official dense classes do when loading a
    classifier: sail-sg's ``norm`` / ``head`` and, in an mmpretrain classifier, its head and its
    final norm (``norm6``, the same tensor as sail-sg's ``norm``).

    Returns ``(state_dict, dropped classifier keys, n_ignored)``, ``n_ignored`` counting the keys
    outside ``prefix`` (neck, heads).
    """
    sd = state_dict_of(checkpoint, filename)
    if prefix is None:
        prefix = 'backbone.' if ('patch_embed.proj.weight' not in sd
                                 and 'backbone.patch_embed.proj.weight' in sd) else ''
    elif prefix and not any(k.startswith(prefix) for k in sd) and 'patch_embed.proj.weight' in sd:
        prefix = ''  # a classifier given with the detectors' prefix: take its raw layout
    inside = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    outside = [k for k in sd if not k.startswith(prefix)]
    classifier_head = [k for k in outside if k.startswith('head.')]
    is_classifier = bool(classifier_head) or 'head.weight' in inside or 'norm.weight' in inside

    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    dropped = list(classifier_head)
    for k, v in inside.items():
        if k.startswith(('head.', 'norm.')) or (is_classifier and _OUT_NORM.match(k)):
            dropped.append(prefix + k)
        else:
            out[k] = v
    return out, dropped, len(outside) - len(classifier_head)


def check_poolformer_state_dict(
        model: 'PoolFormer', state_dict: Dict[str, torch.Tensor],
        source: str) -> Tuple['OrderedDict[str, torch.Tensor]', List[str], List[str]]:
    """Match a converted state_dict to ``model``; raise one error naming ``source`` on a mismatch.

    Trunk keys (stem, blocks, downsampling) must match exactly. Output norms may be missing (they
    keep their init, like the official dense model loading a classifier) or unused (not in
    ``out_indices``: dropped). Returns ``(state_dict to load, missing norms, unused norms)``.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    missing_trunk = [k for k in missing if not _OUT_NORM.match(k)]
    unused = [k for k in state_dict if k not in own and _OUT_NORM.match(k)]
    unexpected = [k for k in state_dict if k not in own and not _OUT_NORM.match(k)]
    shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
              for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if missing_trunk or unexpected or shapes:

        def few(keys: List[str]) -> str:
            return ', '.join(keys[:8]) + (f', ... ({len(keys)} in all)' if len(keys) > 8 else '')

        problems = [f'missing keys: {few(missing_trunk)}' if missing_trunk else '',
                    f'unexpected keys: {few(unexpected)}' if unexpected else '',
                    f'shape mismatches: {few(shapes)}' if shapes else '']
        layers = [len(model.network[2 * i]) for i in range(model.num_stages)]
        raise RuntimeError(f'{source} is not a checkpoint of this PoolFormer (layers {layers}, '
                           f'embed_dims {model.embed_dims}): '
                           + '; '.join(p for p in problems if p))
    keep = OrderedDict((k, v) for k, v in state_dict.items() if k in own)
    return keep, [k for k in missing if _OUT_NORM.match(k)], unused


def load_poolformer_checkpoint(model: 'PoolFormer',
                               filename: str,
                               prefix: Optional[str] = None,
                               map_location: str = 'cpu') -> Dict[str, List[str]]:
    """Load an official PoolFormer checkpoint (path or URL) into ``model``; log what was left out.

    Returns the log as a dict: ``dropped`` classifier keys, ``missing`` and ``unused`` output norms.
    """
    checkpoint = CheckpointLoader.load_checkpoint(
        filename, map_location=map_location, logger='current')
    state_dict, dropped, ignored = convert_poolformer_checkpoint(checkpoint, prefix, filename)
    if not any(_TRUNK.match(k) for k in state_dict):
        where = f' under prefix {prefix!r}' if prefix else ''
        raise RuntimeError(f'{filename} holds no PoolFormer weights (no patch_embed.* / network.* '
                           f'keys{where}); first keys: '
                           f'{list(state_dict_of(checkpoint, filename))[:5]}')
    state_dict, missing, unused = check_poolformer_state_dict(model, state_dict, filename)
    model.load_state_dict(state_dict, strict=False)
    print_log(f'PoolFormer: loaded {len(state_dict)} tensors from {filename}'
              + (f'; ignored {ignored} keys outside the backbone' if ignored else ''),
              logger='current')
    if dropped:
        print_log(f'PoolFormer: dropped classifier-only keys: {", ".join(dropped)}',
                  logger='current')
    if unused:
        print_log(f'PoolFormer: dropped output norms not in out_indices: {", ".join(unused)}',
                  logger='current')
    if missing:
        print_log('PoolFormer: output norms not in the checkpoint keep their initialisation: '
                  f'{", ".join(missing)}', logger='current',
                  level=logging.INFO if dropped else logging.WARNING)
    return dict(dropped=dropped, missing=missing, unused=unused)
