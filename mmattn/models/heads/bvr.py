"""BVR (RelationNet++, "bridging visual representations", NeurIPS 2020) for mmdet 3.x.

A one-stage head's cls / reg tower features attend to a few sampled keypoints (object centres for
classification, top-left / bottom-right corners for regression) through one light attention layer
with a relative-position term (spec ``shared/specs/dense.md`` §3):

* :class:`BVRKeypointHead`: three keypoint types (heat map + sub-cell offset per type), shared over
  FPN levels; GaussianFocalLoss on the heat map, SmoothL1 on the offsets; every GT is assigned on
  every level with the CornerNet radius (:func:`keypoint_targets`).
* key sampling (:meth:`BVRKeypointHead.sample_keys`): 3x3 max-pool NMS, top-20 per level, top-50
  across levels, key features gathered from the tower map of the key's own level at its cell.
  Ties are broken by index (stable sort), so equal inputs select the same keys.
* :class:`BVRTransformer`: per key group multi-head attention with logits ``q.k/sqrt(d) + G``,
  ``G = log(max(table(rel / s), 1e-6))`` sampled bilinearly from a positional table that is
  *computed* from the config (:class:`RelativePositionalTable`: 1x1 convs of a sine embedding of
  integer offsets, the first evaluated separably in x and y, only on the cells the keys read; the
  official 165 MB buffer is never stored).
* :class:`BVRRetinaHead`, :class:`BVRFCOSHead`, :class:`BVRATSSHead`: mmdet 3.x's ``RetinaHead`` /
  ``FCOSHead`` / ``ATSSHead`` with the forward split into towers and predictors; ``forward``
  returns the wrapped head's outputs followed by the keypoint logits and offsets; losses and
  predictions are the wrapped head's own (``loss_by_feat`` / ``predict_by_feat``).

Official checkpoints (mmdet 2.8, ``bbox_head.bbox_head.*`` etc.) load through
:func:`convert_bvr_official` (family ``'bvr'`` of :mod:`mmattn.utils.checkpoint`,
``tools/model_converters/bvr2mmattn.py``).
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.models.dense_heads import ATSSHead, FCOSHead, RetinaHead
from mmdet.models.utils import gaussian_radius, multi_apply
from mmdet.utils import reduce_mean
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.model import BaseModule, bias_init_with_prob, normal_init
from mmengine.registry import DefaultScope
from torch import Tensor

from mmattn.registry import MODELS

__all__ = ['RelativePositionalTable', 'BVRTransformer', 'BVRKeypointHead', 'BVRRetinaHead',
           'BVRFCOSHead', 'BVRATSSHead', 'keypoint_targets', 'stable_topk',
           'convert_bvr_official', 'KEYPOINT_TYPES']

KEYPOINT_TYPES = ('top_left_corner', 'bottom_right_corner', 'center')


def stable_topk(x: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Top-``k`` along the last axis, largest first, equal values in index order.

    ``torch.topk`` leaves the order (and, at the k-th place, the choice) of ties unspecified; key
    sampling picks among many zero scores after NMS, so ties must be broken the same way always.
    """
    values, inds = torch.sort(x, dim=-1, descending=True, stable=True)
    return values[..., :k], inds[..., :k]


