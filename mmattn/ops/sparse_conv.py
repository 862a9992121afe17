"""Sparse 3D convolutions: rule books built from coordinates (plain PyTorch), or a library.

ScatterFormer's stem, down-sampling and cross-window interaction (CWI) use spconv and a CUDA-only
depthwise extension. Here:

* :class:`SubMConv3d`: submanifold conv (outputs at the input sites, centre-aligned kernel);
* :class:`SparseConv3d`: strided sparse conv; output sites sorted by ``(b, z, y, x)``;
* :class:`SubMDepthwiseConv3d`: the official ``SparseDwConv`` (weight ``[kz, ky, kx, C]``), always
  on the rule book (no library has a submanifold depthwise conv).

``SubMConv3d`` / ``SparseConv3d`` take ``backend='auto' | 'spconv' | 'mmcv' | 'rulebook'``, chosen
per call with the attention ops' dispatch (:func:`mmattn.ops.dispatch.choose_backend`: every
backend says whether it can run the call's tensors, ``auto`` takes the first that can, an explicit
backend that cannot raises with the reason):

* ``spconv`` (2.x, when installed; CPU and CUDA): the GPU users' library;
* ``mmcv``: ``mmcv.ops``' sparse conv functions (CUDA only: on a CPU, mmcv 2.1 raises
  ``RuntimeError: get_indice_pairs is not implemented on CPU``);
* ``rulebook``: sort/searchsorted neighbour lookups and gather-GEMM-scatter in PyTorch, any device,
  deterministic; the fallback.

``auto`` order: spconv, rulebook (mmcv only when asked for: its path has not run on a GPU in this
repository yet). On a CPU spconv 2.3.8 runs forward only (its backward asks for a CUDA stream), so
CPU training uses the rule book and CPU inference spconv when installed (measured 5x faster
forward for a SubM 3x3x3 at 20k sites, 128 channels, one thread, 2026-12-01:
``tools/analysis_tools/benchmark_sparse_conv.py``). Library backends recompute their index pairs
each call (no ``indice_key`` cache). Weights use spconv 2.x's layout
``[C_out, kz, ky, kx, C_in]`` so official checkpoints load as they are, whatever the backend. Each
backend equals a dense ``F.conv3d`` (cross-correlation) sampled at the active output sites
(``tests/test_ops/test_sparse_conv.py``). Coordinates are int ``[N, 4]`` rows ``(b, z, y, x)``.
"""
import importlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from .dispatch import choose_backend

__all__ = [
    'SPARSE_BACKENDS', 'SparseVoxels', 'pack_coords', 'subm_rulebook', 'strided_rulebook',
    'SubMConv3d', 'SubMDepthwiseConv3d', 'SparseConv3d', 'sparse_backend_checks',
    'choose_sparse_backend'
]

SPARSE_BACKENDS = ('auto', 'spconv', 'mmcv', 'rulebook')

IntTriple = Union[int, Sequence[int]]


def _triple(v: IntTriple) -> Tuple[int, int, int]:
    t = (v, v, v) if isinstance(v, int) else tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f'expected an int or 3 ints, got {v!r}')
    return t


@dataclass
class SparseVoxels:
    """Active sites of a batched 3D grid.

    Attributes:
        features: ``[N, C]``.
        coords: ``[N, 4]`` int64 ``(b, z, y, x)``.
        spatial_shape: ``(Z, Y, X)``.
        batch_size: ``B``.
        rulebooks: cache of rule books (:class:`RulebookPairs`) of these sites by kernel size,
            shared by every submanifold conv on them.
    """
    features: Tensor
    coords: Tensor
    spatial_shape: Tuple[int, int, int]
    batch_size: int
    rulebooks: Dict[str, 'RulebookPairs'] = field(default_factory=dict)

    def replace(self, features: Tensor) -> 'SparseVoxels':
        """Same sites (and rule books), new features."""
        if features.shape[0] != self.features.shape[0]:
            raise ValueError(f'SparseVoxels.replace: {features.shape[0]} rows for '
                             f'{self.features.shape[0]} sites')
        return SparseVoxels(features, self.coords, self.spatial_shape, self.batch_size,
                            self.rulebooks)

    def permute(self, order: Tensor) -> 'SparseVoxels':
        """Reorder the sites; cached rule books are dropped (they index rows)."""
        return SparseVoxels(self.features[order], self.coords[order], self.spatial_shape,
                            self.batch_size)

    def dense(self) -> Tensor:
        """``[B, C, Z, Y, X]`` with zeros at inactive sites."""
        z, y, x = self.spatial_shape
        out = self.features.new_zeros(self.batch_size, z, y, x, self.features.shape[1])
        b, cz, cy, cx = self.coords.long().unbind(1)
        out[b, cz, cy, cx] = self.features
        return out.permute(0, 4, 1, 2, 3).contiguous()


