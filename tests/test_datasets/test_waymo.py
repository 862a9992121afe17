"""The bundled Waymo sample (data/waymo_sample, OpenPCDet + mmdet3d layouts), its generator
tools/data/make_waymo_sample.py, the converter tools/dataset_converters/openpcdet_waymo2mmattn.py,
``mmattn.WaymoDataset`` and ``mmattn.visualization.draw_bev``."""
from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mmattn  # noqa: F401  (compatibility patches before mmdet3d is imported)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / 'data' / 'waymo_sample'
KITTI = SAMPLE / 'kitti_format'
PROCESSED = SAMPLE / 'waymo_processed_data_v0_5_0'
FRAMES = {'train': 32, 'val': 24}
SEGMENTS = {'train': 4, 'val': 4}
PCR = (-25.6, -25.6, -2.0, 25.6, 25.6, 4.0)
LABELS = {'Vehicle': 0, 'Pedestrian': 1, 'Cyclist': 2}
LOAD_POINTS = dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=6, use_dim=5,
                   norm_intensity=True, norm_elongation=True)
TRAIN_PIPELINE = [
    LOAD_POINTS,
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d', 'gt_labels_3d']),
]
TEST_PIPELINE = [LOAD_POINTS, dict(type='Pack3DDetInputs', keys=['points'])]


def _module(name: str, rel: str):
    path = ROOT / rel
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def gen():
    return _module('make_waymo_sample', 'tools/data/make_waymo_sample.py')


@pytest.fixture(scope='module')
def conv():
    return _module('openpcdet_waymo2mmattn', 'tools/dataset_converters/openpcdet_waymo2mmattn.py')


@pytest.fixture(scope='module')
def regenerated(gen, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('waymo_regen')
    return gen.main(['--out', str(out)])


def _pkl(path: Path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def _pcdet_infos(split: str) -> list:
    return _pkl(SAMPLE / f'waymo_processed_data_v0_5_0_infos_{split}.pkl')


def _mm_infos(split: str) -> dict:
    return _pkl(KITTI / f'waymo_infos_{split}.pkl')


def _npy(info: dict) -> np.ndarray:
    pc = info['point_cloud']
    return np.load(PROCESSED / pc['lidar_sequence'] / f"{pc['sample_idx']:04d}.npy")


def _bin(path) -> np.ndarray:
    return np.fromfile(path, dtype=np.float32).reshape(-1, 6)


def _build(**kwargs):
    from mmengine.registry import init_default_scope

    from mmattn.registry import DATASETS
    init_default_scope('mmdet3d')
    cfg = dict(type='mmattn.WaymoDataset', data_root=str(KITTI), pipeline=TRAIN_PIPELINE)
    cfg.update(kwargs)
    return DATASETS.build(cfg)


# ------------------------------------------------------------------------------ sample on disk

def test_sample_has_both_layouts():
    for split, n in FRAMES.items():
        names = (SAMPLE / 'ImageSets' / f'{split}.txt').read_text().split()
        assert len(names) == SEGMENTS[split]
        for name in names:
            seq = name[:-len('.tfrecord')]
            assert len(list((PROCESSED / seq).glob('*.npy'))) > 0
            assert (PROCESSED / seq / f'{seq}.pkl').is_file()
        assert len(_pcdet_infos(split)) == n
        mm = _mm_infos(split)
        assert set(mm) == {'metainfo', 'data_list'} and len(mm['data_list']) == n
        assert mm['metainfo']['dataset'] == 'waymo'
    assert len(list(PROCESSED.rglob('*.npy'))) == sum(FRAMES.values())
    assert len(list((KITTI / 'training' / 'velodyne').glob('*.bin'))) == sum(FRAMES.values())
    size = sum(p.stat().st_size for p in SAMPLE.rglob('*') if p.is_file())
    assert size < 10.5 * 2**20


def test_regenerates_identically(regenerated: Path):
    made = sorted(p.relative_to(regenerated) for p in regenerated.rglob('*') if p.is_file())
    committed = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob('*') if p.is_file())
    assert made == committed
    for rel in made:
        assert (regenerated / rel).read_bytes() == (SAMPLE / rel).read_bytes(), rel


@pytest.mark.slow
@pytest.mark.parametrize('coretype', ['Nehalem', 'Haswell'])
def test_regenerates_identically_with_another_blas_kernel(tmp_path, coretype):
    """The generator's output does not depend on the CPU: with OpenBLAS forced to another kernel
    (SSE-only Nehalem, AVX2 Haswell; a machine picks its own by default) the files are the same.
    (A 2-element ``@`` once went through BLAS and flipped a face's visibility on AVX-512 CPUs.)"""
    import subprocess
    env = dict(os.environ, OPENBLAS_CORETYPE=coretype)
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'data' / 'make_waymo_sample.py'),
                    '--out', str(tmp_path)], check=True, env=env, capture_output=True, timeout=600)
    made = sorted(p.relative_to(tmp_path / 'waymo_sample')
                  for p in (tmp_path / 'waymo_sample').rglob('*') if p.is_file())
    assert made and made == sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob('*') if p.is_file())
    for rel in made:
        assert (tmp_path / 'waymo_sample' / rel).read_bytes() == (SAMPLE / rel).read_bytes(), rel


