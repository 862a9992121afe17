"""ScatterFormer's 3D part: points -> dynamic voxels -> sparse stem -> SLA stages -> BEV map.

`ScatterFormer: Efficient Voxel Transformer with Scattered Linear Attention`, He et al.,
ECCV 2024, https://arxiv.org/abs/2401.00912. Official code: skyhehe123/ScatterFormer (an OpenPCDet
fork); this is an independent re-implementation following the released code where it differs from
the paper (spec ``scatterformer.md`` §1.13).

Pipeline (Waymo values)::

    points [Np, 5] (x, y, z, tanh(intensity), tanh(elongation)) per sample
      -> DynamicVFE            voxel features [V, 64], coords (b, z, y, x) on a 33x480x480 grid
      -> CPE stem              SubM 64->128 + 3 SparseBasicBlocks + SparseConv (3,1,1)/(2,1,1): z 33->16
      -> stage 1               3 x (x += SLA(BN(x)); CWI + FFN), windows 12x12 BEV columns, BN
      -> down                  SparseConv 3/2/1: 16x480x480 -> 8x240x240
      -> stage 2               3 layers, windows 12x12 on the 240 grid, BN
      -> AttnPillarPool        one query per (b, y, x) column: max over z, attends over the column
      -> BEV                   [B, 128, 240, 240]

Every sparse operation is pure PyTorch (:mod:`mmattn.ops.sparse_conv`); the SLA op picks its
backend (Triton on CUDA) through :func:`mmattn.ops.sla.scattered_linear_attention`.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmattn.models.layers.sla_layer import SLALayer
from mmattn.ops.sla import cu_seqlens_from_counts
from mmattn.ops.sparse_conv import SparseConv3d, SparseVoxels, SubMConv3d, SubMDepthwiseConv3d
from mmattn.registry import MODELS
from .base import BackboneMixin

__all__ = ['ScatterFormerBackbone', 'DynamicVFE', 'voxelize', 'window_partition']


def _bn(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


def scatter_max(x: Tensor, index: Tensor, size: int) -> Tensor:
    """Per-group max of rows ``x [N, C]`` with groups ``index [N]`` -> ``[size, C]``."""
    out = x.new_zeros(size, x.shape[1])
    return out.scatter_reduce(0, index[:, None].expand_as(x), x, 'amax', include_self=False)


def voxelize(points: Sequence[Tensor], point_cloud_range: Sequence[float],
             voxel_size: Sequence[float]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Dynamic voxelisation: no cap on points per voxel or on voxels.

    Args:
        points: per sample ``[Np_b, F]`` with xyz in the first three columns.

    Returns:
        in-range points ``[Np, F]``, their batch index ``[Np]``, voxel id per point ``[Np]`` and
        the unique voxel coordinates ``[V, 4]`` int64 ``(b, z, y, x)``.
    """
    pcr = torch.as_tensor(point_cloud_range, dtype=torch.float32)
    vs = torch.as_tensor(voxel_size, dtype=torch.float32)
    grid = torch.round((pcr[3:] - pcr[:3]) / vs).long()  # (X, Y, Z)
    kept, batch_ids = [], []
    for b, p in enumerate(points):
        if p.dim() != 2 or p.shape[1] < 3:
            raise ValueError(f'voxelize: sample {b} has points of shape {tuple(p.shape)}, '
                             f'expected [N, >=3]')
        cell = torch.floor((p[:, :3] - pcr[:3].to(p)) / vs.to(p)).long()
        inside = ((cell >= 0) & (cell < grid.to(p.device))).all(1)
        kept.append(p[inside])
        batch_ids.append(torch.full((int(inside.sum()), ), b, dtype=torch.long,
                                    device=p.device))
    pts = torch.cat(kept) if kept else torch.zeros(0, 3)
    bidx = torch.cat(batch_ids) if batch_ids else torch.zeros(0, dtype=torch.long)
    cell = torch.floor((pts[:, :3] - pcr[:3].to(pts)) / vs.to(pts)).long()
    gx, gy, gz = (int(g) for g in grid)
    key = ((bidx * gz + cell[:, 2]) * gy + cell[:, 1]) * gx + cell[:, 0]
    uniq, inverse = torch.unique(key, return_inverse=True)
    coords = torch.stack([uniq // (gz * gy * gx), uniq // (gy * gx) % gz, uniq // gx % gy,
                          uniq % gx], 1)
    return pts, bidx, inverse, coords


