"""The PIDray sample: X-ray-like pseudo-colour baggage scans in the official PIDray layout.

Objects are translucent, as in X-ray: every pixel is ``255 * exp(-sum_k t_k * mu_k)`` over the
bag, the clutter and the items it crosses (thickness ``t_k``, colour absorption ``mu_k`` of the
material: metal blue/dark, organics orange, mixed green), so overlapping objects darken instead of
hiding each other and each item's mask is its full outline. The 12 prohibited classes have their
own silhouettes (one polygon each) and materials; the bag holds clothes-like blobs, cables and
electronics boxes. Splits as in the paper: ``easy`` one item, ``hard`` 2-4 items, ``hidden`` one or
two items made thin (low contrast) and placed under dense clutter. Image ids restart at 1 in every
JSON; file names are ``xray_NNNNN.png`` (train) and ``xray_<split>NNNNN.png`` (test)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .common import DEFAULT_SEED, STREAM_LAYOUT, STREAM_RENDER, Polygon, polygon_area, rng_stream

STREAM_PIDRAY = 3
#: (id, name) in the official CLASSES order (category ids 1..12)
PIDRAY_CLASSES: tuple[tuple[int, str], ...] = (
    (1, 'Baton'), (2, 'Pliers'), (3, 'Hammer'), (4, 'Powerbank'), (5, 'Scissors'), (6, 'Wrench'),
    (7, 'Gun'), (8, 'Bullet'), (9, 'Sprayer'), (10, 'HandCuffs'), (11, 'Knife'), (12, 'Lighter'))
#: split: (number of images, stream code, annotation file, image folder, file-name infix)
PIDRAY_SPLITS: dict[str, tuple[int, int, str, str, str]] = {
    'train': (48, 0, 'xray_train.json', 'train', ''),
    'easy': (10, 1, 'xray_test_easy.json', 'easy', 'easy'),
    'hard': (8, 2, 'xray_test_hard.json', 'hard', 'hard'),
    'hidden': (8, 3, 'xray_test_hidden.json', 'hidden', 'hidden'),
}
SIZES = ((256, 192), (288, 192), (256, 208), (240, 176))   # (W, H)
# absorption per RGB channel of a unit thickness: metal absorbs red most (blue look), organics blue
METAL = np.array([1.6, 1.1, 0.6], dtype=np.float32)
DENSE = np.array([2.4, 2.1, 1.6], dtype=np.float32)
ORGANIC = np.array([0.25, 0.6, 1.1], dtype=np.float32)
MIXED = np.array([0.9, 0.45, 0.9], dtype=np.float32)
#: class -> (material, thickness, length in px range)
ITEM_STYLE: dict[str, tuple[np.ndarray, float, tuple[float, float]]] = {
    'Baton': (ORGANIC, 1.6, (70, 110)), 'Pliers': (METAL, 1.2, (45, 70)),
    'Hammer': (METAL, 1.3, (50, 80)), 'Powerbank': (MIXED, 1.2, (35, 55)),
    'Scissors': (METAL, 1.0, (40, 65)), 'Wrench': (METAL, 1.2, (45, 75)),
    'Gun': (DENSE, 1.0, (50, 75)), 'Bullet': (DENSE, 1.1, (14, 22)),
    'Sprayer': (MIXED, 1.0, (40, 60)), 'HandCuffs': (METAL, 1.1, (40, 60)),
    'Knife': (METAL, 0.9, (45, 80)), 'Lighter': (ORGANIC, 1.8, (18, 28)),
}


def _outline(name: str) -> list[tuple[float, float]]:
    """Silhouette of class ``name`` in a unit frame: x along the item in [-0.5, 0.5]."""
    if name == 'Baton':
        return _capsule(1.0, 0.09)
    if name == 'Pliers':
        return [(-0.5, -0.2), (0.05, -0.04), (0.5, -0.03), (0.5, 0.03), (0.05, 0.04),
                (-0.5, 0.2), (-0.5, 0.12), (-0.05, 0.0), (-0.5, -0.12)]
    if name == 'Hammer':
        return [(-0.5, -0.04), (0.3, -0.04), (0.3, -0.22), (0.5, -0.22), (0.5, 0.22), (0.3, 0.22),
                (0.3, 0.04), (-0.5, 0.04)]
    if name == 'Powerbank':
        return _rounded_rect(1.0, 0.55, 0.08)
    if name == 'Scissors':
        return [(-0.5, -0.22), (-0.25, -0.22), (0.0, -0.03), (0.5, -0.01), (0.5, 0.01),
                (0.0, 0.03), (-0.25, 0.22), (-0.5, 0.22), (-0.5, 0.1), (-0.1, 0.0),
                (-0.5, -0.1)]
    if name == 'Wrench':
        return [(-0.5, -0.05), (0.3, -0.05), (0.32, -0.16), (0.5, -0.16), (0.5, -0.06),
                (0.4, -0.05), (0.4, 0.05), (0.5, 0.06), (0.5, 0.16), (0.32, 0.16), (0.3, 0.05),
                (-0.5, 0.05)]
    if name == 'Gun':
        return [(-0.5, -0.3), (0.5, -0.3), (0.5, -0.14), (-0.05, -0.14), (-0.1, 0.0),
                (-0.02, 0.02), (-0.1, 0.08), (-0.2, 0.08), (-0.25, 0.3), (-0.45, 0.3),
                (-0.35, -0.14), (-0.5, -0.14)]
    if name == 'Bullet':
        return [(-0.5, -0.17), (0.2, -0.17), (0.5, 0.0), (0.2, 0.17), (-0.5, 0.17)]
    if name == 'Sprayer':
        return [(-0.5, -0.2), (0.3, -0.2), (0.3, -0.1), (0.5, -0.1), (0.5, 0.1), (0.3, 0.1),
                (0.3, 0.2), (-0.5, 0.2)]
    if name == 'HandCuffs':
        left = [(-0.25 + 0.25 * math.cos(a), 0.25 * math.sin(a))
                for a in np.linspace(0.35, 2 * math.pi - 0.35, 16)]
        right = [(0.25 + 0.25 * math.cos(a), 0.25 * math.sin(a))
                 for a in np.linspace(math.pi + 0.35, 3 * math.pi - 0.35, 16)]
        return left + right
    if name == 'Knife':
        return [(-0.5, -0.06), (-0.15, -0.06), (-0.15, -0.1), (0.5, 0.0), (-0.15, 0.1),
                (-0.15, 0.06), (-0.5, 0.06)]
    if name == 'Lighter':
        return [(-0.5, -0.25), (0.3, -0.25), (0.3, -0.12), (0.5, -0.12), (0.5, 0.25),
                (-0.5, 0.25)]
    raise KeyError(name)


def _capsule(length: float, r: float) -> list[tuple[float, float]]:
    half = length / 2 - r
    right = [(half + r * math.cos(a), r * math.sin(a)) for a in np.linspace(-math.pi / 2,
                                                                             math.pi / 2, 7)]
    left = [(-half + r * math.cos(a), r * math.sin(a))
            for a in np.linspace(math.pi / 2, 3 * math.pi / 2, 7)]
    return right + left


def _rounded_rect(w: float, h: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for cx, cy, a0 in ((w / 2 - r, h / 2 - r, 0.0), (-w / 2 + r, h / 2 - r, math.pi / 2),
                       (-w / 2 + r, -h / 2 + r, math.pi), (w / 2 - r, -h / 2 + r, 1.5 * math.pi)):
        pts += [(cx + r * math.cos(a), cy + r * math.sin(a))
                for a in np.linspace(a0, a0 + math.pi / 2, 4)]
    return pts


def item_polygon(name: str, cx: float, cy: float, length: float, theta: float) -> Polygon:
    """The outline of an item of ``length`` px centred at (cx, cy), rotated by ``theta``."""
    c, s = math.cos(theta), math.sin(theta)
    return [(round(cx + length * (x * c - y * s), 2), round(cy + length * (x * s + y * c), 2))
            for x, y in _outline(name)]


def _bbox(poly: Polygon) -> list[float]:
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    return [round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2),
            round(max(ys) - min(ys), 2)]


def _rng(seed: int, split: str, index: int, purpose: int) -> np.random.Generator:
    return rng_stream(seed, STREAM_PIDRAY, PIDRAY_SPLITS[split][1], index, purpose)


def pidray_layout(seed: int, split: str, index: int) -> dict:
    """Image size, bag rectangle and items ``(category_id, polygon, thickness)`` of one image."""
    rng = _rng(seed, split, index, STREAM_LAYOUT)
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    bag = (rng.uniform(6, 20), rng.uniform(6, 18), w - rng.uniform(6, 20), h - rng.uniform(6, 18))
    n = {'train': int(rng.integers(1, 4)), 'easy': 1, 'hard': int(rng.integers(2, 5)),
         'hidden': int(rng.integers(1, 3))}[split]
    hidden = split == 'hidden' or (split == 'train' and rng.random() < 0.25)
    items = []
    for k in range(n):
        cat = int(rng.integers(1, 13)) if split == 'train' else int(
            (index * 5 + k * 7 + rng.integers(0, 2)) % 12) + 1
        name = PIDRAY_CLASSES[cat - 1][1]
        _, thick, (lo, hi) = ITEM_STYLE[name]
        length = rng.uniform(lo, hi)
        for _ in range(40):   # keep the whole item inside the bag
            theta = rng.uniform(0, 2 * math.pi)
            cx, cy = rng.uniform(bag[0], bag[2]), rng.uniform(bag[1], bag[3])
            poly = item_polygon(name, cx, cy, length, theta)
            x, y, bw, bh = _bbox(poly)
            if x >= bag[0] and y >= bag[1] and x + bw <= bag[2] and y + bh <= bag[3]:
                break
        items.append((cat, poly, thick * (rng.uniform(0.35, 0.55) if hidden else
                                          rng.uniform(0.85, 1.15))))
    return dict(width=w, height=h, bag=bag, items=items, hidden=hidden)


def _fill(poly, w: int, h: int) -> np.ndarray:
    canvas = Image.new('L', (w, h), 0)
    ImageDraw.Draw(canvas).polygon([(x - 0.5, y - 0.5) for x, y in poly], fill=255)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def render_pidray(seed: int, split: str, index: int, layout: dict) -> np.ndarray:
    """RGB uint8 (H, W, 3) pseudo-colour X-ray image of a layout."""
    rng = _rng(seed, split, index, STREAM_RENDER)
    w, h = layout['width'], layout['height']
    absorb = np.zeros((h, w, 3), dtype=np.float32)
    x0, y0, x1, y1 = layout['bag']
    bag = _fill([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], w, h)
    absorb += bag[..., None] * ORGANIC * 0.35
    # clothes: smooth organic blobs; denser and more of them around hidden items
    n_blobs = int(rng.integers(4, 8)) + (6 if layout['hidden'] else 0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(n_blobs):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        sx, sy = rng.uniform(12, 45), rng.uniform(10, 35)
        blob = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        absorb += blob[..., None] * ORGANIC * rng.uniform(0.4, 1.2)
    # electronics boxes and cables (not prohibited)
    for _ in range(int(rng.integers(1, 3)) + (2 if layout['hidden'] else 0)):
        bx, by = rng.uniform(x0, x1 - 20), rng.uniform(y0, y1 - 15)
        box = _fill([(bx, by), (bx + rng.uniform(20, 60), by), (bx + 30, by + rng.uniform(15, 40)),
                     (bx, by + 25)], w, h)
        absorb += box[..., None] * MIXED * rng.uniform(0.5, 1.0)
    cables = Image.new('L', (w, h), 0)
    draw = ImageDraw.Draw(cables)
    for _ in range(int(rng.integers(1, 4))):
        pts = [(rng.uniform(x0, x1), rng.uniform(y0, y1)) for _ in range(4)]
        draw.line(pts, fill=255, width=int(rng.integers(1, 3)))
    absorb += (np.asarray(cables, dtype=np.float32) / 255.0)[..., None] * METAL * 0.6
    # handle and frame of the bag
    frame = Image.new('L', (w, h), 0)
    ImageDraw.Draw(frame).rectangle([x0, y0, x1, y1], outline=255, width=2)
    absorb += (np.asarray(frame, dtype=np.float32) / 255.0)[..., None] * METAL * 0.5
    for cat, poly, thick in layout['items']:
        material = ITEM_STYLE[PIDRAY_CLASSES[cat - 1][1]][0]
        absorb += _fill(poly, w, h)[..., None] * material * thick
    absorb *= 1.0 + 0.04 * rng.standard_normal((h, w, 1)).astype(np.float32)
    img = 250.0 * np.exp(-absorb)
    return np.clip(np.rint(img / 4.0) * 4.0, 0, 255).astype(np.uint8)   # 6-bit levels: small PNGs


def pidray_json(seed: int, split: str) -> dict:
    """The COCO-format annotation file of ``split`` (ids restart at 1 in every file)."""
    n, _, _, _, infix = PIDRAY_SPLITS[split]
    images, annotations = [], []
    for i in range(n):
        layout = pidray_layout(seed, split, i)
        images.append(dict(id=i + 1, file_name=f'xray_{infix}{i:05d}.png',
                           width=layout['width'], height=layout['height']))
        for cat, poly, _ in layout['items']:
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1, category_id=cat, iscrowd=0,
                segmentation=[[c for p in poly for c in p]], bbox=_bbox(poly),
                area=round(polygon_area(poly), 2)))
    return dict(
        info=dict(description=f'mmattn PIDray-layout sample ({split}): synthetic X-ray-like '
                              'baggage scans (tools/data/make_sample_data.py --only pidray)',
                  version='1.0', year=2024),
        images=images, annotations=annotations,
        categories=[dict(id=c, name=name, supercategory='prohibited')
                    for c, name in PIDRAY_CLASSES])


def make_pidray(out: Path, seed: int = DEFAULT_SEED, limit: int | None = None) -> None:
    """Write ``out/annotations/xray_{train,test_easy,test_hard,test_hidden}.json`` (complete) and
    the first ``limit`` (default all) PNGs of ``out/{train,easy,hard,hidden}/``."""
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    for split, (n, _, ann_file, folder, infix) in PIDRAY_SPLITS.items():
        content = pidray_json(seed, split)
        (out / 'annotations' / ann_file).write_text(json.dumps(content, separators=(',', ':'))
                                                    + '\n')
        (out / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n if limit is None else min(limit, n)):
            img = render_pidray(seed, split, i, pidray_layout(seed, split, i))
            Image.fromarray(img).save(out / folder / f'xray_{infix}{i:05d}.png', optimize=True)
