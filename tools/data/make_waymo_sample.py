"""Generate mmattn's bundled Waymo sample: deterministic and offline (numpy, pickle, mmdet3d).

A tiny synthetic Waymo-like dataset in OpenPCDet's on-disk layout (what ScatterFormer reads), then
converted with ``tools/dataset_converters/openpcdet_waymo2mmattn.py`` to mmdet3d 1.4's layout (what
``mmattn.WaymoDataset`` reads)::

    data/waymo_sample/
        ImageSets/{train,val}.txt                          segment tfrecord names
        waymo_processed_data_v0_5_0/<segment>/<frame:04d>.npy   float32 (N, 6): x, y, z,
                                                           raw intensity, raw elongation, NLZ flag
        waymo_processed_data_v0_5_0/<segment>/<segment>.pkl      per-segment frame infos
        waymo_processed_data_v0_5_0_infos_{train,val}.pkl       merged frame infos
        kitti_format/training/velodyne/{a}{bbb}{ccc}.bin   float32 (N, 6), see the converter
        kitti_format/waymo_infos_{train,val}.pkl           dict(metainfo, data_list)
        kitti_format/waymo_gt_database/*.bin, waymo_dbinfos_train.pkl   GT-sampling database
                                                           (mmdet3d's GTDatabaseCreater)

Splits: train = 4 segments x 8 frames, val = 4 segments x 6 frames (about 100 vehicles: enough
for a car AP that one lucky box does not move by 0.04). Each frame is a scene inside
x, y in [-25.6, 25.6], z in [-2, 4] (vehicle frame, ground at z ~ 0, sensor at the origin):

* a gently sloped noisy ground, denser near the sensor, hidden under objects (about 900 points
  in the range: half of a ring-like 2100-2500, which made 81 % of the voxels);
* per-segment static clutter: poles, walls and bushes (bushes with high elongation);
* a rectangular no-label zone per segment whose points carry NLZ flag 1 (no objects in it);
* 6-12 labelled objects per frame (Vehicle ~4.5x2x1.6, Pedestrian ~0.8x0.8x1.8, Cyclist
  ~1.8x0.7x1.7 m), random yaw, points on the surfaces that face the sensor, denser when closer
  (a vehicle is lower at hood and trunk, a cyclist's rider sits behind the bars: the heading shows);
  some objects get only 0-5 points (far / occluded), about a quarter have difficulty 2;
* sometimes a Sign on a pole (dropped by the converter).

``num_points_in_gt`` is counted from the final points; boxes never overlap each other or the
clutter. Every array depends only on (seed, split, segment, frame).

Usage (from the repository root)::

    .venv/bin/python tools/data/make_waymo_sample.py --out data
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import pickle
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_SEED = 0
PROCESSED_DIR = 'waymo_processed_data_v0_5_0'
INFO_PREFIX = 'waymo_processed_data_v0_5_0_infos'
PICKLE_PROTOCOL = 4
POINT_CLOUD_RANGE = (-25.6, -25.6, -2.0, 25.6, 25.6, 4.0)
# split: (split code of the seed stream, [(segment context name, number of frames)])
SPLITS: dict[str, tuple[int, list[tuple[str, int]]]] = {
    'train': (0, [('10203656353524179475_7625_000_7645_000', 8),
                  ('11940460932056521663_1760_000_1780_000', 8),
                  ('12257951615341726923_2196_690_2216_690', 8),
                  ('13506499849906169066_120_000_140_000', 8)]),
    'val': (1, [('14183710428479823719_3140_000_3160_000', 6),
                ('15224741240438106736_960_000_980_000', 6),
                ('16751706457322889693_4475_240_4495_240', 6),
                ('17065833287841703_2980_000_3000_000', 6)]),
}
_CLUTTER, _OBJECTS, _POINTS, _GROUND = 0, 1, 2, 3
GROUND_KEEP = 0.5  # share of the ring-like ground points kept (see make_points)
# name: (mean l, w, h), (std l, w, h), point budget at 10 m, cap, class probability
CLASS_SPECS: dict[str, tuple[tuple[float, ...], tuple[float, ...], float, int, float]] = {
    'Vehicle': ((4.5, 2.0, 1.6), (0.4, 0.12, 0.12), 420.0, 750, 0.5),
    'Pedestrian': ((0.8, 0.8, 1.8), (0.08, 0.08, 0.1), 120.0, 240, 0.3),
    'Cyclist': ((1.8, 0.7, 1.7), (0.12, 0.06, 0.08), 150.0, 300, 0.2),
}
# The top of a vehicle / cyclist along its length, as a fraction of the box height: (from, to, top)
# over u = 2 * (local x) / l, front (the heading) at u = 1. A vehicle is lower at the hood and the
# trunk than at the cabin, a cyclist's rider sits behind the handlebars: without this front and back
# look alike, the heading is ambiguous by pi and no network can learn it (the sample's old car AP).
PROFILES: dict[str, tuple[tuple[float, float, float], ...]] = {
    'Vehicle': ((-1.0, -0.55, 0.72), (-0.55, 0.4, 1.0), (0.4, 1.0, 0.62)),  # trunk, cabin, hood
    'Cyclist': ((-1.0, -0.6, 0.45), (-0.6, 0.3, 1.0), (0.3, 1.0, 0.65)),    # wheel, rider, bars
}
SENSOR_Z = 2.0
_INSET = 0.03   # surface points sit this far inside their box


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the integers naming the stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def segment_name(context: str) -> str:
    return f'segment-{context}_with_camera_labels'


# ------------------------------------------------------------------------------------ geometry

def ground_z(slope: np.ndarray, x, y):
    return slope[0] * x + slope[1] * y + slope[2]


def points_in_box(points: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Mask of ``points`` (N, >=3) inside a centre-z box (x, y, z, l, w, h, yaw)."""
    x, y, z, l, w, h, yaw = box[:7]
    dx, dy = points[:, 0] - x, points[:, 1] - y
    c, s = math.cos(yaw), math.sin(yaw)
    lx, ly = c * dx + s * dy, -s * dx + c * dy
    return ((np.abs(lx) <= l / 2) & (np.abs(ly) <= w / 2) & (np.abs(points[:, 2] - z) <= h / 2))


