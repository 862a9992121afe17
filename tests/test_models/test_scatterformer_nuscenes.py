"""The official (OpenPCDet) nuScenes ScatterFormer checkpoint layout -> the nuScenes config.

No nuScenes checkpoint is stored here; :func:`official_state_dict` writes the key layout and shapes
that the official modules (skyhehe123/ScatterFormer ``a23f434``) give for
``tools/cfgs/nuscenes_models/scatterformer.yaml``, read from the official code:

* ``vfe``: ``DynamicVoxelVFE`` -> ``pfn_layers.{i}`` = ``PFNLayerV2(linear (no bias), norm)``
  (``backbones_3d/vfe/dynamic_voxel_vfe.py``, ``dynamic_pillar_vfe.py``);
* ``backbone_3d``: ``ScatterFormer`` (``backbones_3d/scatterformer.py``): ``cpe`` =
  SparseSequential(post_act_block(subm), 3 x SparseBasicBlock (convs with bias), post_act_block
  (spconv (3,1,1)/(2,1,1))); ``stage1`` = (ScatterFormerLayer3x, BatchNorm1d, SparseConv3d);
  ``stage2`` = (ScatterFormerLayer3x, BatchNorm1d); ``app`` = AttnPillarPool(LayerNorm,
  MultiheadAttention(8 heads), Embedding(sparse_z // 4)); layers hold ``norm_layers``,
  ``attn_layers`` (``qkv`` without bias, ``proj``) and ``cffn_layers`` (``bn``, ``conv_k/h/w`` =
  SparseDwConv weights ``[kz, ky, kx, C/4]``, ``bn2``, ``fc1``, ``fc2``); spconv weights
  ``[C_out, kz, ky, kx, C_in]``;
* ``backbone_2d``: ``CascadeDEDBackbone`` -> ``layers.{i}`` = DEDBackbone(``encoder``,
  ``decoder``, ``decoder_norm``) of ``BasicBlock`` (``conv1``, ``bn1``, ``conv2``, ``bn2``,
  ``downsample_layer``) (``backbones_2d/bev_backbone_ded.py``, ``base_bev_backbone.py``);
* ``dense_head``: ``TransFusionHead`` (a few of its keys: it has no counterpart here).

Output parity uses the official code's outputs in ``tests/data/scatterformer_nuscenes/`` (its
README says how they were produced): the DED, and the parts of ``backbone_3d`` that run without
CUDA (stem, stage norms, strided conv, pillar pooling), the latter also fixing the official
``backbone_3d`` key list.
"""
from collections import OrderedDict
from typing import Dict, Tuple

import pytest
import torch

import mmattn.models.backbones.scatterformer as sf
from mmattn.utils.checkpoint import (FAMILY_MODULES, CheckpointError, filter_checkpoint,
                                     get_family, match_state_dict, unwrap_state_dict)

CONFIG = 'configs/scatterformer/scatterformer_nuscenes.py'
DIM, WIN, PILLAR, VFE_IN = 128, 20, 41 // 4, 5 + 6


def _bn(prefix: str, c: int) -> Dict[str, Tuple[int, ...]]:
    return {f'{prefix}.weight': (c, ), f'{prefix}.bias': (c, ), f'{prefix}.running_mean': (c, ),
            f'{prefix}.running_var': (c, ), f'{prefix}.num_batches_tracked': ()}


