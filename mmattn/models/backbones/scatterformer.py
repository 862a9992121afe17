"""ScatterFormer's 3D part: points -> dynamic voxels -> sparse stem -> SLA stages -> BEV map.

`ScatterFormer: Efficient Voxel Transformer with Scattered Linear Attention`, He et al.,
ECCV 2024, https://arxiv.org/abs/2401.00912. Official code: skyhehe123/ScatterFormer (an OpenPCDet
fork); this is an independent re-implementation following the released code where it differs from
the paper (spec ``scatterformer.md`` §1.13).

Pipeline (Waymo values) in mmdet3d's slots::

    points [Np, 5] (x, y, z, tanh(intensity), tanh(elongation)) per sample
      -> Det3DDataPreprocessor(voxel_type='dynamic')   per-point coords (b, z, y, x), 32x480x480
      -> DynamicPFNVFE (voxel_encoder)    voxel features [V, 64]
      -> ScatterFormerMiddleEncoder (middle_encoder):
           CPE stem       SubM 64->128, 3 SparseBasicBlocks, SparseConv (3,1,1)/(2,1,1): z 33->16
           stage 1        3 x (x += SLA(BN(x)); CWI + FFN), windows 12x12 BEV columns, BN
           down           SparseConv 3/2/1: 16x480x480 -> 8x240x240
           stage 2        3 layers, windows 12x12 on the 240 grid, BN
           AttnPillarPool one query per (b, y, x) column: max over z, attends over the column
           BEV scatter    [B, 128, 240, 240]
      -> CascadeDEDBackbone (backbone) -> CenterHeadIoU (bbox_head)

:class:`ScatterFormerBackbone` stacks the voxelisation, VFE and middle encoder for raw points
(benchmarks). The sparse convs pick their backend in :mod:`mmattn.ops.sparse_conv`; the SLA op
through :func:`mmattn.ops.sla.scattered_linear_attention`.
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmattn.models.layers.sla_layer import SLALayer
from mmattn.ops.sla import cu_seqlens_from_counts
from mmattn.ops.sparse_conv import SparseConv3d, SparseVoxels, SubMConv3d, SubMDepthwiseConv3d
from mmattn.registry import MODELS
from mmattn.utils.checkpoint import CheckpointError, register_family, strip_prefix
from .base import BackboneMixin

__all__ = ['ScatterFormerBackbone', 'ScatterFormerMiddleEncoder', 'DynamicPFNVFE',
           'dynamic_voxel_coords', 'window_partition']


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that, in training, normalises a batch of 0 or 1 rows with the running
    statistics (and leaves them unchanged) instead of raising: a frame with one voxel trains."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] <= 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


def _bn(channels: int, momentum: float = 0.01) -> nn.BatchNorm1d:
    return BatchNorm1d(channels, eps=1e-3, momentum=momentum)


def scatter_max(x: Tensor, index: Tensor, size: int) -> Tensor:
    """Per-group max of rows ``x [N, C]`` with groups ``index [N]`` -> ``[size, C]``."""
    out = x.new_zeros(size, x.shape[1])
    return out.scatter_reduce(0, index[:, None].expand_as(x), x, 'amax', include_self=False)


def dynamic_voxel_coords(points: Sequence[Tensor], point_cloud_range: Sequence[float],
                         voxel_size: Sequence[float]) -> Tuple[Tensor, Tensor]:
    """Per-point voxel coordinates, as ``Det3DDataPreprocessor(voxel=True, voxel_type='dynamic')``
    computes them with mmcv's ``dynamic_voxelize`` (pure PyTorch, for the points-in stack).

    Args:
        points: per sample ``[Np_b, F]`` with xyz in the first three columns.

    Returns:
        all points ``[Np, F]`` (concatenated) and ``[Np, 4]`` int32 ``(b, z, y, x)``; ``z, y, x``
        are ``-1`` for points outside the range (or with non-finite xyz).
    """
    pcr = torch.as_tensor(point_cloud_range, dtype=torch.float32)
    vs = torch.as_tensor(voxel_size, dtype=torch.float32)
    grid = torch.round((pcr[3:] - pcr[:3]) / vs).long()  # (X, Y, Z)
    coors = []
    for b, p in enumerate(points):
        if p.dim() != 2 or p.shape[1] < 3:
            raise ValueError(f'dynamic_voxel_coords: sample {b} has points of shape '
                             f'{tuple(p.shape)}, expected [N, >=3]')
        rel = torch.floor((p[:, :3].float() - pcr[:3].to(p.device)) / vs.to(p.device))
        inside = (torch.isfinite(rel) & (rel >= 0) & (rel < grid.to(p.device))).all(1)
        zyx = torch.where(inside[:, None], rel.nan_to_num(-1).long()[:, [2, 1, 0]], -1)
        coors.append(torch.cat([zyx.new_full((p.shape[0], 1), b), zyx], 1).int())
    if not coors:
        return torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.int32)
    return torch.cat(list(points)), torch.cat(coors)


@MODELS.register_module()
class DynamicPFNVFE(nn.Module):
    """Dynamic voxel feature encoder (official ``DynamicVoxelVFE`` with two ``PFNLayerV2``).

    Per point: the raw features, xyz minus the voxel's point mean, xyz minus the voxel centre
    (``in_channels + 6``); Linear+BN+ReLU, concat the voxel max, Linear+BN+ReLU, voxel max.
    This is the math and the state-dict layout of mmdet3d's ``DynamicVFE(with_cluster_center=True,
    with_voxel_center=True, feat_channels=...)`` (whose voxel scatter, mmcv's ``DynamicScatter``,
    has no CPU kernel), so either loads the other's weights.

    Args:
        in_channels: point features used (x, y, z, tanh intensity, tanh elongation).
        feat_channels: widths of the PFN layers (official Waymo: ``(32, 64)``).
        voxel_size, point_cloud_range: the voxel layer's.
        norm_momentum: BatchNorm momentum (eps 1e-3).
    """

    def __init__(self, in_channels: int = 5, feat_channels: Sequence[int] = (32, 64),
                 voxel_size: Sequence[float] = (0.32, 0.32, 0.1875),
                 point_cloud_range: Sequence[float] = (-76.8, -76.8, -2, 76.8, 76.8, 4.0),
                 norm_momentum: float = 0.01):
        super().__init__()
        self.voxel_size, self.point_cloud_range = list(voxel_size), list(point_cloud_range)
        self.in_channels = in_channels
        chans = [in_channels + 6] + list(feat_channels)
        self.vfe_layers = nn.ModuleList(
            nn.Sequential(nn.Linear(chans[i] * (2 if i else 1), chans[i + 1], bias=False),
                          _bn(chans[i + 1], norm_momentum), nn.ReLU(inplace=True))
            for i in range(len(feat_channels)))
        self.out_channels = chans[-1]

    def forward(self, features: Tensor, coors: Tensor) -> Tuple[Tensor, Tensor]:
        """Points ``[Np, >=in_channels]`` and their coords ``[Np, 4]`` ``(b, z, y, x)`` (``-1``:
        outside) -> voxel features ``[V, C]`` and the voxels' coords ``[V, 4]`` int64, sorted."""
        if features.dim() != 2 or features.shape[1] < self.in_channels or \
                coors.shape != (features.shape[0], 4):
            raise ValueError(f'DynamicPFNVFE: points of shape {tuple(features.shape)} with coors '
                             f'of shape {tuple(coors.shape)}, expected [N, >={self.in_channels}] '
                             f'and [N, 4]')
        keep = (coors[:, 1:] >= 0).all(1)
        pts, coors = features[keep, :self.in_channels], coors[keep].long()
        dims = coors.amax(0) + 1 if coors.shape[0] else coors.new_ones(4)
        key = ((coors[:, 0] * dims[1] + coors[:, 1]) * dims[2] + coors[:, 2]) * dims[3] + \
            coors[:, 3]  # one int64 per voxel, ordered like (b, z, y, x)
        uniq, inv = torch.unique(key, return_inverse=True)
        coords = torch.stack([uniq // (dims[1] * dims[2] * dims[3]),
                              uniq // (dims[2] * dims[3]) % dims[1], uniq // dims[3] % dims[2],
                              uniq % dims[3]], 1)
        num_vox = coords.shape[0]
        xyz = pts[:, :3]
        cnt = torch.bincount(inv, minlength=num_vox).clamp(min=1).to(xyz)
        mean = xyz.new_zeros(num_vox, 3).index_add(0, inv, xyz) / cnt[:, None]
        vs = xyz.new_tensor(self.voxel_size)
        centre = coors[:, [3, 2, 1]].to(xyz) * vs + vs / 2 + \
            xyz.new_tensor(self.point_cloud_range[:3])
        x = torch.cat([pts, xyz - mean[inv], xyz - centre], 1)
        for i, layer in enumerate(self.vfe_layers):
            point_feats = layer(x)
            x_max = scatter_max(point_feats, inv, num_vox)
            x = x_max if i == len(self.vfe_layers) - 1 else torch.cat([point_feats, x_max[inv]], 1)
        return x, coords