def pack_coords(coords: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """One int64 key per ``(b, z, y, x)`` row, ordered like the rows' lexicographic order."""
    z, y, x = (int(s) for s in spatial_shape)
    c = coords.long()
    return ((c[:, 0] * z + c[:, 1]) * y + c[:, 2]) * x + c[:, 3]


# Grids of at most this many cells (batch x Z x Y x X) look sites up in a dense int32 table (64 MiB
# at most) instead of a binary search over the sorted keys (~10x faster for a rule book here).
DENSE_LOOKUP_CELLS = 1 << 24


def _lookup(keys: Tensor, query: Tensor, num_cells: Optional[int] = None) -> Tensor:
    """Row index of each query key among the sites with (distinct) ``keys`` (``-1`` where
    absent). With ``num_cells`` (keys lie in ``[0, num_cells)``) up to
    :data:`DENSE_LOOKUP_CELLS`, a dense table; queries outside that range return any row (the
    callers mask them); else a binary search."""
    if keys.numel() == 0:
        return torch.full_like(query, -1)
    if num_cells is not None and num_cells <= DENSE_LOOKUP_CELLS:
        table = torch.full((num_cells, ), -1, dtype=torch.int32, device=keys.device)
        table[keys] = torch.arange(keys.numel(), dtype=torch.int32, device=keys.device)
        return table[query.clamp(0, num_cells - 1)].long()
    sorted_keys, order = torch.sort(keys)
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=sorted_keys.numel() - 1)
    return torch.where(sorted_keys[pos] == query, order[pos], torch.full_like(query, -1))


def _num_cells(batch_size: Optional[int], spatial_shape: Sequence[int]) -> Optional[int]:
    return None if batch_size is None else int(batch_size) * math.prod(int(s) for s in spatial_shape)


def _tap_ranges(kernel_size: Tuple[int, int, int], device: torch.device) -> List[Tensor]:
    """Per dimension ``d``, the tap index ``arange(kernel_size[d])`` (z, y, x)."""
    return [torch.arange(k, device=device) for k in kernel_size]