def box_surface_points(rng: np.random.Generator, box: Sequence[float], n: int,
                       profile: Sequence[tuple[float, float, float]] = ()) -> np.ndarray:
    """``n`` points on the faces of a centre-z box that face a sensor at (0, 0, SENSOR_Z); with a
    ``profile`` (see :data:`PROFILES`) the faces end, and the top lies, at its height."""
    x, y, z, l, w, h, yaw = box
    c, s = math.cos(yaw), math.sin(yaw)
    to_sensor = np.array([-x, -y])
    # faces: (outward normal in box frame, area, axis fixed, sign)
    faces = []
    for axis, sign, area in ((0, 1, w * h), (0, -1, w * h), (1, 1, l * h), (1, -1, l * h)):
        nl = np.array([sign, 0.0]) if axis == 0 else np.array([0.0, sign])
        nw = np.array([c * nl[0] - s * nl[1], s * nl[0] + c * nl[1]])
        if nw[0] * to_sensor[0] + nw[1] * to_sensor[1] > 0:  # no BLAS: the same on every CPU
            faces.append((axis, sign, area))
    faces.append((2, 1, 0.3 * l * w))      # the top, seen at a grazing angle
    areas = np.array([f[2] for f in faces])
    which = rng.choice(len(faces), size=n, p=areas / areas.sum())
    half = np.array([l / 2 - _INSET, w / 2 - _INSET, h / 2 - _INSET])
    local = rng.uniform(-1.0, 1.0, size=(n, 3)) * half
    for k, (axis, sign, _) in enumerate(faces):
        sel = which == k
        local[sel, axis] = sign * half[axis]
    if profile:
        u = local[:, 0] / half[0]
        top = np.ones(n)
        for lo, hi, frac in profile:
            top[(u >= lo) & (u <= hi)] = frac
        top = -half[2] + 2.0 * half[2] * top        # local z of the top at each point
        local[:, 2] = np.where(which == len(faces) - 1, top,
                               -half[2] + (local[:, 2] + half[2]) * (top + half[2]) / (2 * half[2]))
    out = np.empty((n, 3))
    out[:, 0] = x + c * local[:, 0] - s * local[:, 1]
    out[:, 1] = y + s * local[:, 0] + c * local[:, 1]
    out[:, 2] = z + local[:, 2]
    return out


def _budget(base: float, dist: float, rng: np.random.Generator, cap: int) -> int:
    return int(min(cap, base * (10.0 / max(dist, 4.0)) ** 1.6 * rng.uniform(0.75, 1.25)))