class SparseBasicBlock(nn.Module):
    """SubM 3x3x3 -> BN -> ReLU -> SubM 3x3x3 -> BN -> +identity -> ReLU (convs with bias)."""

    def __init__(self, channels: int, indice_key: str, backend: str = 'auto'):
        super().__init__()
        self.conv1 = SubMConv3d(channels, channels, 3, bias=True, indice_key=indice_key,
                                backend=backend)
        self.bn1 = _bn(channels)
        self.conv2 = SubMConv3d(channels, channels, 3, bias=True, indice_key=indice_key,
                                backend=backend)
        self.bn2 = _bn(channels)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        out = F.relu(self.bn1(self.conv1(x).features))
        out = self.bn2(self.conv2(x.replace(out)).features)
        return x.replace(F.relu(out + x.features))


class CPE(nn.Module):
    """The sparse-conv stem: SubM stem, 3 residual blocks, z-only strided conv (z: Z -> Z/2)."""

    def __init__(self, in_channels: int = 64, channels: int = 128, num_blocks: int = 3,
                 backend: str = 'auto'):
        super().__init__()
        self.conv_in = SubMConv3d(in_channels, channels, 3, bias=False, indice_key='subm1',
                                  backend=backend)
        self.bn_in = _bn(channels)
        self.blocks = nn.ModuleList(
            SparseBasicBlock(channels, 'stem', backend) for _ in range(num_blocks))
        self.conv_out = SparseConv3d(channels, channels, (3, 1, 1), (2, 1, 1), 0, bias=False,
                                     backend=backend)
        self.bn_out = _bn(channels)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        x = x.replace(F.relu(self.bn_in(self.conv_in(x).features)))
        for blk in self.blocks:
            x = blk(x)
        x = self.conv_out(x)
        return x.replace(F.relu(self.bn_out(x.features)))


