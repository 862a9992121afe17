"""Sparse convs vs dense ``F.conv3d`` sampled at the active sites (the oracle)."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from mmattn.ops import sparse_conv
from mmattn.ops.sparse_conv import (SparseConv3d, SparseVoxels, SubMConv3d, SubMDepthwiseConv3d,
                                    choose_sparse_backend, sparse_backend_checks, subm_rulebook)


@pytest.fixture(params=['table', 'search'], autouse=True)
def lookup(request, monkeypatch):
    """Every test with both site lookups of the rule books: the dense table (grids up to
    ``DENSE_LOOKUP_CELLS`` cells) and the binary search over sorted keys (larger grids)."""
    if request.param == 'search':
        monkeypatch.setattr(sparse_conv, 'DENSE_LOOKUP_CELLS', 0)
    return request.param


def random_sites(batch: int = 2, shape=(5, 9, 11), n: int = 60, channels: int = 4,
                 seed: int = 0) -> SparseVoxels:
    g = torch.Generator().manual_seed(seed)
    z, y, x = shape
    keys = torch.randperm(batch * z * y * x, generator=g)[:n]
    coords = torch.stack([keys // (z * y * x), keys // (y * x) % z, keys // x % y, keys % x], 1)
    feats = torch.randn(n, channels, generator=g, dtype=torch.float64)
    return SparseVoxels(feats, coords, shape, batch)


def dense_at(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    b, z, y, x = coords.long().unbind(1)
    return dense.permute(0, 2, 3, 4, 1)[b, z, y, x]


@pytest.mark.parametrize('kernel', [(3, 3, 3), (1, 1, 13), (1, 13, 1), (3, 1, 5)])
def test_subm_conv_equals_dense(kernel):
    sp = random_sites()
    conv = SubMConv3d(4, 6, kernel, bias=True).double()
    out = conv(sp)
    assert torch.equal(out.coords, sp.coords)
    # spconv layout [out, kz, ky, kx, in] -> torch [out, in, kz, ky, kx]
    w = conv.weight.permute(0, 4, 1, 2, 3)
    ref = F.conv3d(sp.dense(), w, conv.bias, padding=tuple(k // 2 for k in kernel))
    torch.testing.assert_close(out.features, dense_at(ref, sp.coords), rtol=1e-10, atol=1e-10)
    # gradients of features, weight and bias: those of the dense conv sampled at the sites
    feats = sp.features.clone().requires_grad_()
    g = torch.randn_like(out.features)
    params = (feats, conv.weight, conv.bias)
    grads = torch.autograd.grad((conv(sp.replace(feats)).features * g).sum(), params)
    ref = dense_at(F.conv3d(sp.replace(feats).dense(), conv.weight.permute(0, 4, 1, 2, 3),
                            conv.bias, padding=tuple(k // 2 for k in kernel)), sp.coords)
    for a, b in zip(grads, torch.autograd.grad((ref * g).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('kernel', [(3, 3, 3), (1, 1, 13), (1, 13, 1)])
def test_depthwise_conv_equals_dense(kernel):
    sp = random_sites(channels=5)
    conv = SubMDepthwiseConv3d(5, kernel).double()
    out = conv(sp.features, sp)
    w = conv.weight.permute(3, 0, 1, 2).unsqueeze(1)  # [C, 1, kz, ky, kx]
    ref = F.conv3d(sp.dense(), w, groups=5, padding=tuple(k // 2 for k in kernel))
    torch.testing.assert_close(out, dense_at(ref, sp.coords), rtol=1e-10, atol=1e-10)
    # gradients of features and weight: those of the dense conv sampled at the sites
    feats = sp.features.clone().requires_grad_()
    g = torch.randn_like(out)
    grads = torch.autograd.grad((conv(feats, sp) * g).sum(), (feats, conv.weight))
    ref = dense_at(F.conv3d(sp.replace(feats).dense(), conv.weight.permute(3, 0, 1, 2).unsqueeze(1),
                            groups=5, padding=tuple(k // 2 for k in kernel)), sp.coords)
    ref_grads = torch.autograd.grad((ref * g).sum(), (feats, conv.weight))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('kernel,stride,padding', [(3, 2, 1), ((3, 1, 1), (2, 1, 1), 0),
                                                   (2, 2, 0)])
def test_strided_conv_equals_dense(kernel, stride, padding):
    sp = random_sites(shape=(7, 9, 10), n=120)
    conv = SparseConv3d(4, 3, kernel, stride, padding, bias=False).double()
    out = conv(sp)
    ref = F.conv3d(sp.dense(), conv.weight.permute(0, 4, 1, 2, 3), stride=stride, padding=padding)
    assert tuple(ref.shape[2:]) == out.spatial_shape
    # active outputs: exactly the sites whose receptive field holds an active input
    mask = F.conv3d((sp.dense().abs().sum(1, keepdim=True) > 0).double(),
                    torch.ones(1, 1, *conv.kernel_size, dtype=torch.float64), stride=stride,
                    padding=padding)[:, 0] > 0
    assert out.coords.shape[0] == int(mask.sum())
    b, z, y, x = out.coords.unbind(1)
    assert bool(mask[b, z, y, x].all())
    torch.testing.assert_close(out.features, dense_at(ref, out.coords), rtol=1e-10, atol=1e-10)
    # gradients of features and weight: those of the dense conv at the active outputs
    feats = sp.features.clone().requires_grad_()
    g = torch.randn_like(out.features)
    grads = torch.autograd.grad((conv(sp.replace(feats)).features * g).sum(), (feats, conv.weight))
    ref = dense_at(F.conv3d(sp.replace(feats).dense(), conv.weight.permute(0, 4, 1, 2, 3),
                            stride=stride, padding=padding), out.coords)
    ref_grads = torch.autograd.grad((ref * g).sum(), (feats, conv.weight))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # sorted by (b, z, y, x): deterministic order
    keys = ((b * 100 + z) * 100 + y) * 100 + x
    assert bool((keys[1:] > keys[:-1]).all())


def test_empty_and_cache():
    sp = SparseVoxels(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.long), (4, 4, 4), 1)
    assert SubMConv3d(4, 2, 3, indice_key='a')(sp).features.shape == (0, 2)
    assert SparseConv3d(4, 2, 3, 2, 1)(sp).features.shape == (0, 2)
    assert list(sp.rulebooks) == ['subm:(3, 3, 3)']
    cached = sp.rulebooks['subm:(3, 3, 3)']
    SubMConv3d(4, 2, 3, indice_key='b')(sp)  # same sites and kernel: the same rule book
    assert sp.rulebooks['subm:(3, 3, 3)'] is cached and len(sp.rulebooks) == 1
    rb = subm_rulebook(torch.tensor([[0, 1, 1, 1]]), (3, 3, 3), 3)
    assert rb.shape == (27, 1) and int(rb[13, 0]) == 0 and int((rb >= 0).sum()) == 1
    with pytest.raises(ValueError, match='expected \\[N, 4\\]'):
        SubMConv3d(4, 2)(SparseVoxels(torch.zeros(3, 5), torch.zeros(3, 4, dtype=torch.long),
                                      (4, 4, 4), 1))
    with pytest.raises(ValueError, match='must be odd'):
        subm_rulebook(torch.zeros(1, 4, dtype=torch.long), (3, 3, 3), (2, 3, 3))


# ------------------------------------------------------------------------------------ backends
def _available(features: torch.Tensor):
    return [name for name, check in sparse_backend_checks(features) if check() is None]


BACKENDS = _available(torch.zeros(1, 1))  # on CPU float32: rulebook, + spconv when installed
GRAD_BACKENDS = [n for n, c in sparse_backend_checks(torch.zeros(1, 1), True) if c() is None]


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('kernel', [(3, 3, 3), (1, 1, 13), (3, 1, 5)])
def test_every_available_backend_equals_dense_subm(backend, kernel):
    sp = random_sites(n=80)
    sp = SparseVoxels(sp.features.float(), sp.coords, sp.spatial_shape, sp.batch_size)
    conv = SubMConv3d(4, 6, kernel, bias=True, backend=backend)
    feats = sp.features.clone().requires_grad_(backend in GRAD_BACKENDS)
    with torch.set_grad_enabled(backend in GRAD_BACKENDS):
        out = conv(sp.replace(feats))
    assert torch.equal(out.coords, sp.coords)
    w = conv.weight.permute(0, 4, 1, 2, 3)
    dense_in = sp.replace(feats).dense()
    ref = dense_at(F.conv3d(dense_in, w, conv.bias, padding=tuple(k // 2 for k in kernel)),
                   sp.coords)
    torch.testing.assert_close(out.features, ref, rtol=1e-5, atol=1e-5)
    if backend not in GRAD_BACKENDS:
        return
    g = torch.randn_like(ref)
    grads = torch.autograd.grad((out.features * g).sum(), (feats, conv.weight))
    ref_grads = torch.autograd.grad((ref * g).sum(), (feats, conv.weight))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('kernel,stride,padding', [(3, 2, 1), ((3, 1, 1), (2, 1, 1), 0)])
def test_every_available_backend_equals_dense_strided(backend, kernel, stride, padding):
    sp = random_sites(shape=(7, 9, 10), n=120)
    sp = SparseVoxels(sp.features.float(), sp.coords, sp.spatial_shape, sp.batch_size)
    conv = SparseConv3d(4, 3, kernel, stride, padding, bias=False, backend=backend)
    with torch.no_grad():
        out = conv(sp)
    ref = F.conv3d(sp.dense(), conv.weight.permute(0, 4, 1, 2, 3), stride=stride, padding=padding)
    assert tuple(ref.shape[2:]) == out.spatial_shape
    mask = F.conv3d((sp.dense().abs().sum(1, keepdim=True) > 0).float(),
                    torch.ones(1, 1, *conv.kernel_size), stride=stride, padding=padding)[:, 0] > 0
    active = mask.nonzero()
    expected = torch.stack([active[:, 0], active[:, 1], active[:, 2], active[:, 3]], 1)
    assert torch.equal(out.coords, expected)  # the active sites, sorted by (b, z, y, x)
    torch.testing.assert_close(out.features, dense_at(ref, out.coords), rtol=1e-5, atol=1e-5)


def test_backend_choice_and_reasons():
    x = torch.zeros(3, 4)
    assert choose_sparse_backend('auto', x, needs_grad=True) == 'rulebook'  # CPU training
    assert choose_sparse_backend('auto', x) == ('spconv' if 'spconv' in BACKENDS else 'rulebook')
    assert choose_sparse_backend('rulebook', x.double()) == 'rulebook'
    with pytest.raises(ValueError, match='CUDA only.*get_indice_pairs is not implemented on CPU'):
        choose_sparse_backend('mmcv', x)
    if 'spconv' not in BACKENDS:
        with pytest.raises(ValueError, match="backend='spconv' cannot run.*does not import"):
            choose_sparse_backend('spconv', x)
    else:
        with pytest.raises(ValueError, match='dtype torch.float64 on cpu'):
            choose_sparse_backend('spconv', x.double())
        with pytest.raises(ValueError, match='a backward on cpu'):
            choose_sparse_backend('spconv', x, needs_grad=True)
    if 'spconv' in BACKENDS:  # spconv asserts on empty inputs: auto takes the rule book
        assert choose_sparse_backend('auto', x[:0]) == 'rulebook'
        sp = random_sites()
        conv = SubMConv3d(4, 4)
        with torch.no_grad():
            out = conv(SparseVoxels(sp.features[:0].float(), sp.coords[:0], sp.spatial_shape, 2))
        assert out.features.shape == (0, 4)
    with pytest.raises(ValueError, match='backend must be one of'):
        SubMConv3d(4, 4, backend='cuda')
    order = [name for name, _ in sparse_backend_checks(torch.zeros(1, 1, device='meta'))]
    assert order == ['spconv', 'rulebook', 'mmcv']  # auto never reaches mmcv


@pytest.mark.parametrize('kernel_size,dilation', [((3, 3, 3), 1), ((1, 1, 7), 1),
                                                  ((1, 5, 1), 1), ((3, 1, 5), (2, 1, 2))])
def test_subm_rulebook_equals_a_lookup_of_every_tap(kernel_size, dilation):
    # only the taps before the centre are looked up; the rest mirror them: check every tap
    sp = random_sites(batch=2, shape=(5, 9, 11), n=300)
    rows = {tuple(r): i for i, r in enumerate(sp.coords.tolist())}
    rb = subm_rulebook(sp.coords, sp.spatial_shape, kernel_size, dilation, batch_size=2)
    dil = (dilation, ) * 3 if isinstance(dilation, int) else dilation
    taps = [[(t - k // 2) * d for t, k, d in zip(tap, kernel_size, dil)]
            for tap in itertools.product(*(range(k) for k in kernel_size))]
    expected = [[rows.get((b, z + dz, y + dy, x + dx), -1) for b, z, y, x in sp.coords.tolist()]
                for dz, dy, dx in taps]
    assert rb.tolist() == expected and (rb >= 0).sum() > 300


def test_dense_table_and_binary_search_build_the_same_rule_books(monkeypatch):
    sp = random_sites(batch=3, shape=(6, 13, 17), n=400)
    table = sparse_conv.subm_rulebook(sp.coords, sp.spatial_shape, (3, 3, 3), batch_size=3)
    monkeypatch.setattr(sparse_conv, 'DENSE_LOOKUP_CELLS', 0)
    search = sparse_conv.subm_rulebook(sp.coords, sp.spatial_shape, (3, 3, 3), batch_size=3)
    assert torch.equal(table, search) and (table >= 0).sum() > 400  # neighbours found