class DynamicVFE(nn.Module):
    """Dynamic voxel feature encoder (``DynamicVoxelVFE`` with two ``PFNLayerV2``).

    Per point: the raw features, xyz minus the voxel's point mean, xyz minus the voxel centre
    (``in_channels + 6``); Linear+BN+ReLU, concat the voxel max, Linear+BN+ReLU, voxel max.
    """

    def __init__(self, in_channels: int = 5, feat_channels: Sequence[int] = (64, 64),
                 voxel_size: Sequence[float] = (0.32, 0.32, 0.1875),
                 point_cloud_range: Sequence[float] = (-76.8, -76.8, -2, 76.8, 76.8, 4.0)):
        super().__init__()
        self.voxel_size, self.point_cloud_range = list(voxel_size), list(point_cloud_range)
        self.in_channels = in_channels
        chans = [in_channels + 6] + list(feat_channels)
        self.pfn_layers = nn.ModuleList()
        for i in range(len(feat_channels)):
            last = i == len(feat_channels) - 1
            out = chans[i + 1] if last else chans[i + 1] // 2
            inp = chans[i] if i == 0 else chans[i]
            self.pfn_layers.append(
                nn.ModuleDict(dict(linear=nn.Linear(inp, out, bias=False), norm=_bn(out))))

    def forward(self, points: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """Per-sample points ``[Np_b, >=in_channels]`` -> voxel features ``[V, C]``, coords ``[V, 4]``."""
        for b, p in enumerate(points):
            if p.dim() != 2 or p.shape[1] < self.in_channels:
                raise ValueError(f'DynamicVFE: sample {b} has points of shape {tuple(p.shape)}, '
                                 f'expected [N, >={self.in_channels}]')
        pts, _, inv, coords = voxelize(points, self.point_cloud_range, self.voxel_size)
        num_vox = coords.shape[0]
        xyz = pts[:, :3]
        cnt = torch.bincount(inv, minlength=num_vox).clamp(min=1).to(xyz)
        mean = xyz.new_zeros(num_vox, 3).index_add(0, inv, xyz) / cnt[:, None]
        vs = xyz.new_tensor(self.voxel_size)
        centre = coords[inv][:, [3, 2, 1]].to(xyz) * vs + vs / 2 + \
            xyz.new_tensor(self.point_cloud_range[:3])
        x = torch.cat([pts[:, :self.in_channels], xyz - mean[inv], xyz - centre], 1)
        for i, layer in enumerate(self.pfn_layers):
            x = F.relu(layer['norm'](layer['linear'](x)))
            x_max = scatter_max(x, inv, num_vox)
            x = x_max if i == len(self.pfn_layers) - 1 else torch.cat([x, x_max[inv]], 1)
        if len(self.pfn_layers) == 0:
            x = scatter_max(x, inv, num_vox)
        return x, coords


class SparseBasicBlock(nn.Module):
    """SubM 3x3x3 -> BN -> ReLU -> SubM 3x3x3 -> BN -> +identity -> ReLU (convs with bias)."""

    def __init__(self, channels: int, indice_key: str):
        super().__init__()
        self.conv1 = SubMConv3d(channels, channels, 3, bias=True, indice_key=indice_key)
        self.bn1 = _bn(channels)
        self.conv2 = SubMConv3d(channels, channels, 3, bias=True, indice_key=indice_key)
        self.bn2 = _bn(channels)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        out = F.relu(self.bn1(self.conv1(x).features))
        out = self.bn2(self.conv2(x.replace(out)).features)
        return x.replace(F.relu(out + x.features))


class CPE(nn.Module):
    """The sparse-conv stem: SubM stem, 3 residual blocks, z-only strided conv (z: Z -> Z/2)."""

    def __init__(self, in_channels: int = 64, channels: int = 128, num_blocks: int = 3):
        super().__init__()
        self.conv_in = SubMConv3d(in_channels, channels, 3, bias=False, indice_key='subm1')
        self.bn_in = _bn(channels)
        self.blocks = nn.ModuleList(SparseBasicBlock(channels, 'stem') for _ in range(num_blocks))
        self.conv_out = SparseConv3d(channels, channels, (3, 1, 1), (2, 1, 1), 0, bias=False)
        self.bn_out = _bn(channels)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        x = x.replace(F.relu(self.bn_in(self.conv_in(x).features)))
        for blk in self.blocks:
            x = blk(x)
        x = self.conv_out(x)
        return x.replace(F.relu(self.bn_out(x.features)))


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
    _, win_ids = torch.unique(key, dim=0, return_inverse=True)
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

    Query: the max over the column's active voxels; keys/values: the column's voxels at their z
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
        pillars, inv = torch.unique(col, dim=0, return_inverse=True)
        num = pillars.shape[0]
        query = scatter_max(x.features, inv, num)
        kv = x.features.new_zeros(num, self.pillar_size, x.features.shape[1])
        kv = kv.index_put((inv, c[:, 1]), x.features)
        pad = torch.ones(num, self.pillar_size, dtype=torch.bool, device=c.device)
        pad[inv, c[:, 1]] = False
        keys = kv + self.z_embed.weight[None]
        out, _ = self.attn(query[:, None], keys, kv, key_padding_mask=pad, need_weights=False)
        return self.norm(out[:, 0] + query), pillars


@MODELS.register_module()
class ScatterFormerBackbone(BackboneMixin, BaseModule):
    """Points to a dense BEV feature map (everything before the 2D BEV backbone).

    Args:
        point_cloud_range: ``[x0, y0, z0, x1, y1, z1]`` metres.
        voxel_size: ``[vx, vy, vz]`` metres.
        in_channels: point features used (x, y, z, tanh intensity, tanh elongation).
        vfe_channels: PFN layer widths.
        dim, num_heads, depths, win_size: transformer width, heads, layers per stage, window side.
        sla_backend: ``'auto' | 'reference' | 'torch' | 'triton'`` for every SLA layer.
        norm_momentum: momentum of every BatchNorm (official: eps 1e-3, momentum 0.01, tuned for
            tens of thousands of iterations; a short run needs a larger one for usable running
            statistics in eval mode).
        frozen_stages: -1 nothing; 0 the stem (VFE and CPE); k the stem and stages 0..k-1 (each
            with the sparse downsampling before it; the last with the pillar pooling).
        norm_eval: keep every BatchNorm in eval mode while training.
        init_cfg: mmengine init config (dict or list).

    Input: list of per-sample point tensors ``[Np_b, >=in_channels]``.
    Output: BEV ``[B, dim, Y / 2, X / 2]``.
    """

    def __init__(self,
                 point_cloud_range: Sequence[float] = (-76.8, -76.8, -2, 76.8, 76.8, 4.0),
                 voxel_size: Sequence[float] = (0.32, 0.32, 0.1875),
                 in_channels: int = 5,
                 vfe_channels: Sequence[int] = (64, 64),
                 dim: int = 128,
                 num_heads: int = 4,
                 depths: Sequence[int] = (3, 3),
                 win_size: int = 12,
                 pool_heads: int = 8,
                 sla_backend: str = 'auto',
                 norm_momentum: float = 0.01,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg)
        self.num_stages = len(depths)
        self.frozen_stages = self._check_frozen_stages(frozen_stages, len(depths))
        self.norm_eval = norm_eval
        pcr = torch.tensor(point_cloud_range, dtype=torch.float64)
        vs = torch.tensor(voxel_size, dtype=torch.float64)
        grid = torch.round((pcr[3:] - pcr[:3]) / vs).long().tolist()  # (X, Y, Z)
        self.grid_size = grid
        self.sparse_shape = (grid[2] + 1, grid[1], grid[0])
        self.vfe = DynamicVFE(in_channels, vfe_channels, voxel_size, point_cloud_range)
        self.cpe = CPE(vfe_channels[-1], dim)
        self.stages = nn.ModuleList(
            ScatterFormerStage(dim, d, num_heads, win_size, i, sla_backend)
            for i, d in enumerate(depths))
        self.downs = nn.ModuleList(
            SparseConv3d(dim, dim, 3, 2, 1, bias=False) for _ in range(len(depths) - 1))
        self.pool = AttnPillarPool(dim, self.sparse_shape[0] // 4, pool_heads)
        self.dim = dim
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = norm_momentum
        self._freeze_stages()

    def _stage_modules(self, i: int) -> List[nn.Module]:
        if i < 0:
            return [self.vfe, self.cpe]
        mods = [self.stages[i]] + ([self.downs[i - 1]] if i > 0 else [])
        return mods + ([self.pool] if i == self.num_stages - 1 else [])

    def forward(self, points: List[Tensor]) -> Tensor:
        feats, coords = self.vfe(points)
        x = SparseVoxels(feats, coords, self.sparse_shape, len(points))
        x = self.cpe(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.downs):
                x = self.downs[i](x)
        pillar_feats, pillars = self.pool(x)
        _, ny, nx = x.spatial_shape
        bev = pillar_feats.new_zeros(len(points), ny, nx, self.dim)
        bev[pillars[:, 0], pillars[:, 1], pillars[:, 2]] = pillar_feats
        return bev.permute(0, 3, 1, 2).contiguous()