# ------------------------------------------------------------------------------ scene contents

def make_clutter(seed: int, split_code: int, seg: int) -> dict:
    """Static per-segment scene: ground slope, poles, walls, bushes, a no-label zone."""
    rng = _rng(seed, split_code, seg, _CLUTTER)
    slope = np.array([rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01), rng.uniform(-0.1, 0.1)])
    # no-label zone: a 6 x 5 m rectangle in one corner region
    qx, qy = rng.choice([-1, 1], size=2)
    x0, y0 = qx * rng.uniform(13.0, 17.0), qy * rng.uniform(13.0, 17.0)
    nlz = (min(x0, x0 + qx * 6.0), min(y0, y0 + qy * 5.0),
           max(x0, x0 + qx * 6.0), max(y0, y0 + qy * 5.0))
    obstacles = []       # (x, y, radius) discs objects must avoid
    poles = []
    for _ in range(int(rng.integers(4, 8))):
        px, py = rng.uniform(-23.0, 23.0, size=2)
        if math.hypot(px, py) < 4.0:
            continue
        poles.append((px, py, rng.uniform(0.1, 0.2), rng.uniform(2.6, 3.8)))
        obstacles.append((px, py, 1.0))
    walls = []
    for _ in range(int(rng.integers(1, 4))):
        length = rng.uniform(4.0, 10.0)
        ang = rng.uniform(-math.pi, math.pi)
        cx, cy = rng.uniform(-20.0, 20.0, size=2)
        if math.hypot(cx, cy) < 8.0:
            cx, cy = cx * 2.0, cy * 2.0
            cx, cy = np.clip([cx, cy], -20.0, 20.0)
        walls.append((cx, cy, length, 0.25, rng.uniform(1.0, 2.6), ang))
        for t in np.linspace(-length / 2, length / 2, int(length) + 2):
            obstacles.append((cx + t * math.cos(ang), cy + t * math.sin(ang), 0.8))
    bushes = []
    for _ in range(int(rng.integers(2, 6))):
        bx, by = rng.uniform(-23.0, 23.0, size=2)
        if math.hypot(bx, by) < 4.0:
            continue
        radii = (rng.uniform(0.4, 1.1), rng.uniform(0.4, 1.1), rng.uniform(0.3, 0.8))
        bushes.append((bx, by, *radii))
        obstacles.append((bx, by, max(radii[:2]) + 0.3))
    return dict(slope=slope, nlz=nlz, poles=poles, walls=walls, bushes=bushes,
                obstacles=obstacles)


def _free(x: float, y: float, r: float, discs: list, nlz) -> bool:
    if nlz[0] - r <= x <= nlz[2] + r and nlz[1] - r <= y <= nlz[3] + r:
        return False
    return all(math.hypot(x - ox, y - oy) > r + orad for ox, oy, orad in discs)


def make_objects(seed: int, split_code: int, seg: int, frame: int, clutter: dict) -> list[dict]:
    """6-12 labelled objects (+ sometimes a Sign), placed without overlaps, centre-z boxes."""
    rng = _rng(seed, split_code, seg, frame, _OBJECTS)
    names = list(CLASS_SPECS)
    probs = np.array([CLASS_SPECS[n][4] for n in names])
    discs = list(clutter['obstacles'])
    objects = []
    n_wanted = int(rng.integers(6, 13))
    tries = 0
    while len(objects) < n_wanted and tries < 400:
        tries += 1
        name = names[int(rng.choice(len(names), p=probs))]
        mean, std = CLASS_SPECS[name][:2]
        l, w, h = (float(max(0.3, rng.normal(m, s))) for m, s in zip(mean, std))
        x, y = (float(v) for v in rng.uniform(-22.5, 22.5, size=2))
        dist = math.hypot(x, y)
        r = 0.5 * math.hypot(l, w) + 0.3
        if dist < 5.0 or not _free(x, y, r, discs, clutter['nlz']):
            continue
        discs.append((x, y, r))
        zb = float(ground_z(clutter['slope'], x, y))
        sparse = rng.random() < 0.2
        objects.append(dict(
            name=name, box=[x, y, zb + h / 2, l, w, h, float(rng.uniform(-math.pi, math.pi))],
            sparse=bool(sparse), n_sparse=int(rng.choice([0, 1, 2, 3, 5])),
            difficulty=2 if (rng.random() < 0.15 or (sparse and rng.random() < 0.5)) else 0,
            obj_id=f'{int(rng.integers(0, 2**62)):016x}'[:22]))
    if clutter['poles'] and rng.random() < 0.5:
        px, py, pr, ph = clutter['poles'][int(rng.integers(len(clutter['poles'])))]
        yaw = math.atan2(py, px)    # the sign faces the sensor
        off = pr + 0.1
        objects.append(dict(
            name='Sign', box=[px - off * math.cos(yaw), py - off * math.sin(yaw),
                              float(ground_z(clutter['slope'], px, py)) + ph - 0.5,
                              0.08, 0.75, 0.75, yaw],
            sparse=False, n_sparse=0, difficulty=0,
            obj_id=f'{int(rng.integers(0, 2**62)):016x}'))
    return objects


