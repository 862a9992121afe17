"""ScatterFormer's 3D part: voxelisation, VFE, window grouping, CWI, pillar pooling, middle
encoder, and the detector in mmdet3d's slots (bad inputs, old checkpoint layout)."""
import logging
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmattn.models.backbones.scatterformer import (CWIFFN, AttnPillarPool, DynamicPFNVFE,
                                                   ScatterFormerBackbone, dynamic_voxel_coords,
                                                   scatterformer_filter_fn, unique_rows,
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


def test_voxel_coords_by_hand_and_as_mmdet3d_preprocessor():
    pts = torch.tensor([[0.0, 0.0, 0.0, 1, 1], [0.05, 0.05, 0.05, 1, 1], [0.33, 0.0, 0.0, 1, 1],
                        [100.0, 0.0, 0.0, 1, 1], [float('nan'), 0.0, 0.0, 1, 1]])
    cat, coors = dynamic_voxel_coords([pts, pts[:1]], PCR, VS)
    assert torch.equal(cat[:5].nan_to_num(7), pts.nan_to_num(7)) and cat.shape[0] == 6
    # x: floor(6.4 / 0.32) = 20, floor(6.73 / 0.32) = 21; z: floor(2 / 0.1875) = 10; far / NaN: -1
    assert coors.tolist() == [[0, 10, 20, 20], [0, 10, 20, 20], [0, 10, 20, 21], [0, -1, -1, -1],
                              [0, -1, -1, -1], [1, 10, 20, 20]]
    # the same coordinates as Det3DDataPreprocessor(voxel_type='dynamic') (mmcv's CPU op)
    from mmdet3d.models.data_preprocessors.voxelize import VoxelizationByGridShape
    layer = VoxelizationByGridShape(voxel_size=VS, point_cloud_range=PCR, max_num_points=-1,
                                    max_voxels=(-1, -1))
    clouds = [scene(), scene(seed=1), torch.zeros(0, 5)]
    ref = torch.cat([F.pad(layer(p), (1, 0), value=i) for i, p in enumerate(clouds)])
    assert torch.equal(dynamic_voxel_coords(clouds, PCR, VS)[1], ref.int())


def test_vfe_layout_is_mmdet3d_dynamic_vfe_and_order_free():
    from mmdet3d.models.voxel_encoders import DynamicVFE as MMDet3DDynamicVFE
    vfe = DynamicPFNVFE(5, (32, 64), VS, PCR)
    ref = MMDet3DDynamicVFE(5, [32, 64], with_cluster_center=True, with_voxel_center=True,
                            voxel_size=VS, point_cloud_range=PCR)
    assert {k: v.shape for k, v in vfe.state_dict().items()} == \
        {k: v.shape for k, v in ref.state_dict().items()}
    assert vfe.vfe_layers[0][0].weight.shape == (32, 11)
    assert vfe.vfe_layers[1][0].weight.shape == (64, 64)
    pts, coors = dynamic_voxel_coords([scene(), scene(seed=1)], PCR, VS)
    assert vfe(pts, coors)[0].shape[1] == 64  # training mode: batch statistics
    vfe.eval()
    feats, coords = vfe(pts, coors)
    inside = (coors[:, 1:] >= 0).all(1)
    assert torch.equal(coords, torch.unique(coors[inside].long(), dim=0))
    assert feats.shape == (coords.shape[0], 64) and set(coords[:, 0].tolist()) == {0, 1}
    # voxel features do not depend on the order of the points
    perm = torch.randperm(pts.shape[0])
    f2, c2 = vfe(pts[perm], coors[perm])
    assert torch.equal(coords, c2)
    torch.testing.assert_close(feats, f2)
    # one voxel by hand: first layer on [p, p - mean, p - centre], max, concat, second layer, max
    v = 5
    members = (coors.long() == coords[v]).all(1)
    p = pts[members]
    b, z, y, x = coords[v].tolist()
    centre = torch.tensor([x, y, z]) * torch.tensor(VS) + torch.tensor(VS) / 2 + \
        torch.tensor(PCR[:3])
    h = vfe.vfe_layers[0](torch.cat([p, p[:, :3] - p[:, :3].mean(0), p[:, :3] - centre], 1))
    h = torch.cat([h, h.max(0).values.expand_as(h)], 1)
    torch.testing.assert_close(feats[v], vfe.vfe_layers[1](h).max(0).values)
    with pytest.raises(ValueError, match=r'points of shape \(4,\)'):
        vfe(torch.zeros(4), torch.zeros(4, 4))


def test_window_partition_by_hand():
    coords = torch.tensor([[0, 0, 13, 1], [0, 3, 0, 0], [1, 0, 0, 0], [0, 1, 0, 12],
                           [0, 0, 11, 11]])
    perm, win, counts, offsets = window_partition(coords, 12)
    # windows (b, y//12, x//12): (0,0,0) <- rows 1, 4; (0,0,1) <- row 3; (0,1,0) <- row 0; (1,0,0)
    assert counts.tolist() == [2, 1, 1, 1] and offsets.tolist() == [0, 2, 3, 4]
    assert sorted(perm[:2].tolist()) == [1, 4] and perm[2:].tolist() == [3, 0, 2]
    assert win.tolist() == [0, 0, 1, 2, 3]


def test_unique_rows_is_torch_unique_of_rows():
    g = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.randint(0, 4, (300, 3), generator=g),
                      torch.randint(0, 2**21, (50, 3), generator=g),
                      torch.tensor([[2**21 - 1, 0, 2**21 - 1], [0, 2**21 - 1, 0]])]).int()
    rows = torch.cat([rows, rows[:40]])       # repeated rows
    want, want_inv = torch.unique(rows, dim=0, return_inverse=True)
    got, got_inv = unique_rows(rows)
    assert got.dtype == rows.dtype
    assert torch.equal(got, want) and torch.equal(got_inv, want_inv)


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
    # one pillar by hand: max(0, column max) query, keys with z embedding, masked empty slots
    p = 3
    members = ((sp.coords[:, 2] == pillars[p, 1]) & (sp.coords[:, 3] == pillars[p, 2])).nonzero()[:, 0]
    f, zs = sp.features[members], sp.coords[members, 1]
    q = f.max(0).values.clamp(min=0)  # the official spconv max pool starts from 0
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


