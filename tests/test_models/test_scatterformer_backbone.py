"""ScatterFormer's 3D part: voxelisation, VFE, window grouping, CWI, pillar pooling, backbone."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmattn.models.backbones.scatterformer import (CWIFFN, AttnPillarPool, DynamicVFE,
                                                   ScatterFormerBackbone, voxelize,
                                                   window_partition)
from mmattn.ops.sparse_conv import SparseVoxels

PCR = [-6.4, -6.4, -2.0, 6.4, 6.4, 4.0]   # 40 x 40 x 32 voxels of 0.32 x 0.32 x 0.1875
VS = [0.32, 0.32, 0.1875]


def scene(n: int = 600, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xyz = (torch.rand(n, 3, generator=g) * torch.tensor([14., 14., 7.]) -
           torch.tensor([7., 7., 2.5]))  # some points outside the range
    feats = torch.tanh(torch.rand(n, 2, generator=g) * 3)
    return torch.cat([xyz, feats], 1)


def test_voxelize_by_hand():
    pts = torch.tensor([[0.0, 0.0, 0.0, 1, 1], [0.05, 0.05, 0.05, 1, 1], [0.33, 0.0, 0.0, 1, 1],
                        [100.0, 0.0, 0.0, 1, 1]])
    kept, bidx, inv, coords = voxelize([pts, pts[:1]], PCR, VS)
    assert kept.shape[0] == 4 and bidx.tolist() == [0, 0, 0, 1]  # the far point is dropped
    # x: floor(6.4 / 0.32) = 20, floor(6.73 / 0.32) = 21; z: floor(2 / 0.1875) = 10
    assert coords.tolist() == [[0, 10, 20, 20], [0, 10, 20, 21], [1, 10, 20, 20]]
    assert inv.tolist() == [0, 0, 1, 2]


def test_vfe_channels_and_centre_offsets():
    vfe = DynamicVFE(5, (64, 64), VS, PCR)
    assert vfe.pfn_layers[0]['linear'].weight.shape == (32, 11)
    assert vfe.pfn_layers[1]['linear'].weight.shape == (64, 64)
    feats, coords = vfe([scene(), scene(seed=1)])
    assert feats.shape == (coords.shape[0], 64) and set(coords[:, 0].tolist()) == {0, 1}
    # voxel features do not depend on the order of the points
    p = scene()
    vfe.eval()
    f1, c1 = vfe([p])
    f2, c2 = vfe([p[torch.randperm(p.shape[0])]])
    assert torch.equal(c1, c2)
    torch.testing.assert_close(f1, f2)


def test_window_partition_by_hand():
    coords = torch.tensor([[0, 0, 13, 1], [0, 3, 0, 0], [1, 0, 0, 0], [0, 1, 0, 12],
                           [0, 0, 11, 11]])
    perm, win, counts, offsets = window_partition(coords, 12)
    # windows (b, y//12, x//12): (0,0,0) <- rows 1, 4; (0,0,1) <- row 3; (0,1,0) <- row 0; (1,0,0)
    assert counts.tolist() == [2, 1, 1, 1] and offsets.tolist() == [0, 2, 3, 4]
    assert sorted(perm[:2].tolist()) == [1, 4] and perm[2:].tolist() == [3, 0, 2]
    assert win.tolist() == [0, 0, 1, 2, 3]


def sites(n=80, shape=(6, 30, 30), channels=16, seed=0) -> SparseVoxels:
    g = torch.Generator().manual_seed(seed)
    z, y, x = shape
    keys = torch.randperm(z * y * x, generator=g)[:n]
    coords = torch.stack([torch.zeros_like(keys), keys // (y * x), keys // x % y, keys % x], 1)
    return SparseVoxels(torch.randn(n, channels, generator=g), coords, shape, 1)


def test_cwi_quarters_match_dense_convs():
    sp = sites()
    cwi = CWIFFN(16, win_size=12).eval()
    torch.nn.init.zeros_(cwi.fc2.weight)
    torch.nn.init.zeros_(cwi.fc2.bias)  # isolate the CWI part: out = x' + concat(branches)
    out = cwi(sp.features, sp)
    xn = cwi.bn(sp.features)
    dense = sp.replace(xn).dense()
    b, z, y, x = sp.coords.unbind(1)
    for i, conv in enumerate([cwi.conv_k, cwi.conv_h, cwi.conv_w]):
        w = conv.weight.permute(3, 0, 1, 2).unsqueeze(1)
        ref = F.conv3d(dense[:, 4 * i:4 * i + 4], w, groups=4,
                       padding=tuple(k // 2 for k in conv.kernel_size))
        ref = ref.permute(0, 2, 3, 4, 1)[b, z, y, x]
        torch.testing.assert_close(out[:, 4 * i:4 * i + 4], xn[:, 4 * i:4 * i + 4] + ref)
    torch.testing.assert_close(out[:, 12:], 2 * xn[:, 12:])  # identity quarter: x' + x'
    assert cwi.conv_h.kernel_size == (1, 1, 13) and cwi.conv_w.kernel_size == (1, 13, 1)


def test_pillar_pool_pairs_by_coordinates():
    sp = sites(n=60, shape=(4, 5, 5), channels=16)
    pool = AttnPillarPool(16, pillar_size=4, num_heads=2).eval()
    out, pillars = pool(sp)
    perm = torch.randperm(60)
    out2, pillars2 = pool(sp.permute(perm))
    assert torch.equal(pillars, pillars2)
    torch.testing.assert_close(out, out2)
    # one pillar by hand: max query, keys with z embedding, masked empty slots
    p = 3
    members = ((sp.coords[:, 2] == pillars[p, 1]) & (sp.coords[:, 3] == pillars[p, 2])).nonzero()[:, 0]
    f, zs = sp.features[members], sp.coords[members, 1]
    q = f.max(0).values
    mha = pool.attn
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    qh = (q @ wq.T + bq).view(2, 8)
    kh = ((f + pool.z_embed.weight[zs]) @ wk.T + bk).view(-1, 2, 8)
    vh = (f @ wv.T + bv).view(-1, 2, 8)
    att = torch.softmax((kh * qh).sum(-1) / math.sqrt(8), 0)  # [n, heads]
    o = (att[..., None] * vh).sum(0).reshape(16) @ mha.out_proj.weight.T + mha.out_proj.bias
    torch.testing.assert_close(out[p], pool.norm(o + q), rtol=1e-5, atol=1e-5)


def small_backbone(**kw) -> ScatterFormerBackbone:
    return ScatterFormerBackbone(point_cloud_range=PCR, voxel_size=VS, dim=32, num_heads=2,
                                 depths=(1, 1), win_size=4, pool_heads=2, **kw)


def test_backbone_shapes_gradients_and_order():
    torch.manual_seed(0)
    model = small_backbone(sla_backend='torch')
    assert model.sparse_shape == (33, 40, 40) and model.pool.pillar_size == 8
    pts = [scene(), scene(seed=1)]
    bev = model(pts)
    assert bev.shape == (2, 32, 20, 20)
    bev.square().mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters()), \
        [n for n, p in model.named_parameters() if p.grad is None]
    model.eval()
    with torch.no_grad():
        ref = model([pts[0]])
        shuffled = model([pts[0][torch.randperm(pts[0].shape[0])]])
    torch.testing.assert_close(ref, shuffled, rtol=1e-4, atol=1e-5)


def test_backbone_empty_inputs():
    model = small_backbone(sla_backend='torch').eval()
    far = torch.tensor([[50.0, 50.0, 0.0, 0.1, 0.1]])
    with torch.no_grad():
        bev = model([torch.zeros(0, 5), far, scene()])
    assert bev.shape == (3, 32, 20, 20)
    assert bev[0].abs().sum() == 0 and bev[1].abs().sum() == 0 and bev[2].abs().sum() > 0
    with torch.no_grad():
        assert model([torch.zeros(0, 5)]).abs().sum() == 0
    with pytest.raises(ValueError, match=r'sample 0 has points of shape \(4,\)'):
        model([torch.zeros(4)])


def test_detector_trains_and_predicts_on_empty_point_clouds():
    """No points at all / only points outside the range: finite losses, a prediction per sample."""
    from mmdet3d.registry import MODELS as MODELS3D
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData
    cfg = Config.fromfile('configs/scatterformer/scatterformer_sample-waymo.py')
    init_default_scope('mmdet3d')
    cfg.model.neck.num_layers = 1
    cfg.model.backbone.update(dim=32, depths=(1, 1), pool_heads=2, num_heads=2)
    cfg.model.neck.update(in_channels=32, out_channels=32)
    cfg.model.bbox_head.in_channels = 32
    model = MODELS3D.build(cfg.model)
    model.init_weights()

    def sample(boxes):
        s = Det3DDataSample(metainfo=dict(box_type_3d=LiDARInstance3DBoxes))
        gt = InstanceData()
        gt.bboxes_3d = LiDARInstance3DBoxes(torch.tensor(boxes).view(-1, 7))
        gt.labels_3d = torch.zeros(len(boxes), dtype=torch.long)
        s.gt_instances_3d = gt
        return s

    model.train()
    for pts in ([torch.zeros(0, 5), torch.zeros(0, 5)], [torch.tensor([[100., 0, 0, 0, 0]])]):
        losses = model.loss(dict(points=pts), [sample([[1., 2, -1, 4, 2, 1.5, 0.]]) for _ in pts])
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
    model.eval()
    with torch.no_grad():
        res = model.predict(dict(points=[torch.zeros(0, 5), scene()]), [sample([]), sample([])])
    assert len(res) == 2 and all(r.pred_instances_3d.bboxes_3d.tensor.shape[1] == 7 for r in res)


def test_norm_momentum_reaches_every_batchnorm():
    bns = [m for m in small_backbone(norm_momentum=0.1).modules()
           if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) > 10 and all(m.momentum == 0.1 and m.eps == 1e-3 for m in bns)
    assert all(m.momentum == 0.01 for m in small_backbone().modules()
               if isinstance(m, torch.nn.BatchNorm1d))
