"""Convert OpenPCDet-format Waymo data to the mmdet3d 1.4 layout read by ``mmattn.WaymoDataset``.

Input (what ``pcdet.datasets.waymo.waymo_dataset --func create_waymo_infos`` writes)::

    <root>/waymo_processed_data_v0_5_0/<segment>/<frame:04d>.npy    float32 (N, 6):
        x, y, z, raw intensity, raw elongation, NLZ flag (-1 outside a no-label zone, 1 inside)
    <root>/waymo_processed_data_v0_5_0_infos_{train,val}.pkl         list of per-frame dicts:
        point_cloud{num_features, lidar_sequence, sample_idx}, frame_id, metadata, pose,
        annos{name, difficulty, dimensions, location, heading_angles, num_points_in_gt,
              gt_boxes_lidar (N, 9: x, y, z_centre, l, w, h, heading, vx, vy)}

Output (the layout of mmdet3d 1.4's ``tools/create_data.py waymo``)::

    <out>/training/velodyne/{a}{bbb}{ccc}.bin   float32 (N, 6): x, y, z, raw intensity,
        raw elongation, -1. a = split prefix (0 train, 1 val), bbb = segment index within the
        split (order of first appearance in the info list), ccc = frame index in the segment.
    <out>/waymo_infos_{train,val}.pkl            dict(metainfo=..., data_list=[...]) with per frame
        sample_idx, timestamp, ego2global, context_name, lidar_points{lidar_path, num_pts_feats: 6}
        and instances [{bbox_3d: [x, y, z_bottom, l, w, h, yaw], bbox_label_3d, num_lidar_pts,
        difficulty, ...}].
    <out>/waymo_gt_database/{sample_idx}_{class}_{i}.bin, <out>/waymo_dbinfos_train.pkl
        the ground-truth database of the train split for GT sampling (``ObjectSample``), written
        by mmdet3d's own ``GTDatabaseCreater`` (what ``tools/create_data.py waymo`` runs).

Differences from mmdet3d's own Waymo converter, all deliberate (ScatterFormer's data path):

* **NLZ points are kept** (ScatterFormer sets ``DISABLE_NLZ_FLAG_ON_POINTS``); the flag column is
  replaced by -1, the value mmdet3d writes for points that do not come from the TOP lidar.
* The labeller's ``difficulty`` (WOD ``detection_difficulty_level``) is kept per instance, and
  boxes with 0 points are kept too (``mmattn.WaymoDataset`` drops them for training; the metric
  drops them for evaluation), so the L1/L2 evaluation of OpenPCDet can be reproduced.
* Box z is the **bottom** centre (z_centre - h / 2), mmdet3d's LiDAR-box convention; OpenPCDet and
  mmdet3d >= 1.0 share the heading convention (counter-clockwise from +x), so yaw is copied.
* Classes: Vehicle -> Car (0), Pedestrian (1), Cyclist (2); Sign (and anything else) is dropped.

Usage::

    python tools/dataset_converters/openpcdet_waymo2mmattn.py data/waymo \
        [--out data/waymo/kitti_format] [--splits train val] [--no-gt-database]

or, from Python, ``convert(root, out_dir, splits)``.
"""
from __future__ import annotations

import argparse
import os.path as osp
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

PROCESSED_DIR = 'waymo_processed_data_v0_5_0'
INFO_PREFIX = 'waymo_processed_data_v0_5_0_infos'
CLASSES = ('Car', 'Pedestrian', 'Cyclist')
NAME_TO_LABEL = {'Vehicle': 0, 'Pedestrian': 1, 'Cyclist': 2}
SPLIT_PREFIX = {'train': 0, 'val': 1, 'test': 2}
METAINFO = dict(
    dataset='waymo',
    version='waymo_v1.4',
    info_version='mmdet3d_v1.4',
    classes=CLASSES,
    categories={name: i for i, name in enumerate(CLASSES)},
    source='OpenPCDet waymo_processed_data_v0_5_0 (converted by mmattn, NLZ points kept)')
PICKLE_PROTOCOL = 4


class ConversionError(ValueError):
    """A malformed OpenPCDet info or point file."""