def make_points(seed: int, split_code: int, seg: int, frame: int, clutter: dict,
                objects: list[dict]) -> np.ndarray:
    """float32 (N, 6): x, y, z, raw intensity, raw elongation, NLZ flag (-1 / 1)."""
    rng = _rng(seed, split_code, seg, frame, _POINTS)
    parts = []   # (xyz (n, 3), intensity (n,), elongation (n,))

    def add(xyz, inten, elong):
        parts.append((np.asarray(xyz, dtype=np.float64).reshape(-1, 3), inten, elong))

    # ground: ring-like density ~ 1 / r
    n_ground = int(rng.integers(2100, 2500))
    r = np.exp(rng.uniform(math.log(3.0), math.log(36.5), size=n_ground))
    t = rng.uniform(-math.pi, math.pi, size=n_ground)
    gx, gy = r * np.cos(t), r * np.sin(t)
    inside = (np.abs(gx) < 25.5) & (np.abs(gy) < 25.5)
    gx, gy = gx[inside], gy[inside]
    gz = ground_z(clutter['slope'], gx, gy) + rng.normal(0.0, 0.03, size=gx.shape)
    ground = np.stack([gx, gy, gz], 1)
    hidden = np.zeros(len(ground), dtype=bool)      # occluded by objects and clutter
    for obj in objects:
        x, y, _, l, w, _, yaw = obj['box']
        hidden |= points_in_box(ground, [x, y, 0.0, l + 0.2, w + 0.2, 100.0, yaw])
    for ox, oy, orad in clutter['obstacles']:
        hidden |= np.hypot(gx - ox, gy - oy) < 0.4 * orad
    ground = ground[~hidden]
    inten, elong = rng.gamma(2.0, 0.04, size=len(ground)), np.abs(rng.normal(0, 0.03, len(ground)))
    # each ground point kept with probability GROUND_KEEP, drawn from a stream of its own (the rest
    # of the frame does not change): at 0.4 m voxels nearly every ground point is a voxel of its
    # own, and all of them were 81 % of a frame's voxels -- CPU training time for no objects
    keep = _rng(seed, split_code, seg, frame, _GROUND).random(len(ground)) < GROUND_KEEP
    add(ground[keep], inten[keep], elong[keep])

    # poles: the half cylinder facing the sensor
    for px, py, pr, ph in clutter['poles']:
        d = math.hypot(px, py)
        n = _budget(70.0 * ph / 3.0, d, rng, 220)
        facing = math.atan2(-py, -px)
        ang = facing + rng.uniform(-math.pi / 2, math.pi / 2, size=n)
        z0 = ground_z(clutter['slope'], px, py)
        xyz = np.stack([px + pr * np.cos(ang), py + pr * np.sin(ang),
                        z0 + rng.uniform(0.0, ph, size=n)], 1)
        add(xyz, rng.uniform(0.2, 0.8, size=n), np.abs(rng.normal(0, 0.05, n)))
    # walls: the face toward the sensor
    for cx, cy, length, thick, height, ang in clutter['walls']:
        d = math.hypot(cx, cy)
        n = _budget(10.0 * length * height, d, rng, 600)
        nx, ny = -math.sin(ang), math.cos(ang)
        if nx * -cx + ny * -cy < 0:
            nx, ny = -nx, -ny
        u = rng.uniform(-length / 2, length / 2, size=n)
        bx = cx + u * math.cos(ang) + nx * thick / 2
        by = cy + u * math.sin(ang) + ny * thick / 2
        xyz = np.stack([bx, by, ground_z(clutter['slope'], bx, by)
                        + rng.uniform(0.0, height, size=n)], 1)
        add(xyz, rng.gamma(3.0, 0.05, size=n), np.abs(rng.normal(0, 0.05, n)))
    # bushes: noisy half ellipsoids, vegetation gives long pulses (high elongation)
    for bx, by, ra, rb, rc in clutter['bushes']:
        d = math.hypot(bx, by)
        n = _budget(60.0 * ra * rb, d, rng, 260)
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        v[:, 2] = np.abs(v[:, 2])
        scale = rng.uniform(0.75, 1.0, size=(n, 1))
        xyz = np.array([bx, by, ground_z(clutter['slope'], bx, by)]) + v * scale * [ra, rb, rc]
        add(xyz, rng.gamma(2.0, 0.04, size=n), rng.uniform(0.2, 1.2, size=n))

    # labelled objects (and signs)
    for obj in objects:
        name, box = obj['name'], obj['box']
        d = math.hypot(box[0], box[1])
        if name == 'Sign':
            n = int(rng.integers(6, 25))
            add(box_surface_points(rng, box, n), rng.uniform(5.0, 30.0, size=n),
                np.abs(rng.normal(0, 0.05, n)))
            continue
        base, cap = CLASS_SPECS[name][2:4]
        n = obj['n_sparse'] if obj['sparse'] else max(8, _budget(base, d, rng, cap))
        if n == 0:
            continue
        # (all three are drawn, whatever the class: the random stream stays as committed)
        inten = {'Vehicle': rng.gamma(2.0, 0.08, size=n),
                 'Pedestrian': rng.gamma(2.0, 0.04, size=n),
                 'Cyclist': rng.gamma(2.0, 0.06, size=n)}[name]
        if name == 'Vehicle':     # a few retro-reflective points (plates, lights)
            bright = rng.random(n) < 0.04
            inten[bright] = rng.uniform(2.0, 12.0, size=int(bright.sum()))
        add(box_surface_points(rng, box, n, PROFILES.get(name, ())), inten,
            np.abs(rng.normal(0, 0.04, n)))

    xyz = np.concatenate([p[0] for p in parts])
    feats = np.zeros((len(xyz), 6), dtype=np.float64)
    feats[:, :3] = xyz
    feats[:, 3] = np.concatenate([p[1] for p in parts])
    feats[:, 4] = np.concatenate([p[2] for p in parts])
    x0, y0, x1, y1 = clutter['nlz']
    in_nlz = (xyz[:, 0] >= x0) & (xyz[:, 0] <= x1) & (xyz[:, 1] >= y0) & (xyz[:, 1] <= y1)
    feats[:, 5] = np.where(in_nlz, 1.0, -1.0)
    pcr = POINT_CLOUD_RANGE
    keep = ((xyz[:, 0] > pcr[0]) & (xyz[:, 0] < pcr[3]) & (xyz[:, 1] > pcr[1])
            & (xyz[:, 1] < pcr[4]) & (xyz[:, 2] > pcr[2]) & (xyz[:, 2] < pcr[5]))
    feats = feats[keep][rng.permutation(int(keep.sum()))]
    return feats.astype(np.float32)