@pytest.fixture(scope='module')
def detector():
    """The sample config's detector, narrowed (width 32, one layer per stage, one DED module)."""
    from mmdet3d.registry import MODELS as MODELS3D
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile('configs/scatterformer/scatterformer_sample-waymo.py')
    init_default_scope('mmdet3d')
    cfg.model.middle_encoder.update(dim=32, depths=(1, 1), pool_heads=2, num_heads=2)
    cfg.model.backbone.update(in_channels=32, out_channels=32, num_layers=1)
    cfg.model.bbox_head.in_channels = 32
    torch.manual_seed(0)
    model = MODELS3D.build(cfg.model)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    model.init_weights()
    logger.setLevel(level)
    return model


def _sample(boxes, name='frame.bin'):
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData
    s = Det3DDataSample(metainfo=dict(box_type_3d=LiDARInstance3DBoxes, lidar_path=name))
    gt = InstanceData()
    gt.bboxes_3d = LiDARInstance3DBoxes(torch.tensor(boxes).view(-1, 7))
    gt.labels_3d = torch.zeros(len(boxes), dtype=torch.long)
    s.gt_instances_3d = gt
    return s


def _run(model, clouds, train):
    """Through the data preprocessor (dynamic voxelisation), as the runner calls the model."""
    data = dict(inputs=dict(points=clouds),
                data_samples=[_sample([[1., 2, -1, 4, 2, 1.5, 0.]], f'f{i}.bin')
                              for i in range(len(clouds))])
    model.train(train)
    data = model.data_preprocessor(data, train)
    if train:
        return model(**data, mode='loss')
    with torch.no_grad():
        return model(**data, mode='predict')


def test_detector_is_built_from_mmdet3d_slots(detector):
    from mmdet3d.models.data_preprocessors import Det3DDataPreprocessor
    from mmdet3d.models.detectors import DynamicVoxelNet

    from mmattn.models.backbones.scatterformer import ScatterFormerMiddleEncoder
    from mmattn.models.necks.ded import CascadeDEDBackbone
    assert isinstance(detector, DynamicVoxelNet) and not detector.with_neck
    assert isinstance(detector.data_preprocessor, Det3DDataPreprocessor)
    assert detector.data_preprocessor.voxel_type == 'dynamic'
    assert isinstance(detector.voxel_encoder, DynamicPFNVFE)
    assert isinstance(detector.middle_encoder, ScatterFormerMiddleEncoder)
    assert isinstance(detector.backbone, CascadeDEDBackbone)
    # the slots compute what the points-in stack computes with the same weights
    stack = ScatterFormerBackbone(point_cloud_range=[-25.6, -25.6, -2.0, 25.6, 25.6, 4.0],
                                  voxel_size=detector.voxel_encoder.voxel_size, dim=32,
                                  num_heads=2, depths=(1, 1), win_size=12, pool_heads=2,
                                  stem_blocks=len(detector.middle_encoder.cpe.blocks))
    stack.vfe.load_state_dict(detector.voxel_encoder.state_dict())
    missing = stack.load_state_dict(detector.middle_encoder.state_dict(), strict=False)
    assert not missing.unexpected_keys and missing.missing_keys
    assert all(k.startswith('vfe.') for k in missing.missing_keys)
    stack.eval(), detector.eval()
    clouds = [scene(3000) * torch.tensor([3.5, 3.5, 1, 1, 1]), torch.zeros(0, 5)]
    data = detector.data_preprocessor(dict(inputs=dict(points=clouds),
                                           data_samples=[_sample([]), _sample([])]), False)
    with torch.no_grad():
        feats, coors = detector.voxel_encoder(data['inputs']['voxels']['voxels'],
                                              data['inputs']['voxels']['coors'])
        bev = detector.middle_encoder(feats, coors, 2)
        torch.testing.assert_close(bev, stack(clouds))
    # the sample config's 128 x 128 grid after the stride-2 stage
    assert bev.shape == (2, 32, 64, 64) and bev[0].abs().sum() > 0 and bev[1].abs().sum() == 0