def grid_centres(featmap_size: Tuple[int, int], stride: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Location centres ``(x * s + s // 2, y * s + s // 2)`` of an (H, W) map, shape (H*W, 2),
    row-major (the official ``get_points``)."""
    h, w = featmap_size
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                            indexing='ij')
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) * stride + stride // 2
    return pts.to(dtype)


# ------------------------------------------------------------------------------- transformer
class RelativePositionalTable(BaseModule):
    """The shared location embedding of BVR (official ``PositionalEncodingSineLearned`` with
    ``base_size``): a (B+1)x(B+1) grid of integer offsets (dx, dy) in [-B/2, B/2] is sine-encoded
    (per coordinate ``[sin(u / t_f), cos(u / t_f)]``, ``t_f = T ** (4 f / C)``, f < C/4; x then y)
    and mapped by ``num_layers`` 1x1 convs (C -> C with ReLU, ..., C -> ``num_heads``);
    :meth:`forward` samples it at relative positions.

    The first conv of a concatenation [e(x), e(y)] is ``W_x e(x) + W_y e(y) + b``, so it is
    computed from two (B+1) x C/2 embeddings instead of the official (B+1)^2 x C buffer (165 MB
    at B = 400); there is no buffer in the state_dict.

    Args:
        embedding_dim: channels of the sine embedding C (256).
        num_heads: output channels (one logit bias per attention head).
        base_size: ``[B_w, B_h]`` grid size (400 for R-50, 300 for X-101 configs).
        temperature: T (1000).
        log_scale: return ``log(max(value, 1e-6))`` (official ``log_scale=True``).
        num_layers: 1x1 convs of the embedding (official default 1; UniverseNet's configs for
            the released checkpoints use 2, see configs/bvr/README.md).
    """

    def __init__(self, embedding_dim: int = 256, num_heads: int = 8,
                 base_size: Sequence[int] = (400, 400), temperature: float = 1000.,
                 log_scale: bool = True, num_layers: int = 1, init_cfg=None):
        super().__init__(init_cfg)
        if embedding_dim % 4:
            raise ValueError(f'embedding_dim must be a multiple of 4, got {embedding_dim}')
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.base_size = tuple(int(b) for b in base_size)
        self.temperature = float(temperature)
        self.log_scale = log_scale
        # official keys: embedding_transform.<i>.conv.{weight,bias}
        self.embedding_transform = nn.Sequential(
            *[ConvModule(embedding_dim, embedding_dim, 1) for _ in range(num_layers - 1)],
            ConvModule(embedding_dim, num_heads, 1, act_cfg=None))

    def init_weights(self) -> None:
        for layer in self.embedding_transform:
            normal_init(layer.conv, std=0.01)
        self._is_init = True

    def sine(self, u: Tensor) -> Tensor:
        """(L,) coordinates -> (L, C/2) ``[sin(u/t_0..), cos(u/t_0..)]``."""
        feat_dim = self.embedding_dim // 4
        dim_t = torch.pow(self.temperature, (4.0 / self.embedding_dim) *
                          torch.arange(feat_dim, device=u.device))
        div = u[:, None] / dim_t
        return torch.cat([div.sin(), div.cos()], dim=-1)

    @property
    def grid_size(self) -> Tuple[int, int]:
        """(W, H) of the full table: B_w + 1, B_h + 1 (B rounded down to even)."""
        return 2 * (self.base_size[0] // 2) + 1, 2 * (self.base_size[1] // 2) + 1

    def grid_coords(self, rel_pos: Tensor) -> Tensor:
        """Relative positions (..., 2) -> continuous cell coordinates (..., 2) in the full table,
        as ``grid_sample`` (``align_corners=False``, border padding) computes them, clamped."""
        size = rel_pos.new_tensor(self.grid_size)
        g = rel_pos / rel_pos.new_tensor([0.5 * self.base_size[0], 0.5 * self.base_size[1]])
        return torch.minimum(((g + 1) * size - 1) / 2, size - 1).clamp(min=0)

    def window(self, coords: Sequence[Tensor]) -> Tuple[int, int, int, int]:
        """The cells ``(x0, x1, y0, y1)`` (inclusive) that bilinear sampling at ``coords`` reads."""
        lo = torch.stack([c.detach().reshape(-1, 2).amin(0) for c in coords]).amin(0).floor()
        hi = torch.stack([c.detach().reshape(-1, 2).amax(0) for c in coords]).amax(0).floor() + 1
        w, h = self.grid_size
        x0, y0 = (int(v) for v in lo.tolist())
        x1, y1 = (int(v) for v in hi.tolist())
        return max(x0, 0), min(x1, w - 1), max(y0, 0), min(y1, h - 1)

    def table(self, window: Optional[Tuple[int, int, int, int]] = None) -> Tensor:
        """The transformed table (1, num_heads, B_h + 1, B_w + 1), or its cells ``window`` =
        ``(x0, x1, y0, y1)``; cell [0, :, i, j] of the full table belongs to the offset
        (x, y) = (j - B_w/2, i - B_h/2).

        With more than one layer the hidden (cells x C) activations are recomputed in the
        backward pass instead of being kept (165 MB for the full table at B = 400)."""
        w, h = self.grid_size
        window = window or (0, w - 1, 0, h - 1)
        params = [p for layer in self.embedding_transform for p in layer.parameters()]
        if len(self.embedding_transform) > 1 and torch.is_grad_enabled() and \
                any(p.requires_grad for p in params):
            from torch.utils.checkpoint import checkpoint
            return checkpoint(self._table, window, use_reentrant=False)
        return self._table(window)

    def _table(self, window: Tuple[int, int, int, int]) -> Tensor:
        x0, x1, y0, y1 = window
        first, *rest = self.embedding_transform
        conv = first.conv
        half_w, half_h = self.base_size[0] // 2, self.base_size[1] // 2
        device = conv.weight.device
        ex = self.sine(torch.arange(x0 - half_w, x1 - half_w + 1, device=device).float())
        ey = self.sine(torch.arange(y0 - half_h, y1 - half_h + 1, device=device).float())
        w = conv.weight.flatten(1)  # (C_out, C)
        c = self.embedding_dim // 2
        tx = ex @ w[:, :c].t()  # (x1 - x0 + 1, C_out)
        ty = ey @ w[:, c:].t()  # (y1 - y0 + 1, C_out)
        table = ty[:, None, :] + tx[None, :, :]
        if conv.bias is not None:
            table = table + conv.bias
        if first.with_activation:
            table = first.activate(table)
        for layer in rest:  # 1x1 convs on the (cells, C) grid
            table = F.linear(table, layer.conv.weight.flatten(1), layer.conv.bias)
            if layer.with_activation:
                table = layer.activate(table)
        return table.permute(2, 0, 1)[None]

    def forward(self, rel_pos: Tensor, table: Optional[Tensor] = None,
                window: Optional[Tuple[int, int, int, int]] = None) -> Tensor:
        """Sample the table at relative positions (N, L, K, 2) (x, y, in table units) ->
        (N, num_heads, L, K): bilinear, border padding, ``align_corners=False`` as official.
        ``table`` may be the cells ``window`` of the table (:meth:`window` of these positions)."""
        coords = self.grid_coords(rel_pos)
        if table is None:
            window = self.window([coords])
            table = self.table(window)
        w, h = self.grid_size
        x0, x1, y0, y1 = window or (0, w - 1, 0, h - 1)
        size = coords.new_tensor([x1 - x0 + 1, y1 - y0 + 1])
        local = (2 * (coords - coords.new_tensor([x0, y0])) + 1) / size - 1
        out = F.grid_sample(table.expand(rel_pos.shape[0], -1, -1, -1), local,
                            mode='bilinear', padding_mode='border', align_corners=False)
        if self.log_scale:
            out = torch.log(out.clamp(min=1e-6))
        return out


class BVRTransformer(BaseModule):
    """BVR's single attention layer (official ``SimpleBVR_Transformer``, no FFN, no norm).

    For each level and each key group g: ``out_g = MHA_g(query, keys_g)`` with logits
    ``q.k / sqrt(d) + G_g`` where ``G_g`` is :class:`RelativePositionalTable` sampled at
    ``(key_pos - query_pos) / scale_term``; result ``relu(query + sum_g out_g)``.

    Args:
        embedding_dim: feature channels C.
        num_heads: attention heads.
        num_groups: key groups (keypoint types): 1 for cls, 2 for reg.
        positional_cfg: kwargs of :class:`RelativePositionalTable` (``base_size``, ...).
        with_relative_positional_encoding / with_appearance_relation: the two logit terms.
        shared_positional_encoding: one table for all groups (official default) or one each.
        relative_positional_encoding: a table module to share (ATSS shares cls / reg).
        attn_backend: ``'torch'`` (explicit softmax) or ``'sdpa'``
            (``F.scaled_dot_product_attention`` with G as additive mask; same math).
    """

    def __init__(self, embedding_dim: int = 256, num_heads: int = 8, num_groups: int = 1,
                 positional_cfg: Optional[dict] = None,
                 with_relative_positional_encoding: bool = True,
                 with_appearance_relation: bool = True, shared_positional_encoding: bool = True,
                 relative_positional_encoding: Optional[nn.Module] = None,
                 attn_backend: str = 'torch', init_cfg=None):
        super().__init__(init_cfg)
        if attn_backend not in ('torch', 'sdpa'):
            raise ValueError(f"attn_backend must be 'torch' or 'sdpa', got {attn_backend!r}")
        if not (with_relative_positional_encoding or with_appearance_relation):
            raise ValueError('BVRTransformer needs the appearance or the positional term')
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.num_groups = num_groups
        self.with_relative_positional_encoding = with_relative_positional_encoding
        self.with_appearance_relation = with_appearance_relation
        self.attn_backend = attn_backend
        pos_cfg = dict(base_size=(300, 300), log_scale=True)
        pos_cfg.update(positional_cfg or {})
        # official keys decoder.<g>.{in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias}
        self.decoder = nn.ModuleList(
            nn.MultiheadAttention(embedding_dim, num_heads, batch_first=True)
            for _ in range(num_groups))
        if with_relative_positional_encoding:
            if relative_positional_encoding is not None:
                self.relative_positional_encoding = relative_positional_encoding
            elif shared_positional_encoding:
                self.relative_positional_encoding = RelativePositionalTable(
                    embedding_dim, num_heads, **pos_cfg)
            else:
                self.relative_positional_encoding = nn.ModuleList(
                    RelativePositionalTable(embedding_dim, num_heads, **pos_cfg)
                    for _ in range(num_groups))

    def init_weights(self) -> None:
        super().init_weights()
        for attn in self.decoder:  # official: xavier-uniform in_proj, zero biases
            attn._reset_parameters()

    def _table_modules(self) -> List[Optional[nn.Module]]:
        if not self.with_relative_positional_encoding:
            return [None] * self.num_groups
        pe = self.relative_positional_encoding
        return list(pe) if isinstance(pe, nn.ModuleList) else [pe] * self.num_groups

    def attention(self, attn: nn.MultiheadAttention, query: Tensor, keys: Tensor,
                  bias: Optional[Tensor]) -> Tensor:
        """query (N, L, C), keys (N, K, C), bias (N, heads, L, K) or None -> (N, L, C)."""
        n, L, c = query.shape
        h, d = self.num_heads, c // self.num_heads
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q = F.linear(query, w[:c], b[:c]).view(n, L, h, d).transpose(1, 2)
        k, v = F.linear(keys, w[c:], b[c:]).view(n, -1, 2 * h, d).transpose(1, 2).chunk(2, 1)
        if not self.with_appearance_relation:
            out = torch.softmax(bias, dim=-1) @ v
        elif self.attn_backend == 'sdpa':
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            logits = (q * d ** -0.5) @ k.transpose(-2, -1)
            if bias is not None:
                logits = logits + bias
            out = torch.softmax(logits, dim=-1) @ v
        return attn.out_proj(out.transpose(1, 2).reshape(n, L, c))

    def forward(self, query_features: List[Tensor], query_positions: List[Tensor],
                key_features: List[List[Tensor]], key_positions: List[List[Tensor]],
                scale_terms: Sequence[float]) -> List[Tensor]:
        """Per level: queries (N, H, W, C) at positions (N, H, W, 2) (pixels, x y); per group
        keys (N, K, C) at (N, K, 2); positions divided by the level's scale term. Returns the
        refined queries, (N, H, W, C) per level."""
        modules = self._table_modules()
        rels = {}  # (level, group) -> (N, HW, K, 2) relative positions in table units
        for lvl, qp in enumerate(query_positions):
            n = qp.shape[0]
            qpos = qp.reshape(n, -1, 2) / scale_terms[lvl]
            for g in range(self.num_groups):
                if modules[g] is not None:
                    kpos = key_positions[lvl][g].reshape(n, -1, 2) / scale_terms[lvl]
                    rels[lvl, g] = kpos[:, None] - qpos[:, :, None]
        # each table once, on the cells its samples read (all levels and groups sharing it)
        tables = {}
        for g, module in enumerate(modules):
            if module is not None and id(module) not in tables:
                users = [k for k in rels if modules[k[1]] is module]
                window = module.window([module.grid_coords(rels[k]) for k in users])
                tables[id(module)] = (module.table(window), window)
        outs = []
        for lvl, qf in enumerate(query_features):
            n, c = qf.shape[0], qf.shape[-1]
            query = qf.reshape(n, -1, c)
            acc = query
            for g in range(self.num_groups):
                keys = key_features[lvl][g].reshape(n, -1, c)
                bias = None
                if modules[g] is not None:
                    table, window = tables[id(modules[g])]
                    bias = modules[g](rels[lvl, g], table, window)
                acc = acc + self.attention(self.decoder[g], query, keys, bias)
            outs.append(F.relu(acc).reshape(qf.shape))
        return outs


# ----------------------------------------------------------------------------- keypoint head
def keypoint_targets(points: Tensor, num_points: Sequence[int], gt_points: Tensor,
                     gt_bboxes: Tensor, gt_labels: Tensor, num_classes: int,
                     gaussian_iou: float = 0.7) -> Tuple[Tensor, Tensor, Tensor]:
    """Targets of one keypoint type in one image (official ``PointKptAssigner``).

    Every GT is assigned on every level: the level's location nearest to the GT point is
    positive; the heat map of the level is ``exp(-|p - p_pos|^2 / (2 sigma^2))`` around the
    positive location, ``sigma = (2 r + 1) / 6`` with ``r`` the CornerNet radius of the box at
    ``gaussian_iou``; per location the max over GTs goes into the channel of that GT's label.

    Args:
        points: (P, 3) locations ``(x, y, stride)`` of all levels; ``num_points`` per level.
        gt_points (G, 2), gt_bboxes (G, 4), gt_labels (G,).
    Returns:
        score targets (P, num_classes), offset targets (P, 2) (``(gt - p) / stride`` at
        positives), positive mask (P,).
    """
    num_gts, total = gt_bboxes.shape[0], points.shape[0]
    if num_gts == 0:
        return (points.new_zeros(total, num_classes), points.new_zeros(total, 2),
                points.new_zeros(total))
    wh = (gt_bboxes[:, 2:] - gt_bboxes[:, :2]).tolist()
    radius = points.new_tensor([gaussian_radius((h, w), gaussian_iou) for w, h in wh])
    sigma_sq = ((2 * radius + 1) / 6)**2
    xy = points[:, :2]
    dist = (xy[:, None] - gt_points[None]).pow(2).sum(-1)  # (P, G)
    scores = points.new_zeros(total, num_gts)
    pos_mask = points.new_zeros(total)
    start = 0
    for n in num_points:
        pos = start + dist[start:start + n].argmin(dim=0)  # (G,)
        off = xy[start:start + n, None] - xy[pos][None]
        scores[start:start + n] = torch.exp(-0.5 * off.pow(2).sum(-1) / sigma_sq)
        pos_mask[pos] = 1
        start += n
    best, best_gt = scores.max(dim=1)
    pos = pos_mask == 1
    offsets = points.new_zeros(total, 2)
    offsets[pos] = (gt_points[best_gt[pos]] - xy[pos]) / points[pos, 2:]
    score_targets = points.new_zeros(total, num_classes)
    score_targets[torch.arange(total, device=points.device), gt_labels[best_gt]] = best
    return score_targets, offsets, pos_mask


class BVRKeypointHead(BaseModule):
    """Keypoint heads of BVR (official ``KeypointHead``): for each type, ``stacked_convs``
    ConvModules, then a cls branch (``logits_convs`` ConvModules + 3x3 conv to ``num_classes``)
    and an offset branch (same + 3x3 conv to 2). Shared over levels; no corner pooling.

    Args:
        num_classes, in_channels, feat_channels, stacked_convs, logits_convs: layer sizes.
        strides: FPN strides of the input levels.
        head_types: keypoint types (default TL corner, BR corner, centre).
        conv_cfg, norm_cfg: of the ConvModules (GN in the R-50 config).
        loss_cls: heat-map loss (GaussianFocalLoss x 0.25); loss_offset: SmoothL1 (beta 1).
        gaussian_iou: overlap of the CornerNet radius (0.7).
    """

    def __init__(self, num_classes: int = 80, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 2, logits_convs: int = 1,
                 strides: Sequence[int] = (8, 16, 32, 64, 128),
                 head_types: Sequence[str] = KEYPOINT_TYPES, conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 loss_cls: Optional[dict] = None, loss_offset: Optional[dict] = None,
                 gaussian_iou: float = 0.7, init_cfg=None):
        super().__init__(init_cfg)
        self.num_classes = num_classes
        self.strides = list(strides)
        self.head_types = list(head_types)
        self.gaussian_iou = gaussian_iou

        def convs(cin: int, num: int) -> nn.ModuleList:
            return nn.ModuleList(
                ConvModule(cin if i == 0 else feat_channels, feat_channels, 3, padding=1,
                           conv_cfg=conv_cfg, norm_cfg=norm_cfg) for i in range(num))

        self.keypoint_layers = nn.ModuleDict()
        self.keypoint_cls_heads = nn.ModuleDict()
        self.keypoint_offset_heads = nn.ModuleDict()
        for t in self.head_types:
            self.keypoint_layers[t] = convs(in_channels, stacked_convs)
            cls_head = convs(feat_channels, logits_convs)
            cls_head.append(nn.Conv2d(feat_channels, num_classes, 3, padding=1))
            self.keypoint_cls_heads[t] = cls_head
            off_head = convs(feat_channels, logits_convs)
            off_head.append(nn.Conv2d(feat_channels, 2, 3, padding=1))
            self.keypoint_offset_heads[t] = off_head
        # mmdet's losses whatever default scope is current (a head built outside a detector)
        with DefaultScope.overwrite_default_scope('mmdet'):
            self.loss_cls = MMDET_MODELS.build(
                loss_cls or dict(type='GaussianFocalLoss', loss_weight=0.25))
            self.loss_offset = MMDET_MODELS.build(
                loss_offset or dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                normal_init(m, std=0.01)
        for head in self.keypoint_cls_heads.values():
            normal_init(head[-1], std=0.01, bias=bias_init_with_prob(0.01))
        self._is_init = True

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Dict[str, List[Tensor]],
                                                         Dict[str, List[Tensor]]]:
        """FPN levels (N, C, H, W) -> ``({type: [(N, num_classes, H, W)]}, {type: [(N, 2, H,
        W)]})`` logits and offsets (in units of the level's stride)."""
        scores = {t: [] for t in self.head_types}
        offsets = {t: [] for t in self.head_types}
        for x in feats:
            for t in self.head_types:
                f = x
                for layer in self.keypoint_layers[t]:
                    f = layer(f)
                s, o = f, f
                for layer in self.keypoint_cls_heads[t]:
                    s = layer(s)
                for layer in self.keypoint_offset_heads[t]:
                    o = layer(o)
                scores[t].append(s)
                offsets[t].append(o)
        return scores, offsets

    def sample_keys(self, logits: Dict[str, List[Tensor]], offsets: Dict[str, List[Tensor]],
                    types: Sequence[str], feats: Sequence[Tensor], max_per_level: int = 20,
                    max_keys: int = 50) -> Tuple[List[Tensor], List[Tensor]]:
        """Keys of ``types`` for the levels of ``feats`` (tower maps (N, C, H, W)).

        Per type and level: sigmoid, 3x3 max-pool NMS, top ``max_per_level`` over (class,
        location) (top-k per class, then overall); position = location centre + offset x stride
        (differentiable in the offsets); feature = ``feats[level]`` at the key's cell. Across
        levels the ``max_keys`` best are kept (fewer if the maps hold fewer locations).

        Returns per type: features (N, K, C) and positions (N, K, 2) in pixels.
        """
        key_feats, key_pos = [], []
        for t in types:
            all_scores, all_pos, all_feats = [], [], []
            for lvl, feat in enumerate(feats):
                logit, off, stride = logits[t][lvl], offsets[t][lvl], self.strides[lvl]
                n, c, h, w = logit.shape
                heat = logit.detach().sigmoid()
                keep = F.max_pool2d(heat, 3, stride=1, padding=1) == heat
                heat = heat * keep
                k = min(h * w, max_per_level)
                per_cls, per_cls_inds = stable_topk(heat.view(n, c, h * w), k)  # (N, C, k)
                score, flat = stable_topk(per_cls.reshape(n, c * k), k)  # (N, k)
                inds = per_cls_inds.reshape(n, c * k).gather(1, flat)  # cell index (N, k)
                centres = grid_centres((h, w), stride, logit.device, off.dtype)[inds]
                key_off = off.flatten(2).transpose(1, 2).gather(
                    1, inds[..., None].expand(-1, -1, 2))
                all_scores.append(score)
                all_pos.append(centres + key_off * stride)
                all_feats.append(feat.flatten(2).transpose(1, 2).gather(
                    1, inds[..., None].expand(-1, -1, feat.shape[1])))
            scores = torch.cat(all_scores, dim=1)
            _, top = stable_topk(scores, min(max_keys, scores.shape[1]))
            key_pos.append(torch.cat(all_pos, 1).gather(1, top[..., None].expand(-1, -1, 2)))
            f = torch.cat(all_feats, 1)
            key_feats.append(f.gather(1, top[..., None].expand(-1, -1, f.shape[-1])))
        return key_feats, key_pos

    def loss(self, logits: Dict[str, List[Tensor]], offsets: Dict[str, List[Tensor]],
             gt_bboxes: List[Tensor], gt_labels: List[Tensor]) -> Dict[str, Tensor]:
        """Heat-map and offset losses of all types and levels, normalised by the number of
        positives (all types, levels, images; averaged over processes)."""
        first = logits[self.head_types[0]]
        sizes = [x.shape[-2:] for x in first]
        device = first[0].device
        points = torch.cat([
            torch.cat([grid_centres(s, st, device), first[0].new_full((s[0] * s[1], 1), st)], 1)
            for s, st in zip(sizes, self.strides)])
        num_points = [s[0] * s[1] for s in sizes]
        preds, pred_offs, score_t, off_t, masks = [], [], [], [], []
        for t in self.head_types:
            preds.append(torch.cat([x.flatten(2) for x in logits[t]], -1).transpose(1, 2))
            pred_offs.append(torch.cat([x.flatten(2) for x in offsets[t]], -1).transpose(1, 2))
            for boxes, labels in zip(gt_bboxes, gt_labels):
                if t == 'top_left_corner':
                    pts = boxes[:, :2]
                elif t == 'bottom_right_corner':
                    pts = boxes[:, 2:]
                else:
                    pts = boxes[:, :2] * 0.5 + boxes[:, 2:] * 0.5
                s, o, m = keypoint_targets(points, num_points, pts, boxes, labels,
                                           self.num_classes, self.gaussian_iou)
                score_t.append(s)
                off_t.append(o)
                masks.append(m)
        preds, pred_offs = torch.cat(preds).float(), torch.cat(pred_offs).float()
        score_t, off_t = torch.stack(score_t), torch.stack(off_t)
        masks = torch.stack(masks)[..., None]
        # official: avg_factor = mean over processes of #positives; at least 1 (images with no
        # ground truth would otherwise divide the negatives' heat-map loss by 0)
        avg_factor = reduce_mean(masks.sum()).clamp(min=1.0).item()
        loss_cls = self.loss_cls(preds.sigmoid(), score_t, avg_factor=avg_factor)
        loss_off = self.loss_offset(pred_offs, off_t, weight=masks.expand_as(pred_offs),
                                    avg_factor=avg_factor)
        return dict(loss_point_cls=loss_cls, loss_point_offset=loss_off)


# ------------------------------------------------------------------------------- BVR heads
class BVRMixin:
    """The BVR part of a wrapped one-stage head (composed with mmdet's head by subclassing).

    A subclass provides ``forward_towers_single(x) -> (cls_feat, reg_feat)`` and
    ``forward_predictions(cls_feats, reg_feats) -> tuple of per-level lists`` (the wrapped head's
    outputs); ``_num_head_outputs`` is their number.
    """
    _num_head_outputs = 2

    def _init_bvr(self, keypoint_head: Optional[dict], cls_keypoint_cfg: Optional[dict],
                  reg_keypoint_cfg: Optional[dict], keypoint_cfg: Optional[dict],
                  feature_selection_cfg: Optional[dict], num_attn_heads: int,
                  scale_position: bool, scale_factor: float, pos_cfg: Optional[dict],
                  with_relative_positional_encoding: bool, with_appearance_relation: bool,
                  shared_positional_encoding_inter: bool,
                  shared_positional_encoding_outer: bool, attn_backend: str) -> None:
        strides = [s[0] if isinstance(s, (tuple, list)) else s for s in self._bvr_strides()]
        kcfg = dict(num_classes=self.num_classes, in_channels=self.in_channels,
                    feat_channels=self.feat_channels, strides=strides)
        kcfg.update(keypoint_head or {})
        kcfg.pop('type', None)
        self.keypoint_head = BVRKeypointHead(**kcfg)
        self.cls_keypoint_cfg = dict(keypoint_types=['center'], with_relation=True)
        self.cls_keypoint_cfg.update(cls_keypoint_cfg or {})
        self.reg_keypoint_cfg = dict(keypoint_types=['top_left_corner', 'bottom_right_corner'],
                                     with_relation=True)
        self.reg_keypoint_cfg.update(reg_keypoint_cfg or {})
        kp = dict(max_keypoint_num=20)
        kp.update(keypoint_cfg or {})
        self.max_keypoint_num = kp['max_keypoint_num']
        fs = dict(selection_method='index', cross_level_topk=50, cross_level_selection=True)
        fs.update(feature_selection_cfg or {})
        if fs['selection_method'] != 'index' or not fs['cross_level_selection']:
            raise NotImplementedError('only the released key selection (index, cross-level) '
                                      f'is implemented, got {fs}')
        self.cross_level_topk = fs['cross_level_topk']
        self.scale_position = scale_position
        self.scale_factor = scale_factor
        tcfg = dict(embedding_dim=self.feat_channels, num_heads=num_attn_heads,
                    positional_cfg=pos_cfg or dict(base_size=(400, 400), log_scale=True),
                    with_relative_positional_encoding=with_relative_positional_encoding,
                    with_appearance_relation=with_appearance_relation,
                    shared_positional_encoding=shared_positional_encoding_inter,
                    attn_backend=attn_backend)
        if self.cls_keypoint_cfg['with_relation']:
            self.cls_transformer = BVRTransformer(
                num_groups=len(self.cls_keypoint_cfg['keypoint_types']), **tcfg)
        if self.reg_keypoint_cfg['with_relation']:
            shared = None
            if shared_positional_encoding_outer and self.cls_keypoint_cfg['with_relation']:
                shared = self.cls_transformer.relative_positional_encoding
            self.reg_transformer = BVRTransformer(
                num_groups=len(self.reg_keypoint_cfg['keypoint_types']),
                relative_positional_encoding=shared, **tcfg)

    def _bvr_strides(self) -> List:
        return list(self.prior_generator.strides)

    def forward_towers_single(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """One level (N, C, H, W) -> cls and reg tower features (N, feat_channels, H, W)."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return cls_feat, reg_feat

    def _relation(self, feats: List[Tensor], logits: Dict[str, List[Tensor]],
                  offsets: Dict[str, List[Tensor]], types: Sequence[str],
                  transformer: BVRTransformer) -> List[Tensor]:
        kh = self.keypoint_head
        key_feats, key_pos = kh.sample_keys(logits, offsets, types, feats,
                                            self.max_keypoint_num, self.cross_level_topk)
        n = feats[0].shape[0]
        queries = [f.permute(0, 2, 3, 1) for f in feats]
        positions = [grid_centres(f.shape[-2:], s, f.device, f.dtype).view(
            1, *f.shape[-2:], 2).expand(n, -1, -1, -1) for f, s in zip(feats, kh.strides)]
        if self.scale_position:
            scales = [s * self.scale_factor for s in kh.strides]
        else:
            scales = [kh.strides[0] * self.scale_factor] * len(feats)
        out = transformer(queries, positions, [key_feats] * len(feats),
                          [key_pos] * len(feats), scales)
        return [q.permute(0, 3, 1, 2) for q in out]

    def forward(self, x: Tuple[Tensor, ...]) -> tuple:
        """FPN levels -> ``(*wrapped head outputs, keypoint logits, keypoint offsets)``: first
        the wrapped head's per-level lists (``cls_scores``, ``bbox_preds`` [, centernesses]),
        then ``{type: [(N, num_classes, H, W)]}`` and ``{type: [(N, 2, H, W)]}``."""
        cls_feats, reg_feats = multi_apply(self.forward_towers_single, x)
        kpt_logits, kpt_offsets = self.keypoint_head(x)
        if self.cls_keypoint_cfg['with_relation']:
            cls_feats = self._relation(cls_feats, kpt_logits, kpt_offsets,
                                       self.cls_keypoint_cfg['keypoint_types'],
                                       self.cls_transformer)
        if self.reg_keypoint_cfg['with_relation']:
            reg_feats = self._relation(reg_feats, kpt_logits, kpt_offsets,
                                       self.reg_keypoint_cfg['keypoint_types'],
                                       self.reg_transformer)
        return (*self.forward_predictions(cls_feats, reg_feats), kpt_logits, kpt_offsets)

    def _split_outputs(self, args: tuple) -> Tuple[tuple, tuple, tuple]:
        n = self._num_head_outputs
        return args[:n], args[n:n + 2], args[n + 2:]

    def loss_by_feat(self, *args, **kwargs) -> Dict[str, Tensor]:
        """The wrapped head's losses (``bbox_`` prefix) plus the keypoint losses (``kpt_``)."""
        head_outs, (kpt_logits, kpt_offsets), rest = self._split_outputs(args)
        gts = rest[0] if rest else kwargs['batch_gt_instances']
        losses = super().loss_by_feat(*head_outs, *rest, **kwargs)
        out = {f'bbox_{k}': v for k, v in losses.items()}
        kpt = self.keypoint_head.loss(kpt_logits, kpt_offsets, [g.bboxes for g in gts],
                                      [g.labels for g in gts])
        out.update({f'kpt_{k}': v for k, v in kpt.items()})
        return out

    def predict_by_feat(self, *args, **kwargs):
        """The wrapped head's ``predict_by_feat`` on its own outputs."""
        head_outs, _, rest = self._split_outputs(args)
        return super().predict_by_feat(*head_outs, *rest, **kwargs)


_BVR_DEFAULTS = dict(keypoint_head=None, cls_keypoint_cfg=None, reg_keypoint_cfg=None,
                     keypoint_cfg=None, feature_selection_cfg=None, num_attn_heads=8,
                     scale_position=False, scale_factor=1.0, pos_cfg=None,
                     with_relative_positional_encoding=True, with_appearance_relation=True,
                     shared_positional_encoding_inter=True,
                     shared_positional_encoding_outer=False, attn_backend='torch')


def _pop_bvr(kwargs: dict) -> dict:
    return {k: kwargs.pop(k, v) for k, v in _BVR_DEFAULTS.items()}


@MODELS.register_module()
class BVRRetinaHead(BVRMixin, RetinaHead):
    """mmdet ``RetinaHead`` + BVR. Extra args (official ``BVRHead`` names): ``keypoint_head``
    (:class:`BVRKeypointHead` kwargs), ``cls_keypoint_cfg`` / ``reg_keypoint_cfg``
    (``keypoint_types``, ``with_relation``), ``keypoint_cfg`` (``max_keypoint_num``),
    ``feature_selection_cfg`` (``cross_level_topk``), ``num_attn_heads``, ``scale_position``,
    ``scale_factor``, ``pos_cfg`` (``base_size``, ``log_scale``), the positional-encoding
    switches and ``attn_backend`` (``'torch'`` / ``'sdpa'``)."""

    def __init__(self, *args, **kwargs):
        bvr = _pop_bvr(kwargs)
        super().__init__(*args, **kwargs)
        self._init_bvr(**bvr)

    def forward_predictions(self, cls_feats: List[Tensor], reg_feats: List[Tensor]) -> tuple:
        return ([self.retina_cls(f) for f in cls_feats], [self.retina_reg(f) for f in reg_feats])


@MODELS.register_module()
class BVRFCOSHead(BVRMixin, FCOSHead):
    """mmdet ``FCOSHead`` + BVR (extra args as :class:`BVRRetinaHead`)."""
    _num_head_outputs = 3

    def __init__(self, *args, **kwargs):
        bvr = _pop_bvr(kwargs)
        super().__init__(*args, **kwargs)
        self._init_bvr(**bvr)

    def _bvr_strides(self) -> List:
        return list(self.strides)

    def forward_predictions(self, cls_feats: List[Tensor], reg_feats: List[Tensor]) -> tuple:
        return multi_apply(self._predict_single, cls_feats, reg_feats, self.scales, self.strides)

    def _predict_single(self, cls_feat: Tensor, reg_feat: Tensor, scale: nn.Module,
                        stride: int) -> Tuple[Tensor, Tensor, Tensor]:
        # the predictor part of FCOSHead.forward_single
        cls_score = self.conv_cls(cls_feat)
        bbox_pred = scale(self.conv_reg(reg_feat)).float()
        centerness = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        if self.norm_on_bbox:
            bbox_pred = bbox_pred.clamp(min=0)
            if not self.training:
                bbox_pred = bbox_pred * stride
        else:
            bbox_pred = bbox_pred.exp()
        return cls_score, bbox_pred, centerness


@MODELS.register_module()
class BVRATSSHead(BVRMixin, ATSSHead):
    """mmdet ``ATSSHead`` + BVR (extra args as :class:`BVRRetinaHead`); ``dcn_on_last_conv``
    (official X-101 config) makes the last conv of each tower a DCNv2, as mmdet's
    ``AnchorFreeHead`` does."""
    _num_head_outputs = 3

    def __init__(self, *args, dcn_on_last_conv: bool = False, **kwargs):
        bvr = _pop_bvr(kwargs)
        self.dcn_on_last_conv = dcn_on_last_conv
        super().__init__(*args, **kwargs)
        self._init_bvr(**bvr)

    def _init_layers(self) -> None:
        super()._init_layers()
        if self.dcn_on_last_conv:
            for convs in (self.cls_convs, self.reg_convs):
                last = convs[-1]
                convs[-1] = ConvModule(last.in_channels, self.feat_channels, 3, padding=1,
                                       conv_cfg=dict(type='DCNv2'), norm_cfg=self.norm_cfg)

    def forward_predictions(self, cls_feats: List[Tensor], reg_feats: List[Tensor]) -> tuple:
        # the predictor part of ATSSHead.forward_single
        return ([self.atss_cls(f) for f in cls_feats],
                [s(self.atss_reg(f)).float() for f, s in zip(reg_feats, self.scales)],
                [self.atss_centerness(f) for f in reg_feats])


# ----------------------------------------------------------------------- official checkpoints
#: official (mmdet 2.8) BVR keys that mmattn computes instead of storing
DERIVED = re.compile(r'(^|\.)relative_positional_encoding\.(\d+\.)?base_embedding$')


def convert_bvr_official(state_dict: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], List[str]]:
    """An official BVR detector (or bare ``BVRHead``) state_dict -> mmattn's detector keys.

    ``bbox_head.bbox_head.X`` -> ``bbox_head.X``; ``bbox_head.{keypoint_head, cls_transformer,
    reg_transformer}.*`` keep their names; the positional tables (``...base_embedding``) are
    dropped (computed from the config). A bare head (keys ``bbox_head.*``, ``keypoint_head.*``,
    ``*_transformer.*`` at the top) is put under ``bbox_head.``. Returns (state_dict, dropped).
    """
    if any(k.startswith(('keypoint_head.', 'cls_transformer.', 'reg_transformer.'))
           for k in state_dict):
        state_dict = {f'bbox_head.{k}': v for k, v in state_dict.items()}
    out, dropped = {}, []
    for k, v in state_dict.items():
        if DERIVED.search(k):
            dropped.append(k)
            continue
        if k.startswith('bbox_head.bbox_head.'):
            k = 'bbox_head.' + k[len('bbox_head.bbox_head.'):]
        out[k] = v
    return out, dropped


def bvr_filter_fn(state_dict: Dict[str, Tensor], prefix: str,
                  model: Optional[nn.Module] = None) -> Dict[str, Tensor]:
    """Checkpoint-family filter: :func:`convert_bvr_official` of the keys under ``prefix``."""
    sub = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return convert_bvr_official(sub)[0]


def _register() -> None:
    from mmattn.utils.checkpoint import register_family
    register_family('bvr', bvr_filter_fn,
                    'bbox_head.keypoint_head.keypoint_layers.center.0.conv.weight')


_register()