def test_openpcdet_layout_contents(gen):
    n_small = n_empty = n_diff2 = n_nlz = 0
    classes = set()
    for split in FRAMES:
        for info in _pcdet_infos(split):
            assert set(info['point_cloud']) == {'num_features', 'lidar_sequence', 'sample_idx'}
            assert info['pose'].shape == (4, 4)
            pts = _npy(info)
            assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 6
            assert 1200 <= len(pts) <= 4000  # generator: 1427-3662
            for d in range(3):
                assert PCR[d] <= pts[:, d].min() and pts[:, d].max() <= PCR[d + 3]
            assert set(np.unique(pts[:, 5]).tolist()) <= {-1.0, 1.0}
            assert (pts[:, 3] >= 0).all() and (pts[:, 4] >= 0).all()
            n_nlz += int((pts[:, 5] == 1).sum())
            annos = info['annos']
            names = annos['name']
            labelled = names != 'Sign'
            assert 6 <= labelled.sum() <= 12
            boxes = annos['gt_boxes_lidar']
            assert boxes.shape == (len(names), 9)
            np.testing.assert_allclose(boxes[:, :3], annos['location'])
            np.testing.assert_allclose(boxes[:, 3:6], annos['dimensions'])
            np.testing.assert_allclose(boxes[:, 6], annos['heading_angles'])
            for box, count in zip(boxes, annos['num_points_in_gt']):
                assert count == gen.points_in_box(pts, box.astype(np.float64)).sum()
            assert set(annos['difficulty'].tolist()) <= {0, 2}
            npig = annos['num_points_in_gt'][labelled]
            n_small += int((npig <= 5).sum())
            n_empty += int((npig == 0).sum())
            n_diff2 += int((annos['difficulty'][labelled] == 2).sum())
            classes |= set(names.tolist())
            for name, (l, w, h) in zip(names, annos['dimensions']):
                if name == 'Vehicle':
                    assert 3.0 < l < 6.0 and 1.5 < w < 2.5 and 1.2 < h < 2.1
                elif name == 'Pedestrian':
                    assert 0.5 < l < 1.1 and 0.5 < w < 1.1 and 1.4 < h < 2.2
    assert classes == {'Vehicle', 'Pedestrian', 'Cyclist', 'Sign'}
    assert n_small >= 5 and n_empty >= 1 and n_diff2 >= 5 and n_nlz > 0


# ----------------------------------------------------------------------------------- converter

def test_converter_output_matches_openpcdet():
    for a, split in enumerate(('train', 'val')):
        pcdet, mm = _pcdet_infos(split), _mm_infos(split)['data_list']
        assert len(pcdet) == len(mm)
        seqs = list(dict.fromkeys(i['point_cloud']['lidar_sequence'] for i in pcdet))
        for src, dst in zip(pcdet, mm):
            seg = seqs.index(src['point_cloud']['lidar_sequence'])
            stem = f"{a}{seg:03d}{src['point_cloud']['sample_idx']:03d}"
            assert dst['lidar_points'] == dict(lidar_path=f'{stem}.bin', num_pts_feats=6)
            assert dst['sample_idx'] == int(stem)
            raw, out = _npy(src), _bin(KITTI / 'training' / 'velodyne' / f'{stem}.bin')
            assert out.shape == raw.shape                        # NLZ points kept
            np.testing.assert_array_equal(out[:, :5], raw[:, :5])
            assert (out[:, 5] == -1).all()
            annos = src['annos']
            keep = annos['name'] != 'Sign'
            insts = dst['instances']
            assert len(insts) == keep.sum()                      # Sign dropped
            boxes = annos['gt_boxes_lidar'][keep].astype(np.float64)
            for inst, box, name, npts, diff in zip(insts, boxes, annos['name'][keep],
                                                   annos['num_points_in_gt'][keep],
                                                   annos['difficulty'][keep]):
                assert inst['bbox_label_3d'] == LABELS[name]
                x, y, zc, l, w, h, yaw = box[:7]
                np.testing.assert_allclose(inst['bbox_3d'], [x, y, zc - h / 2, l, w, h, yaw],
                                           rtol=0, atol=1e-6)
                assert inst['num_lidar_pts'] == npts and inst['difficulty'] == diff