def _combine_taps(z: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Per-dimension terms ``[kz, N]``, ``[ky, N]``, ``[kx, N]`` -> ``[kz * ky * kx, N]``, tap
    ``(tz, ty, tx)`` (weight order: z slowest, x fastest) getting ``z[tz] + y[ty] + x[tx]``."""
    return (z[:, None, None] + y[None, :, None] + x[None, None, :]).flatten(0, 2)


def subm_rulebook(coords: Tensor, spatial_shape: Sequence[int], kernel_size: IntTriple,
                  dilation: IntTriple = 1, batch_size: Optional[int] = None) -> Tensor:
    """Neighbour table of a submanifold conv on distinct sites (``batch_size``:
    ``coords[:, 0] < batch_size``, lets small grids use a dense lookup table).

    Only the taps before the centre are looked up: site ``j`` is tap ``k``'s neighbour of ``i``
    exactly when ``i`` is the mirrored tap ``K - 1 - k``'s neighbour of ``j``, and the centre tap
    is each site itself. A tap's key is the site's key plus a constant (``pack_coords`` is
    linear), and a tap is inside the grid when it is in every dimension.

    Returns:
        ``[K, N]`` int64: for tap ``k`` and output site ``i``, the input row at
        ``coords[i] + (tap_k - kernel_size // 2) * dilation`` or ``-1``.
    """
    ks, dil = _triple(kernel_size), _triple(dilation)
    if any(k % 2 == 0 for k in ks):
        raise ValueError(f'subm_rulebook: kernel_size {ks} must be odd (centre-aligned)')
    c = coords.long()
    dev, n = c.device, c.shape[0]
    num_taps = math.prod(ks)
    half = num_taps // 2
    z, y, x = (int(s) for s in spatial_shape)
    shifts = [(t - k // 2) * d for t, k, d in zip(_tap_ranges(ks, dev), ks, dil)]  # per dim
    per_dim = [((c[None, :, i + 1] + sh[:, None] >= 0) & (c[None, :, i + 1] + sh[:, None] < size)
                ).to(torch.int8) for i, (sh, size) in enumerate(zip(shifts, (z, y, x)))]
    inside = _combine_taps(*per_dim)[:half] == 3  # inside the grid in all three dimensions
    key_shift = _combine_taps(shifts[0][:, None] * (y * x), shifts[1][:, None] * x,
                              shifts[2][:, None])[:half]  # [K // 2, 1]
    keys = pack_coords(c, spatial_shape)
    idx = _lookup(keys, (keys[None] + key_shift).view(-1), _num_cells(batch_size, spatial_shape))
    rulebook = torch.full((num_taps, n), -1, dtype=torch.long, device=dev)
    rulebook[:half] = torch.where(inside, idx.view(inside.shape), -1)
    rulebook[half] = torch.arange(n, device=dev)
    tap, site = (rulebook[:half] >= 0).nonzero(as_tuple=True)
    rulebook[num_taps - 1 - tap, rulebook[tap, site]] = site
    return rulebook


def strided_rulebook(coords: Tensor, spatial_shape: Sequence[int], kernel_size: IntTriple,
                     stride: IntTriple, padding: IntTriple
                     ) -> Tuple[Tensor, Tuple[int, int, int], Tensor]:
    """Output sites and input/output pairs of a regular (strided) sparse conv.

    An output site ``o`` reads input ``o * stride - padding + tap``; it is active when any of those
    inputs is. Each input site writes to the outputs ``(c + padding - tap) / stride`` that are
    whole and inside the grid (worked out per dimension); the distinct output keys (``unique``)
    are the output sites and their inverse places every pair, with no site lookup.

    Returns:
        out_coords ``[M, 4]`` sorted by ``(b, z, y, x)``, the output spatial shape, and
        ``[K, M]`` int64 input row per tap and output site (``-1`` where inactive).
    """
    ks, st, pad = _triple(kernel_size), _triple(stride), _triple(padding)
    out_shape = tuple((s + 2 * p - k) // d + 1 for s, k, d, p in zip(spatial_shape, ks, st, pad))
    if min(out_shape) <= 0:
        raise ValueError(f'strided_rulebook: spatial shape {tuple(spatial_shape)} is smaller '
                         f'than kernel {ks} with padding {pad}')
    c = coords.long()
    dev = c.device
    oz, oy, ox = out_shape
    outs, oks = [], []
    for i, t in enumerate(_tap_ranges(ks, dev)):  # per dimension: [k_d, N]
        num = c[None, :, i + 1] + pad[i] - t[:, None]
        o = torch.div(num, st[i], rounding_mode='floor')
        outs.append(o)
        oks.append(((o * st[i] == num) & (o >= 0) & (o < out_shape[i])).to(torch.int8))
    ok = _combine_taps(*oks) == 3  # [K, N]
    keys = _combine_taps((c[:, 0] * oz + outs[0]) * (oy * ox), outs[1] * ox, outs[2])
    tap, row = ok.nonzero(as_tuple=True)
    out_keys, out_idx = torch.unique(keys[tap, row], return_inverse=True)
    out_coords = torch.stack([out_keys // (oz * oy * ox), out_keys // (oy * ox) % oz,
                              out_keys // ox % oy, out_keys % ox], 1)
    rulebook = torch.full((ok.shape[0], out_keys.numel()), -1, dtype=torch.long, device=dev)
    rulebook[tap, out_idx] = row
    return out_coords, out_shape, rulebook


@dataclass
class RulebookPairs:
    """A rule book as ``(output row, input row)`` pairs grouped by tap: ``tap`` ``[P]`` (sorted),
    ``out_rows`` / ``in_rows`` ``[P]`` int64, ``counts[k]`` pairs of tap ``k``, ``num_out`` rows.
    ``identity_tap``: a tap whose pairs are ``(i, i)`` for every row (a submanifold conv's centre),
    kept out of the pair lists and applied to the features as they are (no gather / scatter)."""
    tap: Tensor
    out_rows: Tensor
    in_rows: Tensor
    counts: List[int]
    num_out: int
    identity_tap: Optional[int] = None

    @classmethod
    def from_rulebook(cls, rulebook: Tensor, identity_tap: Optional[int] = None
                      ) -> 'RulebookPairs':
        """From ``[K, N]`` input rows per tap and output site (``-1``: no input); with
        ``identity_tap``, ``rulebook[identity_tap]`` must be ``arange(N)``."""
        active = rulebook >= 0
        if identity_tap is not None:
            active[identity_tap] = False
        tap, out_rows = active.nonzero(as_tuple=True)
        counts = torch.bincount(tap, minlength=rulebook.shape[0]).tolist()
        return cls(tap, out_rows, rulebook[tap, out_rows], counts, rulebook.shape[1], identity_tap)


def _subm_pairs(x: 'SparseVoxels', kernel_size: Tuple[int, int, int]) -> RulebookPairs:
    """The submanifold rule book of ``x``'s sites, cached on ``x`` by kernel size: it depends on
    the sites and the kernel only, so convs with different ``indice_key`` s share it."""
    key = f'subm:{kernel_size}'
    pairs = x.rulebooks.get(key)
    if pairs is None:
        rulebook = subm_rulebook(x.coords, x.spatial_shape, kernel_size, batch_size=x.batch_size)
        pairs = RulebookPairs.from_rulebook(rulebook, identity_tap=rulebook.shape[0] // 2)
        x.rulebooks[key] = pairs
    return pairs


def _tap_slices(counts: List[int]) -> List[Tuple[int, slice]]:
    """``(tap, rows of its pairs)`` for the taps that have pairs."""
    out, start = [], 0
    for k, n in enumerate(counts):
        if n:
            out.append((k, slice(start, start + n)))
        start += n
    return out


class _RulebookConv(torch.autograd.Function):
    """``out[i] = sum_k x[rulebook[k, i]] @ weight[k]`` by gather-GEMM-scatter (the identity tap
    as one GEMM on ``x``), with the backward written out: the per-tap GEMMs write into one buffer
    and the weight gradient is filled tap by tap (autograd through ``cat`` / ``weight[k]`` copied
    every product and zero-filled a full weight gradient per tap)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, pairs: 'RulebookPairs') -> Tensor:
        taps, centre = _tap_slices(pairs.counts), pairs.identity_tap
        gathered = x.index_select(0, pairs.in_rows)  # [P, C_in]
        y = x.new_empty(gathered.shape[0], weight.shape[2])
        for k, rows in taps:
            torch.mm(gathered[rows], weight[k], out=y[rows])
        ctx.save_for_backward(x, gathered, weight)
        ctx.pairs, ctx.taps = pairs, taps
        out = x @ weight[centre] if centre is not None else x.new_zeros(pairs.num_out,
                                                                       weight.shape[2])
        return out.index_add_(0, pairs.out_rows, y)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor], None]:
        x, gathered, weight = ctx.saved_tensors
        pairs, taps, centre = ctx.pairs, ctx.taps, ctx.pairs.identity_tap
        gy = grad_out.index_select(0, pairs.out_rows)  # [P, C_out]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            gg = gy.new_empty(gathered.shape)
            for k, rows in taps:
                torch.mm(gy[rows], weight[k].t(), out=gg[rows])
            grad_x = grad_out @ weight[centre].t() if centre is not None else gg.new_zeros(x.shape)
            grad_x.index_add_(0, pairs.in_rows, gg)
        if ctx.needs_input_grad[1]:
            grad_w = weight.new_zeros(weight.shape)  # taps without pairs: 0
            for k, rows in taps:
                torch.mm(gathered[rows].t(), gy[rows], out=grad_w[k])
            if centre is not None:
                torch.mm(x.t(), grad_out, out=grad_w[centre])
        return grad_x, grad_w, None