def make_annos(objects: list[dict], points: np.ndarray) -> dict:
    """OpenPCDet ``annos`` of one frame; num_points_in_gt counted from ``points``."""
    n = len(objects)
    boxes = np.array([o['box'] for o in objects], dtype=np.float32).reshape(n, 7)
    num_pts = np.array([int(points_in_box(points, b.astype(np.float64)).sum()) for b in boxes],
                       dtype=np.int32)
    return dict(
        name=np.array([o['name'] for o in objects], dtype='<U10'),
        difficulty=np.array([o['difficulty'] for o in objects], dtype=np.int32),
        dimensions=boxes[:, 3:6].copy(),
        location=boxes[:, 0:3].copy(),
        heading_angles=boxes[:, 6].copy(),
        obj_ids=np.array([o['obj_id'] for o in objects], dtype='<U22'),
        tracking_difficulty=np.zeros(n, dtype=np.int32),
        num_points_in_gt=num_pts,
        speed_global=np.zeros((n, 2), dtype=np.float32),
        accel_global=np.zeros((n, 2), dtype=np.float32),
        gt_boxes_lidar=np.concatenate([boxes, np.zeros((n, 2), dtype=np.float32)], 1),
    )


def _pose(seg: int, frame: int) -> np.ndarray:
    yaw = 0.3 * seg + 0.01 * frame
    pose = np.eye(4)
    pose[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    pose[:3, 3] = [1000.0 * (seg + 1) + 1.5 * frame * math.cos(yaw),
                   -500.0 * seg + 1.5 * frame * math.sin(yaw), 12.0]
    return pose


def _dump(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=PICKLE_PROTOCOL)


def make_openpcdet(root: Path, seed: int = DEFAULT_SEED) -> dict[str, list[dict]]:
    """Write the OpenPCDet layout under ``root``; returns the merged infos of each split."""
    merged = {}
    for split, (split_code, segments) in SPLITS.items():
        infos = []
        names = []
        for seg, (context, n_frames) in enumerate(segments):
            seq = segment_name(context)
            names.append(f'{seq}.tfrecord')
            clutter = make_clutter(seed, split_code, seg)
            seq_infos = []
            for frame in range(n_frames):
                objects = make_objects(seed, split_code, seg, frame, clutter)
                points = make_points(seed, split_code, seg, frame, clutter, objects)
                path = root / PROCESSED_DIR / seq / f'{frame:04d}.npy'
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, points)
                seq_infos.append(dict(
                    point_cloud=dict(num_features=5, lidar_sequence=seq, sample_idx=frame),
                    frame_id=f'{seq}_{frame:03d}',
                    metadata=dict(context_name=context,
                                  timestamp_micros=1_550_000_000_000_000 + split_code * 10**10
                                  + seg * 10**8 + frame * 100_000),
                    image={f'image_shape_{i}': (1280, 1920) if i < 3 else (886, 1920)
                           for i in range(5)},
                    pose=_pose(seg, frame),
                    annos=make_annos(objects, points),
                    num_points_of_each_lidar=[int(len(points)), 0, 0, 0, 0]))
            _dump(seq_infos, root / PROCESSED_DIR / seq / f'{seq}.pkl')
            infos.extend(seq_infos)
        (root / 'ImageSets').mkdir(parents=True, exist_ok=True)
        (root / 'ImageSets' / f'{split}.txt').write_text(''.join(f'{n}\n' for n in names))
        _dump(infos, root / f'{INFO_PREFIX}_{split}.pkl')
        merged[split] = infos
    return merged