def test_converter_cli_reproduces_and_errors(conv, tmp_path: Path, capsys):
    written = conv.main([str(SAMPLE), '--out', str(tmp_path / 'kf'), '--splits', 'val'])
    assert set(written) == {'val'}
    assert 'val: 24 frames' in capsys.readouterr().out
    assert written['val'].read_bytes() == (KITTI / 'waymo_infos_val.pkl').read_bytes()
    for p in (tmp_path / 'kf' / 'training' / 'velodyne').iterdir():
        assert p.read_bytes() == (KITTI / 'training' / 'velodyne' / p.name).read_bytes()
    with pytest.raises(FileNotFoundError, match='infos_train.pkl'):
        conv.convert(tmp_path / 'nowhere', tmp_path / 'out', splits=['train'])
    # a frame whose point file is gone
    root = tmp_path / 'broken'
    infos = _pcdet_infos('val')[:1]
    root.mkdir()
    with open(root / 'waymo_processed_data_v0_5_0_infos_val.pkl', 'wb') as f:
        pickle.dump(infos, f)
    with pytest.raises(FileNotFoundError, match='0000.npy'):
        conv.convert(root, splits=['val'])
    with pytest.raises(ValueError, match='unknown split'):
        conv.convert(root, splits=['trainval'])


def test_converter_handles_frames_without_objects(conv):
    assert conv.convert_annos({'name': np.array([])}, 'x') == []
    insts = conv.convert_annos(dict(
        name=np.array(['Sign', 'Cyclist']), difficulty=np.array([0, 2]),
        num_points_in_gt=np.array([3, 0]),
        gt_boxes_lidar=np.array([[0, 0, 2, .1, .7, .7, 0, 0, 0], [1, 2, 1, 1.8, .7, 1.6, .5, 0, 0]],
                                dtype=np.float32)), 'x')
    assert len(insts) == 1 and insts[0]['bbox_label_3d'] == 2 and insts[0]['difficulty'] == 2
    assert insts[0]['bbox_3d'][2] == pytest.approx(1.0 - 0.8)
    assert insts[0]['num_lidar_pts'] == 0


# ------------------------------------------------------------------------------------- dataset

def test_dataset_registered():
    from mmattn.datasets import WaymoDataset
    from mmattn.registry import DATASETS
    assert DATASETS.get('WaymoDataset') is WaymoDataset
    from mmdet3d.datasets import Det3DDataset
    assert issubclass(WaymoDataset, Det3DDataset)


def test_dataset_train_pipeline():
    from mmdet3d.structures import LiDARInstance3DBoxes
    ds = _build(ann_file='waymo_infos_train.pkl', filter_empty_gt=False)   # no resampling
    assert len(ds) == FRAMES['train']
    assert ds.metainfo['classes'] == ('Car', 'Pedestrian', 'Cyclist')
    infos = _mm_infos('train')['data_list']
    n_dropped = n_bright = 0
    for idx in range(len(ds)):
        sample = ds[idx]
        info = infos[idx]
        raw = _bin(KITTI / 'training' / 'velodyne' / info['lidar_points']['lidar_path'])
        pts = sample['inputs']['points'].numpy()
        assert pts.shape == (len(raw), 5)
        np.testing.assert_array_equal(pts[:, :3], raw[:, :3])
        np.testing.assert_allclose(pts[:, 3:5], np.tanh(raw[:, 3:5]), rtol=1e-6, atol=1e-7)
        assert np.abs(pts[:, 3:5]).max() <= 1.0
        n_bright += int((raw[:, 3] > 2.0).sum())
        gt = sample['data_samples'].gt_instances_3d
        assert isinstance(gt.bboxes_3d, LiDARInstance3DBoxes)
        nonempty = [i for i in info['instances'] if i['num_lidar_pts'] > 0]
        n_dropped += len(info['instances']) - len(nonempty)
        expect = np.array([i['bbox_3d'] for i in nonempty], dtype=np.float32).reshape(-1, 7)
        np.testing.assert_allclose(gt.bboxes_3d.tensor.numpy(), expect, atol=1e-6)
        np.testing.assert_allclose(gt.bboxes_3d.bottom_height.numpy(), expect[:, 2], atol=1e-6)
        np.testing.assert_allclose(gt.bboxes_3d.gravity_center[:, 2].numpy(),
                                   expect[:, 2] + expect[:, 5] / 2, atol=1e-5)
        assert gt.labels_3d.tolist() == [i['bbox_label_3d'] for i in nonempty]
    assert n_dropped >= 1 and n_bright > 0    # tanh squashed raw intensities > 2
    ann = ds.get_data_info(0)['ann_info']
    assert set(ann) == {'gt_bboxes_3d', 'gt_labels_3d', 'difficulty', 'num_lidar_pts'}
    assert (ann['num_lidar_pts'] > 0).all()