def _load_pickle(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f'OpenPCDet Waymo info file not found: {path}')
    with open(path, 'rb') as f:
        return pickle.load(f)


def convert_points(src: Path, dst: Path) -> int:
    """Copy an OpenPCDet (N, 6) ``.npy`` to an mmdet3d (N, 6) ``.bin``; returns N."""
    if not src.is_file():
        raise FileNotFoundError(f'OpenPCDet Waymo point file not found: {src}')
    points = np.load(src)
    if points.ndim != 2 or points.shape[1] < 5:
        raise ConversionError(f'{src}: expected an (N, 6) point array, got shape {points.shape}')
    out = np.full((points.shape[0], 6), -1.0, dtype=np.float32)
    out[:, :5] = points[:, :5]          # x, y, z, raw intensity, raw elongation; NLZ rows kept
    dst.parent.mkdir(parents=True, exist_ok=True)
    out.tofile(dst)
    return int(out.shape[0])


def convert_annos(annos: dict, where: str) -> list[dict]:
    """OpenPCDet ``annos`` -> mmdet3d ``instances`` (bottom-centre boxes; Sign dropped)."""
    names = np.asarray(annos.get('name', []))
    n = len(names)
    if n == 0:
        return []
    for key in ('gt_boxes_lidar', 'num_points_in_gt', 'difficulty'):
        if key not in annos:
            raise ConversionError(f'{where}: annos has no {key!r}')
    boxes = np.asarray(annos['gt_boxes_lidar'], dtype=np.float64).reshape(n, -1)
    if boxes.shape[1] < 7:
        raise ConversionError(f'{where}: gt_boxes_lidar has {boxes.shape[1]} columns, need >= 7')
    num_pts = np.asarray(annos['num_points_in_gt']).reshape(n)
    difficulty = np.asarray(annos['difficulty']).reshape(n)
    obj_ids = annos.get('obj_ids', [None] * n)
    instances = []
    for i in range(n):
        label = NAME_TO_LABEL.get(str(names[i]))
        if label is None:        # Sign, Unknown
            continue
        x, y, zc, l, w, h, yaw = (float(v) for v in boxes[i, :7])
        inst = dict(
            bbox_3d=[x, y, zc - h / 2.0, l, w, h, yaw],
            bbox_label_3d=label,
            num_lidar_pts=int(num_pts[i]),
            difficulty=int(difficulty[i]),
            group_id=len(instances))
        if obj_ids[i] is not None:
            inst['obj_id'] = str(obj_ids[i])
        if boxes.shape[1] >= 9:
            inst['velocity'] = [float(boxes[i, 7]), float(boxes[i, 8])]
        instances.append(inst)
    return instances


def convert_split(root: Path, out_dir: Path, split: str,
                  processed_dir: str = PROCESSED_DIR, info_prefix: str = INFO_PREFIX) -> Path:
    """Convert one split; returns the path of the written ``waymo_infos_{split}.pkl``."""
    info_path = root / f'{info_prefix}_{split}.pkl'
    infos = _load_pickle(info_path)
    if not isinstance(infos, list):
        raise ConversionError(f'{info_path}: expected a list of frame infos, got {type(infos)}')
    prefix = SPLIT_PREFIX[split]
    segment_index: dict[str, int] = {}
    data_list = []
    for k, info in enumerate(infos):
        where = f'{info_path}[{k}]'
        try:
            pc = info['point_cloud']
            sequence, frame = str(pc['lidar_sequence']), int(pc['sample_idx'])
        except (KeyError, TypeError) as e:
            raise ConversionError(f'{where}: missing point_cloud.lidar_sequence/sample_idx') from e
        seg = segment_index.setdefault(sequence, len(segment_index))
        if seg > 999 or frame > 999:
            raise ConversionError(f'{where}: segment {seg} / frame {frame} do not fit {{a}}{{bbb}}'
                                  '{ccc}')
        stem = f'{prefix}{seg:03d}{frame:03d}'
        n_points = convert_points(root / processed_dir / sequence / f'{frame:04d}.npy',
                                  out_dir / 'training' / 'velodyne' / f'{stem}.bin')
        metadata = info.get('metadata', {})
        pose = info.get('pose')
        data_list.append(dict(
            sample_idx=int(stem),
            frame_id=info.get('frame_id', f'{sequence}_{frame:03d}'),
            timestamp=int(metadata.get('timestamp_micros', 0)),
            context_name=str(metadata.get('context_name', sequence)),
            ego2global=(np.asarray(pose, dtype=np.float64).tolist() if pose is not None
                        else np.eye(4).tolist()),
            lidar_points=dict(lidar_path=f'{stem}.bin', num_pts_feats=6),
            num_points=n_points,
            instances=convert_annos(info.get('annos', {}), where)))
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f'waymo_infos_{split}.pkl'
    metainfo = dict(METAINFO)
    metainfo['categories'] = dict(METAINFO['categories'])
    with open(out_path, 'wb') as f:
        pickle.dump(dict(metainfo=metainfo, data_list=data_list), f, protocol=PICKLE_PROTOCOL)
    return out_path


