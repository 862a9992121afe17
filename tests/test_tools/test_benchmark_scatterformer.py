"""tools/analysis_tools/benchmark_scatterformer.py: tiny CPU runs of the whole detector."""
import importlib.util
import math
import os
import os.path as osp

import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SAMPLE_CONFIG = osp.join(ROOT, 'configs/scatterformer/scatterformer_sample-waymo.py')
SAMPLE_FRAME = osp.join(ROOT, 'data/waymo_sample/kitti_format/training/velodyne/0000000.bin')
# the sample config narrowed to width 32, one layer per stage, one DED module
TINY = ['model.middle_encoder.dim=32', 'model.middle_encoder.depths=(1,1)',
        'model.middle_encoder.num_heads=2', 'model.middle_encoder.pool_heads=2',
        'model.backbone.in_channels=32', 'model.backbone.out_channels=32',
        'model.backbone.num_layers=1', 'model.bbox_head.in_channels=32']


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location(
        'benchmark_scatterformer',
        osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_scatterformer.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(out: str):
    rows = [ln.split('|')[1:-1] for ln in out.splitlines()
            if ln.startswith('| inference |') or ln.startswith('| train_step |')]
    return [[c.strip() for c in r] for r in rows]


@pytest.mark.slow
def test_synthetic_frame_inference_and_train_step(tool, capsys, tmp_path):
    out_json = str(tmp_path / 'bench.json')
    res = tool.main([SAMPLE_CONFIG, '--device', 'cpu', '--threads', '1', '--num-points', '600',
                     '--iters', '1', '--warmup', '0', '--train', '--sla-backend', 'reference',
                     '--sparse-conv-backend', 'rulebook', '--out', out_json,
                     '--cfg-options', *TINY])
    table = _table_rows(capsys.readouterr().out)
    assert [r[0] for r in table] == ['inference', 'train_step']
    for row, printed in zip(res['rows'], table):
        assert row['ms_per_frame'] > 0 and row['peak_mib'] > 0
        assert math.isclose(row['fps'] * row['ms_per_frame'], 1e3, rel_tol=1e-2)
        # the dispatchers really returned the requested backends during the timed calls
        assert row['sla_backends'] == ['reference'] and row['sparse_conv_backends'] == ['rulebook']
        assert printed[1:] == [str(row['ms_per_frame']), str(row['fps']), str(row['peak_mib']),
                               'reference', 'rulebook']
    assert res['points_per_frame'] == [600] and 0 < res['voxels'] <= 600
    assert res['point_cloud_range'] == [-25.6, -25.6, -2.0, 25.6, 25.6, 4.0]
    assert osp.getsize(out_json) > 0


def test_points_file_and_auto_backends(tool, capsys):
    from mmattn.ops.sparse_conv import choose_sparse_backend
    res = tool.main([SAMPLE_CONFIG, '--device', 'cpu', '--threads', '1', '--points', SAMPLE_FRAME,
                     '--iters', '1', '--warmup', '0', '--no-memory', '--cfg-options', *TINY])
    (row, ) = res['rows']
    assert row['mode'] == 'inference' and row['ms_per_frame'] > 0 and row['peak_mib'] is None
    assert '| inference |' in capsys.readouterr().out
    # 'auto' on CPU tensors: the chunked SLA; spconv when installed, else the rule book
    expected_sparse = choose_sparse_backend('auto', torch.zeros(2, 4))
    assert row['sla_backends'] == ['torch'] and row['sparse_conv_backends'] == [expected_sparse]
    assert res['points_per_frame'] == [os.path.getsize(SAMPLE_FRAME) // (6 * 4)]


def test_synthetic_points_are_in_range_and_seeded(tool):
    pcr = [-76.8, -76.8, -2.0, 76.8, 76.8, 4.0]
    pts = tool.synthetic_points(20000, pcr, 5, torch.Generator().manual_seed(0))
    again = tool.synthetic_points(20000, pcr, 5, torch.Generator().manual_seed(0))
    assert pts.shape == (20000, 5) and torch.equal(pts, again)
    r = pts[:, :2].norm(dim=1)
    assert float(r.min()) >= 2.0 - 1e-4 and float(r.max()) <= 0.98 * 76.8 + 1e-4
    assert float(r.median()) < 30  # log-uniform radius: denser near the sensor
    assert float(pts[:, 2].min()) >= -2.0 and float(pts[:, 2].max()) <= 2.0
    assert float(pts[:, 3:].min()) >= 0 and float(pts[:, 3:].max()) < math.tanh(1) + 1e-6


def test_points_file_of_wrong_size_names_the_file(tool, tmp_path):
    bad = tmp_path / 'bad.bin'
    np.zeros(7, dtype=np.float32).tofile(bad)
    with pytest.raises(ValueError, match='bad.bin'):
        tool.load_points(str(bad), 6, 5, True)