def unique_rows(rows: Tensor) -> Tuple[Tensor, Tensor]:
    """``torch.unique(rows, dim=0, return_inverse=True)`` for ``[N, 3]`` int rows with entries in
    ``[0, 2**21)`` (batch index, grid cells), through one int64 key per row: the same sorted rows
    and inverse, without ``unique(dim=0)``'s row-by-row comparisons (130 ms of a 1.6 s CPU
    training step of the sample config)."""
    r = rows.long()
    key = (r[:, 0] << 42) | (r[:, 1] << 21) | r[:, 2]
    uniq, inverse = torch.unique(key, return_inverse=True)
    mask = (1 << 21) - 1
    return torch.stack([uniq >> 42, (uniq >> 21) & mask, uniq & mask], 1).to(rows.dtype), inverse


def window_partition(coords: Tensor, win_size: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Group sites into ``win_size x win_size`` BEV columns (z plays no part).

    Returns:
        ``perm [N]`` sorting the sites by window, the sorted window id per site ``[N]``, and
        ``counts``/``offsets`` int64 ``[M]`` (windows ordered by ``(b, y // W, x // W)``).
    """
    key = torch.stack([coords[:, 0], coords[:, 2] // win_size, coords[:, 3] // win_size], 1)
    if key.shape[0] == 0:
        empty = coords.new_zeros(0, dtype=torch.long)
        return empty, empty, empty, empty
    _, win_ids = unique_rows(key)
    win_ids, perm = torch.sort(win_ids, stable=True)
    counts = torch.bincount(win_ids)
    offsets = torch.cumsum(counts, 0) - counts
    return perm, win_ids, counts, offsets


class CWIFFN(nn.Module):
    """Cross-window interaction + FFN (``CWI_FFN_Layer``).

    ``x' = bn(x)``; channel quarters go through a submanifold depthwise 3x3x3 conv, a (1, 1, W+1)
    conv along x, a (1, W+1, 1) conv along y and identity; ``x'' = x' + concat(...)``; then
    ``x'' + fc2(relu(fc1(bn2(x''))))``.
    """

    def __init__(self, dim: int, win_size: int, ffn_ratio: int = 2, stage: int = 0):
        super().__init__()
        if dim % 4:
            raise ValueError(f'CWIFFN: dim {dim} must split into 4 channel groups')
        c = dim // 4
        self.bn = _bn(dim)
        self.conv_k = SubMDepthwiseConv3d(c, (3, 3, 3), indice_key=f'{stage}k')
        self.conv_h = SubMDepthwiseConv3d(c, (1, 1, win_size + 1), indice_key=f'{stage}h')
        self.conv_w = SubMDepthwiseConv3d(c, (1, win_size + 1, 1), indice_key=f'{stage}w')
        self.bn2 = _bn(dim)
        self.fc1 = nn.Linear(dim, dim * ffn_ratio)
        self.fc2 = nn.Linear(dim * ffn_ratio, dim)

    def forward(self, x: Tensor, sites: SparseVoxels) -> Tensor:
        x = self.bn(x)
        a, b, c, d = x.chunk(4, dim=1)
        x = x + torch.cat([self.conv_k(a, sites), self.conv_h(b, sites), self.conv_w(c, sites), d],
                          1)
        return x + self.fc2(F.relu(self.fc1(self.bn2(x))))


class ScatterFormerLayer(nn.Module):
    """``x = x + SLA(BN(x))`` over the stage's windows, then :class:`CWIFFN`."""

    def __init__(self, dim: int, num_heads: int, win_size: int, stage: int,
                 backend: str = 'auto'):
        super().__init__()
        self.norm = _bn(dim)
        self.attn = SLALayer(dim, num_heads, backend=backend)
        self.cwi_ffn = CWIFFN(dim, win_size, stage=stage)

    def forward(self, x: Tensor, sites: SparseVoxels, cu_seqlens: Tensor) -> Tensor:
        x = x + self.attn(self.norm(x), cu_seqlens)
        return self.cwi_ffn(x, sites)


class ScatterFormerStage(nn.Module):
    """Window partition once (no shifting), ``depth`` layers, then BN."""

    def __init__(self, dim: int, depth: int, num_heads: int, win_size: int, stage: int,
                 backend: str = 'auto'):
        super().__init__()
        self.win_size = win_size
        self.layers = nn.ModuleList(
            ScatterFormerLayer(dim, num_heads, win_size, stage, backend) for _ in range(depth))
        self.norm = _bn(dim)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        perm, _, counts, _ = window_partition(x.coords, self.win_size)
        cu_seqlens = cu_seqlens_from_counts(counts)
        x = x.permute(perm)
        feats = x.features
        for layer in self.layers:
            feats = layer(feats, x, cu_seqlens)
        return x.replace(self.norm(feats))


class AttnPillarPool(nn.Module):
    """Voxels of each (b, y, x) column -> one pillar feature by attention.

    Query: the max over the column's active voxels and 0 (the official query is spconv's
    ``SparseMaxPool3d``, whose max starts from 0 on CPU and GPU); keys/values: the column's voxels at their z
    slot (``[num_pillars, P, C]``, empty slots masked), with a learned z embedding added to the keys
    only; ``LayerNorm(MHA(query) + query)``. Queries and columns are paired by coordinates (the
    official code relies on spconv's output order, which spconv 2.x does not guarantee).
    """

    def __init__(self, dim: int, pillar_size: int, num_heads: int = 8):
        super().__init__()
        self.pillar_size = pillar_size
        self.z_embed = nn.Embedding(pillar_size, dim)
        nn.init.normal_(self.z_embed.weight, std=0.01)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: SparseVoxels) -> Tuple[Tensor, Tensor]:
        """-> pillar features ``[P_n, C]`` and their coords ``[P_n, 3]`` ``(b, y, x)``."""
        c = x.coords
        if x.spatial_shape[0] > self.pillar_size:
            raise ValueError(f'AttnPillarPool: grid depth {x.spatial_shape[0]} exceeds the pillar '
                             f'size {self.pillar_size}')
        col = torch.stack([c[:, 0], c[:, 2], c[:, 3]], 1)
        if col.shape[0] == 0:
            return x.features.new_zeros(0, x.features.shape[1]), col
        pillars, inv = unique_rows(col)
        num = pillars.shape[0]
        query = scatter_max(x.features, inv, num).clamp(min=0)
        kv = x.features.new_zeros(num, self.pillar_size, x.features.shape[1])
        kv = kv.index_put((inv, c[:, 1]), x.features)
        pad = torch.ones(num, self.pillar_size, dtype=torch.bool, device=c.device)
        pad[inv, c[:, 1]] = False
        return self.norm(self._attend(query, kv + self.z_embed.weight[None], kv, pad) + query), \
            pillars

    def _attend(self, query: Tensor, keys: Tensor, values: Tensor, pad: Tensor) -> Tensor:
        """``self.attn(query[:, None], keys, values, key_padding_mask=pad)[0][:, 0]`` written as
        products and sums over the few z slots (``nn.MultiheadAttention``'s math and weights,
        without dropout, which the module does not use): query ``[N, C]``, keys / values
        ``[N, P, C]``, pad ``[N, P]`` -> ``[N, C]``; on a CPU faster than its SDPA call for P <= 8
        (configs/scatterformer/README.md, "Training on the sample")."""
        attn = self.attn
        n, p, c = keys.shape
        h = attn.num_heads
        wq, wk, wv = attn.in_proj_weight.chunk(3)
        bq, bk, bv = attn.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).view(n, 1, h, c // h) * (c // h)**-0.5
        k = F.linear(keys, wk, bk).view(n, p, h, c // h)
        v = F.linear(values, wv, bv).view(n, p, h, c // h)
        w = (q * k).sum(-1).masked_fill(pad[..., None], float('-inf')).softmax(1)  # [N, P, H]
        return attn.out_proj((w[..., None] * v).sum(1).reshape(n, c))


@MODELS.register_module()
class ScatterFormerMiddleEncoder(BackboneMixin, BaseModule):
    """mmdet3d's ``middle_encoder`` slot: voxel features -> sparse stem -> SLA stages (with CWI)
    -> attention pillar pooling -> the dense BEV map (where mmdet3d's ``SparseEncoder`` /
    ``PointPillarsScatter`` put the BEV scatter).

    Args:
        in_channels: voxel feature width (the voxel encoder's output).
        sparse_shape: ``(Z + 1, Y, X)`` of the voxel grid (OpenPCDet pads z by one).
        dim, num_heads, depths, win_size: transformer width, heads, layers per stage, window side.
        pool_heads: heads of the pillar pooling attention.
        stem_blocks: residual blocks of the sparse stem (official: 3).
        sla_backend: ``'auto' | 'reference' | 'torch' | 'triton'`` for every SLA layer.
        sparse_conv_backend: ``'auto' | 'spconv' | 'mmcv' | 'rulebook'`` for the stem and
            down-sampling convs (:mod:`mmattn.ops.sparse_conv`; CWI's depthwise convs always use
            the rule book).
        norm_momentum: momentum of every BatchNorm (official: eps 1e-3, momentum 0.01, tuned for
            tens of thousands of iterations; a short run needs a larger one for usable running
            statistics in eval mode).
        frozen_stages: -1 nothing; 0 the stem (CPE); k the stem and stages 0..k-1 (each with the
            sparse downsampling before it; the last with the pillar pooling).
        norm_eval: keep every BatchNorm in eval mode while training.
        init_cfg: mmengine init config (dict or list).

    Input: voxel features ``[V, in_channels]``, coords ``[V, 4]`` ``(b, z, y, x)``, batch size.
    Output: BEV ``[B, dim, Y / 2, X / 2]``.
    """

    def __init__(self,
                 in_channels: int = 64,
                 sparse_shape: Sequence[int] = (33, 480, 480),
                 dim: int = 128,
                 num_heads: int = 4,
                 depths: Sequence[int] = (3, 3),
                 win_size: int = 12,
                 pool_heads: int = 8,
                 stem_blocks: int = 3,
                 sla_backend: str = 'auto',
                 sparse_conv_backend: str = 'auto',
                 norm_momentum: float = 0.01,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg)
        if len(sparse_shape) != 3:
            raise ValueError(f'{type(self).__name__}: sparse_shape {sparse_shape} is not (Z, Y, X)')
        self.num_stages = len(depths)
        self.frozen_stages = self._check_frozen_stages(frozen_stages, len(depths))
        self.norm_eval = norm_eval
        self.sparse_shape = tuple(int(v) for v in sparse_shape)
        self.cpe = CPE(in_channels, dim, stem_blocks, backend=sparse_conv_backend)
        self.stages = nn.ModuleList(
            ScatterFormerStage(dim, d, num_heads, win_size, i, sla_backend)
            for i, d in enumerate(depths))
        self.downs = nn.ModuleList(
            SparseConv3d(dim, dim, 3, 2, 1, bias=False, backend=sparse_conv_backend)
            for _ in range(len(depths) - 1))
        self.pool = AttnPillarPool(dim, self.sparse_shape[0] // 4, pool_heads)
        self.dim = dim
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = norm_momentum
        self._freeze_stages()

    def _stage_modules(self, i: int) -> List[nn.Module]:
        if i < 0:
            return [self.cpe]
        mods = [self.stages[i]] + ([self.downs[i - 1]] if i > 0 else [])
        return mods + ([self.pool] if i == self.num_stages - 1 else [])

    def forward(self, voxel_features: Tensor, coors: Tensor, batch_size: int) -> Tensor:
        x = SparseVoxels(voxel_features, coors.long(), self.sparse_shape, int(batch_size))
        x = self.cpe(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.downs):
                x = self.downs[i](x)
        pillar_feats, pillars = self.pool(x)
        _, ny, nx = x.spatial_shape
        bev = pillar_feats.new_zeros(int(batch_size), ny, nx, self.dim)
        bev[pillars[:, 0], pillars[:, 1], pillars[:, 2]] = pillar_feats
        return bev.permute(0, 3, 1, 2).contiguous()


@MODELS.register_module()
class ScatterFormerBackbone(ScatterFormerMiddleEncoder):
    """Points in, BEV out: :func:`dynamic_voxel_coords` + :class:`DynamicPFNVFE` (``self.vfe``) +
    :class:`ScatterFormerMiddleEncoder`, for benchmarks and use outside mmdet3d. The detector
    (:class:`~mmattn.models.detectors.scatterformer.ScatterFormer`) uses mmdet3d's slots instead.

    Args:
        point_cloud_range: ``[x0, y0, z0, x1, y1, z1]`` metres.
        voxel_size: ``[vx, vy, vz]`` metres.
        in_channels: point features used.
        vfe_channels: official ``VFE.NUM_FILTERS`` (every layer but the last is halved:
            ``(64, 64)`` -> PFN widths ``(32, 64)``).
        frozen_stages: as :class:`ScatterFormerMiddleEncoder`, the stem being the VFE and CPE.
        **kwargs: the rest of :class:`ScatterFormerMiddleEncoder`'s arguments.

    Input: list of per-sample point tensors ``[Np_b, >=in_channels]``.
    Output: BEV ``[B, dim, Y / 2, X / 2]``.
    """

    def __init__(self,
                 point_cloud_range: Sequence[float] = (-76.8, -76.8, -2, 76.8, 76.8, 4.0),
                 voxel_size: Sequence[float] = (0.32, 0.32, 0.1875),
                 in_channels: int = 5,
                 vfe_channels: Sequence[int] = (64, 64),
                 norm_momentum: float = 0.01,
                 frozen_stages: int = -1,
                 **kwargs):
        pcr = torch.tensor(point_cloud_range, dtype=torch.float64)
        vs = torch.tensor(voxel_size, dtype=torch.float64)
        grid = torch.round((pcr[3:] - pcr[:3]) / vs).long().tolist()  # (X, Y, Z)
        widths = [c // 2 for c in vfe_channels[:-1]] + [vfe_channels[-1]]
        super().__init__(in_channels=widths[-1], sparse_shape=(grid[2] + 1, grid[1], grid[0]),
                         norm_momentum=norm_momentum, **kwargs)
        self.grid_size = grid
        self.vfe = DynamicPFNVFE(in_channels, widths, voxel_size, point_cloud_range, norm_momentum)
        self.frozen_stages = self._check_frozen_stages(frozen_stages, self.num_stages)
        self._freeze_stages()

    def _stage_modules(self, i: int) -> List[nn.Module]:
        return ([self.vfe] if i < 0 else []) + super()._stage_modules(i)

    def forward(self, points: List[Tensor]) -> Tensor:  # type: ignore[override]
        pts, coors = dynamic_voxel_coords(points, self.vfe.point_cloud_range,
                                          self.vfe.voxel_size)
        feats, coords = self.vfe(pts, coors)
        return super().forward(feats, coords, len(points))


_OLD_VFE = re.compile(r'backbone\.vfe\.pfn_layers\.(\d+)\.(linear|norm)\.(.+)')


def scatterformer_filter_fn(state_dict: Dict[str, Tensor], prefix: str = '',
                            model: Optional[nn.Module] = None) -> 'OrderedDict[str, Tensor]':
    """A whole-detector ScatterFormer state_dict (keys under ``prefix``) in the slot layout.

    The earlier layout (before the detector used mmdet3d's slots) kept the VFE and the sparse
    part in ``backbone`` and the DED BEV backbone as ``neck``; its keys are renamed::

        backbone.vfe.pfn_layers.{i}.linear.* -> voxel_encoder.vfe_layers.{i}.0.*
        backbone.vfe.pfn_layers.{i}.norm.*   -> voxel_encoder.vfe_layers.{i}.1.*
        backbone.{cpe,stages,downs,pool}.*   -> middle_encoder.*
        neck.*                               -> backbone.*

    A state_dict already in the slot layout passes unchanged.
    """
    sd = strip_prefix(state_dict, prefix)
    if not any(k.startswith(('backbone.vfe.', 'backbone.cpe.')) for k in sd):
        return OrderedDict(sd)
    out = OrderedDict()
    for k, v in sd.items():
        m = _OLD_VFE.fullmatch(k)
        if m:
            k = f'voxel_encoder.vfe_layers.{m[1]}.{0 if m[2] == "linear" else 1}.{m[3]}'
        elif k.startswith('backbone.'):
            k = 'middle_encoder.' + k[len('backbone.'):]
        elif k.startswith('neck.'):
            k = 'backbone.' + k[len('neck.'):]
        out[k] = v
    return out


register_family('scatterformer', scatterformer_filter_fn, 'bbox_head.shared_conv.conv.weight')


# OpenPCDet (official) module paths -> the slot layout.
_PCDET_LAYER = {'norm_layers': 'norm', 'attn_layers': 'attn', 'cffn_layers': 'cwi_ffn'}
_PCDET_RULES: List[Tuple['re.Pattern', Callable[['re.Match'], str]]] = [
    (re.compile(a), b) for a, b in (
        (r'vfe\.pfn_layers\.(\d+)\.linear\.(.+)', lambda m: m.expand(
            r'voxel_encoder.vfe_layers.\1.0.\2')),
        (r'vfe\.pfn_layers\.(\d+)\.norm\.(.+)', lambda m: m.expand(
            r'voxel_encoder.vfe_layers.\1.1.\2')),
        (r'backbone_3d\.cpe\.0\.0\.(.+)', lambda m: m.expand(r'middle_encoder.cpe.conv_in.\1')),
        (r'backbone_3d\.cpe\.0\.1\.(.+)', lambda m: m.expand(r'middle_encoder.cpe.bn_in.\1')),
        (r'backbone_3d\.cpe\.([123])\.(.+)',  # the three SparseBasicBlocks
         lambda m: f'middle_encoder.cpe.blocks.{int(m[1]) - 1}.{m[2]}'),
        (r'backbone_3d\.cpe\.4\.0\.(.+)', lambda m: m.expand(r'middle_encoder.cpe.conv_out.\1')),
        (r'backbone_3d\.cpe\.4\.1\.(.+)', lambda m: m.expand(r'middle_encoder.cpe.bn_out.\1')),
        (r'backbone_3d\.stage(\d)\.0\.(norm_layers|attn_layers|cffn_layers)\.(\d+)\.(.+)',
         lambda m: f'middle_encoder.stages.{int(m[1]) - 1}.layers.{m[3]}.'
                   f'{_PCDET_LAYER[m[2]]}.{m[4]}'),
        (r'backbone_3d\.stage(\d)\.1\.(.+)',  # the BatchNorm closing each stage
         lambda m: f'middle_encoder.stages.{int(m[1]) - 1}.norm.{m[2]}'),
        (r'backbone_3d\.stage1\.2\.(.+)', lambda m: m.expand(r'middle_encoder.downs.0.\1')),
        (r'backbone_3d\.app\.pos_embedding\.(.+)', lambda m: m.expand(
            r'middle_encoder.pool.z_embed.\1')),
        (r'backbone_3d\.app\.self_attn\.(.+)', lambda m: m.expand(r'middle_encoder.pool.attn.\1')),
        (r'backbone_3d\.app\.norm\.(.+)', lambda m: m.expand(r'middle_encoder.pool.norm.\1')),
        (r'backbone_2d\.layers\.(\d+)\.encoder\.(\d+\.\d+)\.downsample_layer\.(.+)',
         lambda m: m.expand(r'backbone.layers.\1.layers.\2.downsample.\3')),
        (r'backbone_2d\.layers\.(\d+)\.encoder\.(.+)', lambda m: m.expand(
            r'backbone.layers.\1.layers.\2')),
        (r'backbone_2d\.layers\.(\d+)\.decoder\.(.+)', lambda m: m.expand(
            r'backbone.layers.\1.upsample_layers.\2')),
        (r'backbone_2d\.layers\.(\d+)\.decoder_norm\.(.+)', lambda m: m.expand(
            r'backbone.layers.\1.norms.\2')),
    )]


def _pcdet_key(key: str) -> Optional[str]:
    """One official key in the slot layout, or ``None`` (no counterpart: the dense head)."""
    for pattern, target in _PCDET_RULES:
        m = pattern.fullmatch(key)
        if m is not None:
            return target(m)
    return None


def scatterformer_pcdet_filter_fn(state_dict: Dict[str, Tensor], prefix: str = '',
                                  model: Optional[nn.Module] = None
                                  ) -> 'OrderedDict[str, Tensor]':
    """An official (OpenPCDet) ScatterFormer state_dict -- the ``model_state`` of its
    checkpoints -- in the slot layout of :class:`~mmattn.models.detectors.ScatterFormer`::

        vfe.pfn_layers.{i}.{linear,norm}.*   -> voxel_encoder.vfe_layers.{i}.{0,1}.*
        backbone_3d.cpe.{0,1-3,4}.*           -> middle_encoder.cpe.{conv_in/bn_in,
                                                 blocks.{0-2}, conv_out/bn_out}.*
        backbone_3d.stage{k}.0.{norm,attn,cffn}_layers.{i}.*
                                              -> middle_encoder.stages.{k-1}.layers.{i}.
                                                 {norm,attn,cwi_ffn}.*
        backbone_3d.stage{k}.1.*, stage1.2.*  -> middle_encoder.stages.{k-1}.norm.*, downs.0.*
        backbone_3d.app.{pos_embedding,self_attn,norm}.*
                                              -> middle_encoder.pool.{z_embed,attn,norm}.*
        backbone_2d.layers.{i}.{encoder,decoder,decoder_norm}.* (DED)
                                              -> backbone.layers.{i}.{layers,upsample_layers,
                                                 norms}.*

    Weights keep their layout (spconv's ``[C_out, kz, ky, kx, C_in]``, depthwise
    ``[kz, ky, kx, C]``). The dense head (``dense_head.*``, the nuScenes TransFusion head) has no
    counterpart and is left out.
    """
    sd = strip_prefix(state_dict, prefix)
    out = OrderedDict()
    for k, v in sd.items():
        new = _pcdet_key(k)
        if new is not None:
            out[new] = v
    return out


class ScatterFormerBackboneParts(nn.Module):
    """``voxel_encoder`` + ``middle_encoder`` (+ ``backbone``, the DED) of the detector, sized
    from an official state_dict (converter check)."""

    def __init__(self, sd: Dict[str, Tensor]) -> None:
        super().__init__()
        from mmattn.models.necks.ded import CascadeDEDBackbone
        try:
            w_in = sd['middle_encoder.cpe.conv_in.weight']  # [dim, 3, 3, 3, C_vfe]
            pfn = [sd[f'voxel_encoder.vfe_layers.{i}.0.weight']
                   for i in range(sum(k.endswith('.0.weight') and k.startswith('voxel_encoder.')
                                      for k in sd))]
            conv_h = sd['middle_encoder.stages.0.layers.0.cwi_ffn.conv_h.weight']  # [1, 1, W+1, c]
            pillar = sd['middle_encoder.pool.z_embed.weight'].shape[0]
        except KeyError as e:
            raise CheckpointError(f'no ScatterFormer backbone key {e}') from None
        dim = w_in.shape[0]
        depths = tuple(1 + max(int(k.split('.')[4]) for k in sd
                               if k.startswith(f'middle_encoder.stages.{s}.layers.'))
                       for s in range(1 + max(int(k.split('.')[2]) for k in sd
                                              if k.startswith('middle_encoder.stages.'))))
        self.voxel_encoder = DynamicPFNVFE(pfn[0].shape[1] - 6, [p.shape[0] for p in pfn])
        self.middle_encoder = ScatterFormerMiddleEncoder(  # 4 heads: fixed in the official code
            in_channels=w_in.shape[-1], sparse_shape=(4 * pillar + 1, 8, 8), dim=dim,
            num_heads=4, depths=depths, win_size=conv_h.shape[2] - 1)
        ded = sorted({int(k.split('.')[2]) for k in sd if k.startswith('backbone.layers.')})
        if ded:
            self.backbone = CascadeDEDBackbone(dim, num_layers=len(ded), out_channels=dim)


register_family('scatterformer_pcdet', scatterformer_pcdet_filter_fn, 'backbone_3d.cpe.0.0.weight',
                model_from_state_dict=ScatterFormerBackboneParts)