def convert(root: str | Path, out_dir: str | Path | None = None,
            splits: Sequence[str] = ('train', 'val'), processed_dir: str = PROCESSED_DIR,
            info_prefix: str = INFO_PREFIX) -> dict[str, Path]:
    """Convert the OpenPCDet Waymo data under ``root`` to the mmdet3d layout under ``out_dir``
    (default ``<root>/kitti_format``); returns {split: info file}."""
    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root / 'kitti_format'
    for split in splits:
        if split not in SPLIT_PREFIX:
            raise ValueError(f'unknown split {split!r}; expected one of {sorted(SPLIT_PREFIX)}')
    return {split: convert_split(root, out_dir, split, processed_dir, info_prefix)
            for split in splits}


def create_gt_database(out_dir: str | Path, info_file: str = 'waymo_infos_train.pkl',
                       prefix: str = 'waymo') -> Path:
    """Write ``<out_dir>/<prefix>_gt_database/*.bin`` and ``<prefix>_dbinfos_train.pkl`` from the
    converted ``info_file`` with mmdet3d's ``GTDatabaseCreater`` (shipped in mmdet3d's package data,
    ``mmdet3d/.mim/tools/dataset_converters/create_gt_database.py``); returns the dbinfos path."""
    import importlib.util

    import mmdet3d
    from mmdet3d.utils import register_all_modules
    path = Path(mmdet3d.__file__).parent / '.mim' / 'tools' / 'dataset_converters' / \
        'create_gt_database.py'
    if not path.is_file():
        raise FileNotFoundError(f'{path} (mmdet3d\'s GT database tool) is missing: install mmdet3d '
                                'from a wheel or source that ships its .mim tools')
    out_dir = Path(out_dir)
    if not (out_dir / info_file).is_file():
        raise FileNotFoundError(f'{out_dir / info_file}: convert the train split first')
    spec = importlib.util.spec_from_file_location('mmdet3d_create_gt_database', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    register_all_modules(init_default_scope=False)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        module.GTDatabaseCreater('WaymoDataset', str(out_dir), prefix, info_file,
                                 relative_path=False, with_mask=False, num_worker=0).create()
    return out_dir / f'{prefix}_dbinfos_train.pkl'


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', type=Path, help='OpenPCDet Waymo root (holds the info pkls)')
    parser.add_argument('--out', type=Path, default=None, help='default: <root>/kitti_format')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'])
    parser.add_argument('--processed-dir', default=PROCESSED_DIR)
    parser.add_argument('--info-prefix', default=INFO_PREFIX)
    parser.add_argument('--no-gt-database', action='store_true',
                        help='do not write the GT-sampling database of the train split')
    args = parser.parse_args(argv)
    written = convert(args.root, args.out, args.splits, args.processed_dir, args.info_prefix)
    for split, path in written.items():
        with open(path, 'rb') as f:
            n = len(pickle.load(f)['data_list'])
        print(f'{split}: {n} frames -> {osp.relpath(path)}')
    if 'train' in written and not args.no_gt_database:
        dbinfos = create_gt_database(written['train'].parent)
        print(f'GT database -> {osp.relpath(dbinfos)}')
    return written


if __name__ == '__main__':
    main()