def official_shapes() -> 'OrderedDict[str, Tuple[int, ...]]':
    """Key -> shape of the official nuScenes ScatterFormer's ``model_state``."""
    s: Dict[str, Tuple[int, ...]] = OrderedDict()
    s['vfe.pfn_layers.0.linear.weight'] = (32, VFE_IN)
    s.update(_bn('vfe.pfn_layers.0.norm', 32))
    s['vfe.pfn_layers.1.linear.weight'] = (64, 64)
    s.update(_bn('vfe.pfn_layers.1.norm', 64))
    b3 = 'backbone_3d'
    s[f'{b3}.cpe.0.0.weight'] = (DIM, 3, 3, 3, 64)
    s.update(_bn(f'{b3}.cpe.0.1', DIM))
    for blk in (1, 2, 3):
        for j in (1, 2):
            s[f'{b3}.cpe.{blk}.conv{j}.weight'] = (DIM, 3, 3, 3, DIM)
            s[f'{b3}.cpe.{blk}.conv{j}.bias'] = (DIM, )
            s.update(_bn(f'{b3}.cpe.{blk}.bn{j}', DIM))
    s[f'{b3}.cpe.4.0.weight'] = (DIM, 3, 1, 1, DIM)
    s.update(_bn(f'{b3}.cpe.4.1', DIM))
    for stage in (1, 2):
        p = f'{b3}.stage{stage}.0'
        for i in range(3):
            s.update(_bn(f'{p}.norm_layers.{i}', DIM))
        for i in range(3):
            s[f'{p}.attn_layers.{i}.qkv.weight'] = (3 * DIM, DIM)
            s[f'{p}.attn_layers.{i}.proj.weight'] = (DIM, DIM)
            s[f'{p}.attn_layers.{i}.proj.bias'] = (DIM, )
        for i in range(3):
            c = f'{p}.cffn_layers.{i}'
            s.update(_bn(f'{c}.bn', DIM))
            s[f'{c}.conv_k.weight'] = (3, 3, 3, DIM // 4)
            s[f'{c}.conv_h.weight'] = (1, 1, WIN + 1, DIM // 4)
            s[f'{c}.conv_w.weight'] = (1, WIN + 1, 1, DIM // 4)
            s.update(_bn(f'{c}.bn2', DIM))
            s[f'{c}.fc1.weight'], s[f'{c}.fc1.bias'] = (2 * DIM, DIM), (2 * DIM, )
            s[f'{c}.fc2.weight'], s[f'{c}.fc2.bias'] = (DIM, 2 * DIM), (DIM, )
        s.update(_bn(f'{b3}.stage{stage}.1', DIM))
        if stage == 1:
            s[f'{b3}.stage1.2.weight'] = (DIM, 3, 3, 3, DIM)
    s.update({f'{b3}.app.norm.weight': (DIM, ), f'{b3}.app.norm.bias': (DIM, ),
              f'{b3}.app.self_attn.in_proj_weight': (3 * DIM, DIM),
              f'{b3}.app.self_attn.in_proj_bias': (3 * DIM, ),
              f'{b3}.app.self_attn.out_proj.weight': (DIM, DIM),
              f'{b3}.app.self_attn.out_proj.bias': (DIM, ),
              f'{b3}.app.pos_embedding.weight': (PILLAR, DIM)})
    for layer in range(4):
        d = f'backbone_2d.layers.{layer}'
        for level, num_sbb in enumerate((2, 1, 1)):
            blocks = num_sbb + (level > 0)  # levels 1, 2 start with a strided block
            for b in range(blocks):
                p = f'{d}.encoder.{level}.{b}'
                s[f'{p}.conv1.weight'] = (DIM, DIM, 3, 3)
                s.update(_bn(f'{p}.bn1', DIM))
                s[f'{p}.conv2.weight'] = (DIM, DIM, 3, 3)
                s.update(_bn(f'{p}.bn2', DIM))
                if level > 0 and b == 0:
                    s[f'{p}.downsample_layer.0.weight'] = (DIM, DIM, 1, 1)
                    s.update(_bn(f'{p}.downsample_layer.1', DIM))
        for j in range(2):
            s[f'{d}.decoder.{j}.0.weight'] = (DIM, DIM, 2, 2)
            s.update(_bn(f'{d}.decoder.{j}.1', DIM))
            s.update(_bn(f'{d}.decoder_norm.{j}', DIM))
    s['dense_head.shared_conv.weight'] = (DIM, DIM, 3, 3)
    s['dense_head.class_encoding.weight'] = (DIM, 10, 1)
    s['dense_head.prediction_head.iou.1.weight'] = (1, 64, 1)
    return s


def official_state_dict(seed: int = 0) -> 'OrderedDict[str, torch.Tensor]':
    """Random tensors in :func:`official_shapes` (positive running variances)."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for k, shape in official_shapes().items():
        if not shape:
            out[k] = torch.tensor(7)
        elif k.endswith('running_var'):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.2
    return out


@pytest.fixture(scope='module')
def cfg():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    return Config.fromfile(CONFIG)


@pytest.fixture(scope='module')
def meta_detector(cfg):
    """The config's detector; every slot but the data preprocessor (whose voxel layer computes
    its grid on the host) built on the meta device."""
    from mmdet3d.registry import MODELS
    with torch.device('meta'):
        slots = {k: MODELS.build(cfg.model[k])
                 for k in ('voxel_encoder', 'middle_encoder', 'backbone', 'bbox_head')}
    model = MODELS.build(cfg.model.copy())
    for name, module in slots.items():
        setattr(model, name, module)
    return model


def test_config_backbone_is_the_official_yaml(meta_detector):
    assert meta_detector.middle_encoder.cpe.conv_in.weight.is_meta
    pre = meta_detector.data_preprocessor.voxel_layer
    assert list(pre.point_cloud_range) == [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
    assert list(pre.voxel_size) == [0.3, 0.3, 0.2]
    me = meta_detector.middle_encoder
    assert me.sparse_shape == (41, 360, 360) and me.dim == 128
    assert me.pool.pillar_size == 10 and me.pool.attn.num_heads == 8
    assert [len(s.layers) for s in me.stages] == [3, 3]
    assert me.stages[0].layers[0].attn.num_heads == 4
    cwi = me.stages[1].layers[2].cwi_ffn
    assert cwi.conv_h.kernel_size == (1, 1, 21) and cwi.conv_w.kernel_size == (1, 21, 1)
    assert meta_detector.voxel_encoder.in_channels == 5
    assert len(meta_detector.backbone.layers) == 4


def test_official_layout_loads_strictly_into_the_config_detector(meta_detector):
    official = official_state_dict()
    converted = sf.scatterformer_pcdet_filter_fn(official)
    assert not any(k.startswith('dense_head') for k in converted)
    assert len(converted) == sum(not k.startswith('dense_head.') for k in official)
    for slot in ('voxel_encoder', 'middle_encoder', 'backbone'):
        module = getattr(meta_detector, slot)
        part = {k[len(slot) + 1:]: v for k, v in converted.items() if k.startswith(slot + '.')}
        report = match_state_dict(module, part)
        assert report.ok, f'{slot}: {report.problems()}'
        assert len(report.loaded) == len(module.state_dict())
        module.load_state_dict({k: v.to('meta') for k, v in part.items()}, strict=True)
    # every official tensor is passed on unchanged, under exactly one name
    assert sorted(id(v) for v in converted.values()) == sorted(
        id(v) for k, v in official.items() if not k.startswith('dense_head.'))


def test_converted_weights_land_where_the_official_modules_use_them():
    """Values, not only shapes: modules of equal shapes (the three stem blocks, the layers of a
    stage, the stage norms) receive the official module of the same position."""
    official = official_state_dict()
    me = sf.ScatterFormerMiddleEncoder(in_channels=64, sparse_shape=(41, 360, 360), dim=DIM,
                                       num_heads=4, depths=(3, 3), win_size=WIN)
    converted = sf.scatterformer_pcdet_filter_fn(official)
    me.load_state_dict({k[len('middle_encoder.'):]: v for k, v in converted.items()
                        if k.startswith('middle_encoder.')}, strict=True)
    b3 = 'backbone_3d'
    assert torch.equal(me.cpe.blocks[1].conv2.weight, official[f'{b3}.cpe.2.conv2.weight'])
    assert torch.equal(me.cpe.blocks[2].bn1.running_var, official[f'{b3}.cpe.3.bn1.running_var'])
    assert torch.equal(me.stages[1].layers[2].attn.qkv.weight,
                       official[f'{b3}.stage2.0.attn_layers.2.qkv.weight'])
    assert torch.equal(me.stages[0].layers[1].norm.weight,
                       official[f'{b3}.stage1.0.norm_layers.1.weight'])
    assert torch.equal(me.stages[0].layers[1].cwi_ffn.bn.weight,
                       official[f'{b3}.stage1.0.cffn_layers.1.bn.weight'])
    assert torch.equal(me.stages[1].norm.bias, official[f'{b3}.stage2.1.bias'])
    assert torch.equal(me.downs[0].weight, official[f'{b3}.stage1.2.weight'])
    assert torch.equal(me.pool.z_embed.weight, official[f'{b3}.app.pos_embedding.weight'])
    assert int(me.cpe.bn_out.num_batches_tracked) == 7
    # the converted encoder runs: a few hundred voxels of the nuScenes grid -> BEV 180 x 180
    g = torch.Generator().manual_seed(1)
    coords = torch.unique(torch.cat([torch.zeros(300, 1, dtype=torch.long),
                                     torch.randint(0, 40, (300, 1), generator=g),
                                     torch.randint(100, 140, (300, 2), generator=g)], 1), dim=0)
    me.eval()
    with torch.no_grad():
        bev = me(torch.randn(coords.shape[0], 64, generator=g), coords, 1)
    assert bev.shape == (1, DIM, 180, 180) and bool(torch.isfinite(bev).all())


def _generated(prefix: str, seed: int) -> 'OrderedDict[str, torch.Tensor]':
    """The official-layout entries under ``prefix``, valued by ``mmattn.testing.parity.generate``
    as the fixtures' scripts did (``tests/data/scatterformer_nuscenes/README.md``)."""
    from mmattn.testing.parity import generate
    out = OrderedDict()
    for k, shape in official_shapes().items():
        if k.startswith(prefix):
            role = k.rsplit('.', 1)[-1]
            role = role if role in ('running_mean', 'running_var', 'num_batches_tracked') \
                else 'param'
            out[k] = generate(k, shape, 'int64' if role == 'num_batches_tracked' else 'float32',
                              role, seed=seed)
    return out


def _by_coords(feats: torch.Tensor, coords: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted by their integer coordinates (spconv and mmattn order sites differently)."""
    coords = coords.long()
    key = torch.zeros(len(coords), dtype=torch.long)
    for col in range(coords.shape[1]):
        key = key * 1024 + coords[:, col]
    order = torch.argsort(key)
    return feats[order], coords[order]


def test_sparse_stem_down_conv_and_pillar_pool_match_the_official_code():
    """``backbone_3d`` parity for the parts that run without CUDA: the official ``cpe``, the
    stage BatchNorms, the strided down conv and ``AttnPillarPool``, run with spconv 2.3.8 on
    the CPU (``tests/data/scatterformer_nuscenes/README.md``), against the converted middle
    encoder on the same voxels."""
    from mmattn.ops.sparse_conv import SparseVoxels
    from mmattn.testing.parity import max_rel_error
    fx = torch.load('tests/data/scatterformer_nuscenes/official_sparse.pt', weights_only=True)
    official = _generated('backbone_3d.', fx['seed'])
    # the hand-written layout is the official module tree's, key for key and shape for shape
    assert [(k, tuple(v.shape)) for k, v in official.items()] == \
        [('backbone_3d.' + k, tuple(s)) for k, s in fx['keys']]
    assert sum(v.double().sum() for v in official.values()).item() == \
        pytest.approx(fx['weight_checksum'], rel=1e-12)
    me = sf.ScatterFormerMiddleEncoder(in_channels=64, sparse_shape=(41, 360, 360), dim=DIM,
                                       num_heads=4, depths=(3, 3), win_size=WIN,
                                       sparse_conv_backend='rulebook').eval()
    me.load_state_dict({k[len('middle_encoder.'):]: v for k, v in
                        sf.scatterformer_pcdet_filter_fn(official).items()}, strict=True)
    coords = fx['coords'].long()
    feats = torch.randn(len(coords), 64, generator=torch.Generator().manual_seed(1))
    assert (float(feats.sum()), float(feats.abs().sum())) == pytest.approx(fx['feats_stats'])
    with torch.no_grad():
        x = me.cpe(SparseVoxels(feats, coords, me.sparse_shape, 2))
        got, got_c = _by_coords(x.features, x.coords)
        exp, exp_c = _by_coords(fx['cpe_feats'], fx['cpe_coords'])
        assert torch.equal(got_c, exp_c) and max_rel_error(got, exp) <= 1e-5
        x = me.downs[0](x.replace(me.stages[0].norm(x.features)))
        x = x.replace(me.stages[1].norm(x.features))
        got, got_c = _by_coords(x.features, x.coords)
        exp, exp_c = _by_coords(fx['down_feats'], fx['down_coords'])
        assert torch.equal(got_c, exp_c) and max_rel_error(got, exp) <= 1e-5
        pillars, cols = me.pool(x)
        # AttnPillarPool: the official module pairs the i-th query of spconv's max-pool output
        # with the i-th pillar in sorted (b, y, x) order; spconv's output is not sorted (no row
        # of this fixture is in place), so each official output row attends over another
        # pillar's voxels. mmattn pairs them by coordinates. Both pairings, with mmattn's weights:
        pool, c = me.pool, x.coords
        sorted_cols, inv = torch.unique(c[:, [0, 2, 3]], dim=0, return_inverse=True)
        column_max = sf.scatter_max(x.features, inv, len(sorted_cols))
        # spconv's SparseMaxPool3d starts its max from 0 (CPU: torch.zeros; GPU implicit GEMM:
        # `lowest = T(0)`), so the official query is max(0, column max); mmattn's too
        query = column_max.clamp(min=0)
        assert bool((column_max < 0).any())  # the clamp is exercised by this fixture
        kv = x.features.new_zeros(len(sorted_cols), pool.pillar_size, DIM)
        kv[inv, c[:, 1]] = x.features
        pad = torch.ones(kv.shape[:2], dtype=torch.bool)
        pad[inv, c[:, 1]] = False

        def attend(q: torch.Tensor) -> torch.Tensor:
            out, _ = pool.attn(q[:, None], kv + pool.z_embed.weight[None], kv,
                               key_padding_mask=pad, need_weights=False)
            return pool.norm(out[:, 0] + q)

        assert torch.equal(cols, sorted_cols) and torch.allclose(attend(query), pillars,
                                                                 atol=1e-6)
        official_cols = fx['app_coords'][:, [0, 2, 3]].long()
        assert torch.equal(torch.unique(official_cols, dim=0), sorted_cols)
        row = torch.searchsorted((sorted_cols[:, 0] * 1024 + sorted_cols[:, 1]) * 1024
                                 + sorted_cols[:, 2],
                                 (official_cols[:, 0] * 1024 + official_cols[:, 1]) * 1024
                                 + official_cols[:, 2])
        assert not torch.equal(row, torch.arange(len(row)))  # the official pairing differs
        assert max_rel_error(attend(query[row]), fx['app_feats']) <= 1e-5
        assert max_rel_error(attend(column_max[row]), fx['app_feats']) > 1e-2  # without the clamp


def test_ded_matches_the_official_code():
    """``backbone_2d`` parity: the official ``CascadeDEDBackbone`` run on the CPU with generated
    weights (``tests/data/scatterformer_nuscenes/README.md``) against mmattn's DED loaded through
    the converter."""
    from mmattn.models.necks.ded import CascadeDEDBackbone
    from mmattn.testing.parity import max_rel_error
    fx = torch.load('tests/data/scatterformer_nuscenes/official_ded.pt', weights_only=True)
    official = _generated('backbone_2d.', fx['seed'])
    assert len(official) == fx['num_keys']
    assert sum(v.double().sum() for v in official.values()).item() == \
        pytest.approx(fx['weight_checksum'], rel=1e-12)
    x = torch.randn(1, DIM, 16, 16, generator=torch.Generator().manual_seed(fx['seed']))
    assert (float(x.sum()), float(x.abs().sum())) == pytest.approx(fx['input_stats'])
    converted = sf.scatterformer_pcdet_filter_fn(official)
    ded = CascadeDEDBackbone(DIM, num_layers=4, num_sbb=(2, 1, 1), down_strides=(1, 2, 2),
                             out_channels=DIM).eval()
    ded.load_state_dict({k[len('backbone.'):]: v for k, v in converted.items()}, strict=True)
    with torch.no_grad():
        (out, ) = ded(x)
    assert max_rel_error(out, fx['output']) <= 1e-5


def test_family_sizes_a_model_from_the_file_and_names_bad_keys():
    official = official_state_dict()
    family = get_family('scatterformer_pcdet')
    sd, prefix, dropped = filter_checkpoint(dict(state_dict=official), family)
    assert prefix == '' and sorted(dropped) == sorted(k for k in official
                                                      if k.startswith('dense_head.'))
    model = family.model_from_state_dict(sd)
    assert model.middle_encoder.pool.pillar_size == PILLAR
    assert model.middle_encoder.stages[0].layers[0].cwi_ffn.conv_h.kernel_size == (1, 1, WIN + 1)
    assert match_state_dict(model, sd).ok
    del official['backbone_3d.stage1.0.cffn_layers.2.fc1.bias']
    report = match_state_dict(model, sf.scatterformer_pcdet_filter_fn(official))
    assert report.missing == ['middle_encoder.stages.0.layers.2.cwi_ffn.fc1.bias']


def _converter_ready() -> bool:
    """Whether ``convert.py`` can take an OpenPCDet file: the family is in ``FAMILY_MODULES``
    and ``unwrap_state_dict`` opens OpenPCDet's ``model_state`` container (both pending in
    ``mmattn/utils/checkpoint.py``)."""
    try:
        unwrap_state_dict({'model_state': {'w': torch.zeros(1)}})
    except CheckpointError:
        return False
    return 'scatterformer_pcdet' in FAMILY_MODULES


@pytest.mark.slow
@pytest.mark.skipif(not _converter_ready(),
                    reason='mmattn/utils/checkpoint.py: FAMILY_MODULES entry and the '
                    "'model_state' container of OpenPCDet checkpoints pending")
def test_converter_on_an_openpcdet_checkpoint(tmp_path):
    import subprocess
    import sys
    src, dst = tmp_path / 'scatterformer_nus.pth', tmp_path / 'converted.pth'
    torch.save(dict(model_state=official_state_dict(), epoch=20, it=0,
                    version='pcdet+0.6.0'), src)
    res = subprocess.run([sys.executable, 'tools/model_converters/convert.py', '--model',
                          'scatterformer_pcdet', str(src), str(dst)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    out = torch.load(dst, weights_only=True)
    assert out['meta']['arch'] == 'ScatterFormerBackboneParts' and \
        'middle_encoder.pool.attn.in_proj_weight' in out['state_dict']