def test_dataset_points_match_openpcdet_centre_boxes(gen):
    """The boxes, shifted back to centre z, contain exactly num_points_in_gt raw points."""
    ds = _build(ann_file='waymo_infos_val.pkl', pipeline=TEST_PIPELINE, test_mode=True)
    pcdet = _pcdet_infos('val')
    for idx, src in enumerate(pcdet):
        ev = ds[idx]['data_samples'].eval_ann_info
        boxes = ev['gt_bboxes_3d']
        keep = src['annos']['name'] != 'Sign'
        np.testing.assert_allclose(boxes.gravity_center.numpy(),
                                   src['annos']['location'][keep], atol=1e-5)
        pts = ds[idx]['inputs']['points'].numpy()
        centre = torch.cat([boxes.gravity_center, boxes.tensor[:, 3:7]], 1).double().numpy()
        inside = [int(gen.points_in_box(pts, box).sum()) for box in centre]
        assert inside == src['annos']['num_points_in_gt'][keep].tolist()


def test_dataset_test_mode_eval_ann_info():
    ds = _build(ann_file='waymo_infos_val.pkl', pipeline=TEST_PIPELINE, test_mode=True)
    assert len(ds) == FRAMES['val']
    infos = _mm_infos('val')['data_list']
    n_zero = 0
    for idx in range(len(ds)):
        ev = ds[idx]['data_samples'].eval_ann_info
        insts = infos[idx]['instances']
        assert ev['difficulty'].dtype == np.int64 and ev['num_lidar_pts'].dtype == np.int64
        assert ev['difficulty'].tolist() == [i['difficulty'] for i in insts]
        assert ev['num_lidar_pts'].tolist() == [i['num_lidar_pts'] for i in insts]
        assert ev['gt_labels_3d'].tolist() == [i['bbox_label_3d'] for i in insts]
        assert len(ev['gt_bboxes_3d']) == len(insts)
        n_zero += int((ev['num_lidar_pts'] == 0).sum())
    assert n_zero >= 1     # evaluation keeps 0-point boxes; the metric decides


def test_dataset_classes_subset_and_interval():
    ds = _build(ann_file='waymo_infos_train.pkl', metainfo=dict(classes=('Pedestrian', )),
                load_interval=4, filter_empty_gt=False)
    assert len(ds) == FRAMES['train'] // 4
    for idx in range(len(ds)):
        ann = ds.get_data_info(idx)['ann_info']
        assert (ann['gt_labels_3d'] == 0).all()
        assert len(ann['difficulty']) == len(ann['gt_labels_3d']) == len(ann['gt_bboxes_3d'])


def _write_infos(tmp_path: Path, obj, name='infos.pkl') -> Path:
    path = tmp_path / name
    with open(path, 'wb') as f:
        pickle.dump(obj, f)
    return path


def _one_frame(**changes) -> dict:
    info = pickle.loads(pickle.dumps(_mm_infos('train')['data_list'][0]))
    info.update(changes)
    return info


def _tmp_dataset(tmp_path: Path, data_list, test_mode=True, **kw):
    meta = dict(dataset='waymo')
    ann = _write_infos(tmp_path, dict(metainfo=meta, data_list=data_list))
    return _build(data_root=str(tmp_path), ann_file=ann.name, test_mode=test_mode,
                  data_prefix=dict(pts=str(KITTI / 'training' / 'velodyne')),
                  pipeline=TEST_PIPELINE if test_mode else TRAIN_PIPELINE, **kw)