def _conv_by_rulebook(x: Tensor, pairs: RulebookPairs, weight: Tensor) -> Tensor:
    """``out[i] = sum_k x[rulebook[k, i]] @ weight[k]``; weight ``[K, C_in, C_out]``."""
    if pairs.tap.numel() == 0 and pairs.identity_tap is None:
        return x.new_zeros(pairs.num_out, weight.shape[2])
    return _RulebookConv.apply(x, weight, pairs)


# ------------------------------------------------------------------------------------ backends
Check = Callable[[], Optional[str]]


def _import_reason(module: str, packages: Sequence[str]) -> Optional[str]:
    """``None`` when ``module`` imports; the reason when one of ``packages`` is absent (any other
    import error propagates: a broken install is not "not installed")."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if (err.name or '').split('.')[0] in packages:
            return f'{module} does not import ({err})'
        raise
    return None


def sparse_backend_checks(features: Tensor, needs_grad: bool = False) -> List[Tuple[str, Check]]:
    """``(name, check)`` of every concrete backend for convs on ``features`` (``auto`` order);
    ``needs_grad``: the call records a backward."""
    dev, dtype = features.device.type, features.dtype

    def spconv_check() -> Optional[str]:
        reason = _import_reason('spconv.pytorch', ('spconv', 'cumm', 'pccm'))
        if reason is None and dev not in ('cpu', 'cuda'):
            reason = f'{dev} tensors (spconv runs on cpu and cuda)'
        supported = (torch.float32, ) if dev == 'cpu' else (torch.float16, torch.float32)
        if reason is None and dtype not in supported:
            reason = f'dtype {dtype} on {dev} (supported: {supported})'
        if reason is None and features.shape[0] == 0:
            reason = 'no active sites (spconv 2.3.8 asserts "tensor must not empty")'
        if reason is None and dev == 'cpu' and needs_grad:
            # spconv 2.3.8's backward asks for a CUDA stream even for CPU tensors
            reason = ('a backward on cpu: spconv 2.3.8 raises "Found no NVIDIA driver on your '
                      'system" in indice_conv_backward (forward / no_grad only on a CPU)')
        return reason

    def mmcv_check() -> Optional[str]:
        if dev != 'cuda':
            return (f'{dev} tensors: mmcv 2.x sparse convs are CUDA only (on a CPU, mmcv 2.1 '
                    'raises "get_indice_pairs is not implemented on CPU")')
        reason = _import_reason('mmcv.ops.sparse_ops', ('mmcv', ))
        if reason is None and dtype not in (torch.float16, torch.float32):
            reason = f'dtype {dtype} (supported: float16, float32)'
        if reason is None and features.shape[0] == 0:
            reason = 'no active sites'
        return reason

    checks = dict(spconv=spconv_check, mmcv=mmcv_check, rulebook=lambda: None)
    # mmcv last, so 'auto' never takes it: its path has not run on a GPU yet (explicit use only)
    return [(name, checks[name]) for name in ('spconv', 'rulebook', 'mmcv')]


def choose_sparse_backend(backend: str, features: Tensor, needs_grad: bool = False) -> str:
    """The backend that runs a sparse conv on ``features`` (see the module docstring)."""
    if backend not in SPARSE_BACKENDS:
        raise ValueError(f'sparse_conv: backend must be one of {SPARSE_BACKENDS}, got {backend!r}')
    checks = sparse_backend_checks(features, needs_grad)
    if backend == 'auto':
        return choose_backend('sparse_conv', 'auto', checks)
    reason = dict(checks)[backend]()
    if reason is not None:
        raise ValueError(f'sparse_conv: backend={backend!r} cannot run these inputs: {reason}')
    return backend


def _spconv_conv(conv: '_SparseConvBase', x: SparseVoxels, subm: bool
                 ) -> Tuple[Tensor, Tensor, Tuple[int, int, int]]:
    """spconv 2.x with ``conv``'s weight (same layout) -> features, coords, spatial shape."""
    import spconv.pytorch as spconv
    impl = conv.__dict__.get('_spconv_impl')  # kept out of the module tree (no state_dict keys)
    if impl is None:
        kw = {} if subm else dict(stride=conv.stride, padding=conv.padding)
        cls = spconv.SubMConv3d if subm else spconv.SparseConv3d
        with torch.device('meta'):
            impl = cls(conv.in_channels, conv.out_channels, conv.kernel_size, bias=False, **kw)
        conv.__dict__['_spconv_impl'] = impl
    impl.weight = conv.weight
    out = impl(spconv.SparseConvTensor(x.features.contiguous(), x.coords.int().contiguous(),
                                       list(x.spatial_shape), x.batch_size))
    return out.features, out.indices.long(), tuple(int(v) for v in out.spatial_shape)