@pytest.mark.slow
def test_detector_bad_inputs_train_and_predict(detector):
    """Empty clouds, points outside the range, NaN values, a frame of one voxel."""
    nan = scene(2000) * torch.tensor([3.5, 3.5, 1, 1, 1])
    nan[:5, 0] = float('nan')   # dropped by the voxel layer (coords -1)
    nan[5:8, 3] = float('inf')  # finite xyz: dropped by the detector, with a warning
    cases = {'empty': [torch.zeros(0, 5), torch.zeros(0, 5)],
             'outside': [torch.tensor([[100., 0, 0, 0, 0]]), torch.zeros(0, 5)],
             'nan': [scene(1000), nan],
             'one voxel': [torch.tensor([[1., 1, 0, .5, .5], [1.01, 1, 0, .2, .1]])]}
    for name, clouds in cases.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            losses = _run(detector, clouds, train=True)
            total = sum(v for k, v in losses.items() if k.startswith('loss'))
            assert torch.isfinite(total), (name, losses)
            total.backward()
            results = _run(detector, clouds, train=False)
        assert all(torch.isfinite(p.grad).all() for p in detector.parameters()
                   if p.grad is not None), name
        detector.zero_grad()
        assert len(results) == len(clouds)
        for r in results:
            boxes = r.pred_instances_3d.bboxes_3d.tensor
            assert boxes.shape[1] == 7 and torch.isfinite(boxes).all(), name
        messages = [str(w.message) for w in caught if 'NaN / inf' in str(w.message)]
        if name == 'nan':
            assert messages and all(m.startswith('f1.bin: 8 of 2000 points') for m in messages)
        else:
            assert not messages, messages
    bns = [m for m in detector.middle_encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all()
               for m in bns)


def test_old_checkpoint_layout_loads(detector, tmp_path):
    """Checkpoints of the earlier layout (points-in ``backbone``, DED ``neck``) load unchanged."""
    from mmengine.runner import load_checkpoint

    from mmattn.utils.checkpoint import filter_checkpoint
    new = detector.state_dict()

    def old_name(k: str) -> str:
        if k.startswith('voxel_encoder.vfe_layers.'):
            i, j, rest = k.split('.', 4)[2:]
            return f'backbone.vfe.pfn_layers.{i}.{"linear" if j == "0" else "norm"}.{rest}'
        if k.startswith('middle_encoder.'):
            return 'backbone.' + k[len('middle_encoder.'):]
        return 'neck.' + k[len('backbone.'):] if k.startswith('backbone.') else k

    old = {old_name(k): v.clone() + (1 if v.is_floating_point() else 0) for k, v in new.items()}
    assert 'backbone.vfe.pfn_layers.1.norm.running_var' in old and 'neck.layers.0.norms.0.weight' \
        in old and 'backbone.cpe.conv_in.weight' in old
    converted, prefix, _ = filter_checkpoint(dict(state_dict=old), 'scatterformer')
    assert prefix == '' and list(converted) == list(new)  # every key renamed, none lost
    assert scatterformer_filter_fn(new) == new  # the slot layout passes unchanged
    torch.save(dict(state_dict=old), tmp_path / 'old.pth')
    model = copy_of(detector)
    load_checkpoint(model, str(tmp_path / 'old.pth'), strict=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, new[k] + (1 if v.is_floating_point() else 0), msg=k)


def copy_of(model):
    import copy
    return copy.deepcopy(model)


def test_norm_momentum_reaches_every_batchnorm():
    bns = [m for m in small_backbone(norm_momentum=0.1).modules()
           if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) > 10 and all(m.momentum == 0.1 and m.eps == 1e-3 for m in bns)
    assert all(m.momentum == 0.01 for m in small_backbone().modules()
               if isinstance(m, torch.nn.BatchNorm1d))