def _converter():
    path = Path(__file__).resolve().parents[1] / 'dataset_converters' / 'openpcdet_waymo2mmattn.py'
    spec = importlib.util.spec_from_file_location('openpcdet_waymo2mmattn', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def summary(root: Path, merged: dict[str, list[dict]]) -> str:
    lines = [f'Waymo sample under {root}:']
    for split, infos in merged.items():
        n_pts = [info['num_points_of_each_lidar'][0] for info in infos]
        names = np.concatenate([info['annos']['name'] for info in infos])
        npig = np.concatenate([info['annos']['num_points_in_gt'] for info in infos])
        diff = np.concatenate([info['annos']['difficulty'] for info in infos])
        n_nlz = 0
        for info in infos:
            pc = info['point_cloud']
            pts = np.load(root / PROCESSED_DIR / pc['lidar_sequence']
                          / f"{pc['sample_idx']:04d}.npy")
            n_nlz += int((pts[:, 5] > 0).sum())
        counts = {n: int((names == n).sum()) for n in (*CLASS_SPECS, 'Sign')}
        labelled = names != 'Sign'
        lines.append(
            f'  {split}: {len(infos)} frames, points/frame min {min(n_pts)} mean '
            f'{np.mean(n_pts):.0f} max {max(n_pts)}, NLZ points {n_nlz}; objects {counts}; '
            f'difficulty 2: {int((diff[labelled] == 2).sum())}, <=5 points: '
            f'{int((npig[labelled] <= 5).sum())}, 0 points: {int((npig[labelled] == 0).sum())}')
    size = sum(p.stat().st_size for p in root.rglob('*') if p.is_file())
    lines.append(f'  total size {size / 2**20:.2f} MiB')
    return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('data'), help='output root (data)')
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    root = args.out / 'waymo_sample'
    merged = make_openpcdet(root, args.seed)
    converter = _converter()
    converter.convert(root, root / 'kitti_format', splits=tuple(SPLITS))
    converter.create_gt_database(root / 'kitti_format')
    print(summary(root, merged))
    return root


if __name__ == '__main__':
    main()