def _mmcv_conv(conv: '_SparseConvBase', x: SparseVoxels, subm: bool
               ) -> Tuple[Tensor, Tensor, Tuple[int, int, int]]:
    """mmcv.ops' sparse conv functions (weight ``[kz, ky, kx, C_in, C_out]`` there)."""
    from mmcv.ops import sparse_functional, sparse_ops
    stride = (1, 1, 1) if subm else conv.stride
    padding = tuple(k // 2 for k in conv.kernel_size) if subm else conv.padding
    outids, pairs, pair_num = sparse_ops.get_indice_pairs(
        x.coords.int().contiguous(), x.batch_size, list(x.spatial_shape), list(conv.kernel_size),
        list(stride), list(padding), [1, 1, 1], [0, 0, 0], subm, False)
    weight = conv.weight.permute(1, 2, 3, 4, 0).contiguous()
    fn = sparse_functional.indice_subm_conv if subm else sparse_functional.indice_conv
    feats = fn(x.features.contiguous(), weight, pairs, pair_num, outids.shape[0])
    shape = x.spatial_shape if subm else tuple(
        (s + 2 * p - k) // d + 1
        for s, k, d, p in zip(x.spatial_shape, conv.kernel_size, conv.stride, conv.padding))
    return feats, outids.long(), shape


def _library_conv(backend: str, conv: '_SparseConvBase', x: SparseVoxels, subm: bool
                  ) -> SparseVoxels:
    fn = _spconv_conv if backend == 'spconv' else _mmcv_conv
    feats, coords, shape = fn(conv, x, subm)
    if conv.bias is not None:
        feats = feats + conv.bias
    if subm:
        if not torch.equal(coords, x.coords.long()):  # libraries keep the input order; check it
            raise RuntimeError(f'sparse_conv: {backend} changed the order of submanifold sites')
        return x.replace(feats)
    order = torch.argsort(pack_coords(coords, shape))  # the rule book's (b, z, y, x) order
    return SparseVoxels(feats[order], coords[order], shape, x.batch_size)


class _SparseConvBase(nn.Module):

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntTriple,
                 bias: bool, indice_key: str = None, backend: str = 'auto'):
        super().__init__()
        if backend not in SPARSE_BACKENDS:
            raise ValueError(f'{type(self).__name__}: backend must be one of {SPARSE_BACKENDS}, '
                             f'got {backend!r}')
        self.backend = backend
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _triple(kernel_size)
        self.indice_key = indice_key
        self.weight = nn.Parameter(torch.empty(out_channels, *self.kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # kaiming_uniform(a=sqrt(5)) over fan_in = C_in * kernel volume, like nn.Conv3d / spconv
        fan_in = self.in_channels * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -math.sqrt(3) * bound, math.sqrt(3) * bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def _check(self, x: SparseVoxels) -> None:
        if x.features.dim() != 2 or x.features.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__}: features of shape '
                             f'{tuple(x.features.shape)}, expected [N, {self.in_channels}]')

    def _needs_grad(self, x: SparseVoxels) -> bool:
        return torch.is_grad_enabled() and (x.features.requires_grad or any(
            p.requires_grad for p in self.parameters()))

    def _weight_kio(self) -> Tensor:
        return self.weight.reshape(self.out_channels, -1, self.in_channels).permute(1, 2, 0)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'bias={self.bias is not None}, indice_key={self.indice_key!r}, '
                f'backend={self.backend!r}')