def test_empty_point_cloud_loads(tmp_path: Path):
    (tmp_path / 'empty.bin').write_bytes(b'')
    info = _one_frame(lidar_points=dict(lidar_path=str(tmp_path / 'empty.bin'), num_pts_feats=6))
    ds = _tmp_dataset(tmp_path, [info])
    sample = ds[0]
    assert tuple(sample['inputs']['points'].shape) == (0, 5)
    assert len(sample['data_samples'].eval_ann_info['gt_bboxes_3d']) == len(info['instances'])
    # a frame without instances is fine too
    ds = _tmp_dataset(tmp_path, [_one_frame(instances=[])])
    ev = ds[0]['data_samples'].eval_ann_info
    assert len(ev['gt_bboxes_3d']) == 0 and ev['difficulty'].shape == (0, )


def _bad_instance(**changes):
    info = _one_frame()
    inst = dict(info['instances'][1])
    inst.update(changes)
    for k, v in list(inst.items()):
        if v is None:
            del inst[k]
    info['instances'][1] = inst
    return info


@pytest.mark.parametrize('content, pattern', [
    (['not', 'a', 'dict'], r'infos\.pkl: expected dict'),
    (dict(metainfo={}), r"infos\.pkl: missing key 'data_list'"),
    (dict(data_list=[]), r"infos\.pkl: missing key 'metainfo'"),
    (dict(metainfo={}, data_list=[_one_frame(), _bad_instance(bbox_3d=None)]),
     r"infos\.pkl: data_list\[1\]\.instances\[1\]: missing key 'bbox_3d'"),
    (dict(metainfo={}, data_list=[_bad_instance(bbox_3d=[1.0, 2.0, 0.0, 4.0, 2.0, 1.5])]),
     r"infos\.pkl: data_list\[0\]\.instances\[1\]: 'bbox_3d' must have 7 values"),
    (dict(metainfo={}, data_list=[_bad_instance(bbox_label_3d=7)]),
     r"data_list\[0\]\.instances\[1\]: 'bbox_label_3d' 7"),
    (dict(metainfo={}, data_list=[_one_frame(lidar_points={})]),
     r"data_list\[0\]: missing 'lidar_points"),
])
def test_malformed_info_files(tmp_path: Path, content, pattern):
    from mmattn.datasets import WaymoInfoError
    ann = _write_infos(tmp_path, content)
    with pytest.raises(WaymoInfoError, match=pattern):
        _build(data_root=str(tmp_path), ann_file=ann.name)


def test_missing_info_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match='nothing.pkl'):
        _build(data_root=str(tmp_path), ann_file='nothing.pkl')


def test_bad_point_files(tmp_path: Path):
    from mmattn.datasets import WaymoInfoError
    ds = _tmp_dataset(tmp_path, [_one_frame(
        lidar_points=dict(lidar_path='9999999.bin', num_pts_feats=6))])
    with pytest.raises(FileNotFoundError, match='9999999.bin'):
        ds[0]
    (tmp_path / 'odd.bin').write_bytes(np.zeros(6 * 10 + 4, dtype=np.float32).tobytes())
    ds = _tmp_dataset(tmp_path, [_one_frame(
        lidar_points=dict(lidar_path=str(tmp_path / 'odd.bin'), num_pts_feats=6))])
    with pytest.raises(WaymoInfoError, match=r'odd\.bin: 256 bytes'):
        ds[0]


# ----------------------------------------------------------------------------------- draw_bev

def test_draw_bev_writes_png(tmp_path: Path):
    from mmattn.visualization import draw_bev
    info = _mm_infos('val')['data_list'][0]
    pts = _bin(KITTI / 'training' / 'velodyne' / info['lidar_points']['lidar_path'])
    gt = np.array([i['bbox_3d'] for i in info['instances']], dtype=np.float32)
    pred = torch.from_numpy(gt + np.array([0.3, 0, 0, 0, 0, 0, 0.1], dtype=np.float32))
    out = draw_bev(torch.from_numpy(pts), pred, gt, str(tmp_path / 'sub' / 'bev.png'), PCR,
                   pred_scores=torch.linspace(0.1, 0.9, len(gt)),
                   pred_labels=torch.tensor([i['bbox_label_3d'] for i in info['instances']]),
                   class_names=('Car', 'Pedestrian', 'Cyclist'), score_thr=0.3)
    assert out == str(tmp_path / 'sub' / 'bev.png')
    data = Path(out).read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10_000
    out2 = draw_bev(pts[:0], None, None, str(tmp_path / 'empty.png'), PCR)
    assert Path(out2).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(ValueError, match='pred_scores'):
        draw_bev(pts, gt, None, str(tmp_path / 'x.png'), PCR, pred_scores=[0.5])
    shutil.rmtree(tmp_path / 'sub')