class SubMConv3d(_SparseConvBase):
    """Submanifold sparse conv: outputs only at the input sites; weight ``[C_out, kz, ky, kx, C_in]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntTriple = 3,
                 bias: bool = True, indice_key: str = None, backend: str = 'auto'):
        super().__init__(in_channels, out_channels, kernel_size, bias, indice_key, backend)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        self._check(x)
        backend = choose_sparse_backend(self.backend, x.features, self._needs_grad(x))
        if backend != 'rulebook':
            return _library_conv(backend, self, x, subm=True)
        pairs = _subm_pairs(x, self.kernel_size)
        out = _conv_by_rulebook(x.features, pairs, self._weight_kio())
        if self.bias is not None:
            out = out + self.bias
        return x.replace(out)


class SparseConv3d(_SparseConvBase):
    """Strided sparse conv; weight ``[C_out, kz, ky, kx, C_in]``; new sites sorted by (b, z, y, x)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntTriple = 3,
                 stride: IntTriple = 1, padding: IntTriple = 0, bias: bool = True,
                 indice_key: str = None, backend: str = 'auto'):
        super().__init__(in_channels, out_channels, kernel_size, bias, indice_key, backend)
        self.stride, self.padding = _triple(stride), _triple(padding)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        self._check(x)
        backend = choose_sparse_backend(self.backend, x.features, self._needs_grad(x))
        if backend != 'rulebook':
            return _library_conv(backend, self, x, subm=False)
        coords, shape, rb = strided_rulebook(x.coords, x.spatial_shape, self.kernel_size,
                                             self.stride, self.padding)
        out = _conv_by_rulebook(x.features, RulebookPairs.from_rulebook(rb), self._weight_kio())
        if self.bias is not None:
            out = out + self.bias
        return SparseVoxels(out, coords, shape, x.batch_size)


class SubMDepthwiseConv3d(nn.Module):
    """ScatterFormer's ``SparseDwConv``: submanifold depthwise conv without bias.

    ``out[i, c] = sum_k x[nbr_k(i), c] * weight[kz, ky, kx, c]``; the weight keeps the official
    ``[kz, ky, kx, C]`` layout and ``randn`` (std 1) initialisation.
    """

    def __init__(self, channels: int, kernel_size: IntTriple, indice_key: str = None):
        super().__init__()
        self.channels = channels
        self.kernel_size = _triple(kernel_size)
        self.indice_key = indice_key
        self.weight = nn.Parameter(torch.randn(*self.kernel_size, channels))

    def forward(self, features: Tensor, sites: SparseVoxels) -> Tensor:
        """features ``[N, C]`` on ``sites`` (whose rule-book cache is used) -> ``[N, C]``."""
        if features.dim() != 2 or features.shape[1] != self.channels:
            raise ValueError(f'SubMDepthwiseConv3d: features of shape {tuple(features.shape)}, '
                             f'expected [N, {self.channels}]')
        pairs = _subm_pairs(sites, self.kernel_size)
        w = self.weight.reshape(-1, self.channels)
        out = features * w[pairs.identity_tap]  # the centre tap: every site itself
        return out.index_add_(0, pairs.out_rows, features.index_select(0, pairs.in_rows)
                              * w.index_select(0, pairs.tap))

    def extra_repr(self) -> str:
        return f'{self.channels}, kernel_size={self.kernel_size}, indice_key={self.indice_key!r}'
