"""Generate mmattn's bundled sample datasets: deterministic, offline, numpy + Pillow + json.

Two small synthetic datasets in the exact on-disk layout of their real counterparts, so that mmdet /
mmseg dataset classes, pycocotools and cityscapesscripts read them unchanged::

    data/coco_sample/                         COCO 2017 layout: boxes + polygon masks
        annotations/instances_train2017.json  240 images
        annotations/instances_val2017.json     60 images (held out: its own seed stream)
        train2017/000000000001.jpg ...
        val2017/000000100001.jpg ...
    data/cityscapes_sample/                   Cityscapes layout, 256x128 (W x H)
        leftImg8bit/{train,val}/<city>/<city>_<seq:06d>_000019_leftImg8bit.png
        gtFine/{train,val}/<city>/<same stem>_gtFine_labelIds.png        uint8 label ids
        gtFine/{train,val}/<city>/<same stem>_gtFine_labelTrainIds.png   uint8 0..18, 255 = ignore
        gtFine/{train,val}/<city>/<same stem>_gtFine_instanceIds.png     uint16 id*1000+k / id
        gtFine/{train,val}/<city>/<same stem>_gtFine_color.png           RGBA label colours
        gtFine/{train,val}/<city>/<same stem>_gtFine_polygons.json       the polygons, draw order
        (train: aachen 12 + bochum 12 images; val: frankfurt 8 images)

COCO sample: five shape classes, each with its own shape and colour family (circle/red,
triangle/blue, square/green, star/yellow, cross/magenta), 1-6 objects of 16-120 px on cluttered,
low-saturation backgrounds (textured noise, lines, blobs, hollow shapes). Objects never cover one
another (their boxes may overlap), so each polygon is the visible outline and each box its tight
bound.

Cityscapes sample: street scenes in perspective (sky, buildings, vegetation, terrain, sidewalk,
road, walls, fences, poles with lights and signs, persons, riders on bicycles and motorcycles, cars,
trucks, buses, trams, an ego-vehicle strip of ignore pixels). Each scene is a list of labelled
polygons in drawing order; the label images are rasterised from exactly those polygons the way
cityscapesscripts' ``json2labelImg`` / ``json2instanceImg`` do, using
``cityscapesscripts.helpers.labels`` for the id / trainId / colour mapping.

Usage (from the repository root)::

    .venv/bin/python tools/data/make_sample_data.py --out data

Every image depends only on (seed, dataset, split, index). ``--limit N`` renders only the first N
images of each COCO split and of each Cityscapes city (the COCO annotation files are always written
complete); the tests use it to check that the committed files are reproduced.
"""
from __future__ import annotations

import argparse
import colorsys
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
Polygon = list[Point]

DEFAULT_SEED = 0
_COCO, _CITYSCAPES = 1, 2
_LAYOUT, _RENDER = 0, 1

# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the integers naming the stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] -> float32 RGB in [0, 255]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float,
                  channels: int = 1) -> np.ndarray:
    """Value noise of shape (h, w, channels), roughly in [-1.5, 1.5], features ~``cell`` px."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.standard_normal((gh, gw, channels)).astype(np.float32)
    ys = np.linspace(0.0, gh - 1.001, h, dtype=np.float32)
    xs = np.linspace(0.0, gw - 1.001, w, dtype=np.float32)
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = ys - y0, xs - x0
    fy = (fy * fy * (3 - 2 * fy))[:, None, None]
    fx = (fx * fx * (3 - 2 * fx))[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _regular_polygon(cx: float, cy: float, radii: Sequence[float], theta: float) -> Polygon:
    """Vertices at equal angular steps starting at ``theta``, radius cycling through ``radii``."""
    n = len(radii)
    return [(cx + r * math.cos(theta + 2 * math.pi * k / n),
             cy + r * math.sin(theta + 2 * math.pi * k / n)) for k, r in enumerate(radii)]


def _polygon_area(poly: Sequence[Point]) -> float:
    """Shoelace area."""
    s = 0.0
    for (x0, y0), (x1, y1) in zip(poly, list(poly[1:]) + [poly[0]]):
        s += x0 * y1 - x1 * y0
    return abs(s) / 2.0


# ------------------------------------------------------------------------------------------------
# COCO sample
# ------------------------------------------------------------------------------------------------

# (COCO category id, name, hue of the class's colour family)
COCO_CLASSES: tuple[tuple[int, str, float], ...] = (
    (1, 'circle', 0.0),      # red
    (2, 'triangle', 0.62),   # blue
    (3, 'square', 0.33),     # green
    (4, 'star', 0.14),       # yellow
    (5, 'cross', 0.84),      # magenta
)
COCO_SPLITS: dict[str, tuple[int, int, int]] = {
    # split: (number of images, split code of the seed stream, first image id)
    'train': (240, 0, 1),
    'val': (60, 1, 100001),
}
COCO_WIDTHS = (288, 304, 320, 336, 352)
COCO_HEIGHTS = (240, 256, 272)
COCO_SIZE_RANGE = (16.0, 120.0)   # object extent (circumscribed diameter), px
COCO_JPEG_QUALITY = 90
_COCO_DATE = '2024-01-01 00:00:00'
_ANN_IDS_PER_IMAGE = 100


def _shape_polygon(name: str, cx: float, cy: float, r: float, theta: float,
                   rng: np.random.Generator) -> Polygon:
    """Outline of a ``name`` shape whose vertices lie within radius ``r`` of (cx, cy)."""
    if name == 'circle':
        return _regular_polygon(cx, cy, [r] * 36, theta)
    if name == 'triangle':
        jitter = rng.uniform(-0.08, 0.08, size=3)
        pts = _regular_polygon(cx, cy, [r] * 3, theta)
        return [(cx + (x - cx) * (1 - abs(j)), cy + (y - cy) * (1 - abs(j)))
                for (x, y), j in zip(pts, jitter)]
    if name == 'square':
        return _regular_polygon(cx, cy, [r] * 4, theta)
    if name == 'star':
        return _regular_polygon(cx, cy, [r, 0.45 * r] * 5, theta)
    if name == 'cross':
        a = 0.32
        local = [(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1),
                 (-a, -1), (-a, -a), (-1, -a), (-1, a), (-a, a), (-a, 1)]
        s = r / math.hypot(1.0, a)
        c, sn = math.cos(theta), math.sin(theta)
        return [(cx + s * (x * c - y * sn), cy + s * (x * sn + y * c)) for x, y in local]
    raise ValueError(f'unknown COCO sample shape {name!r}')


@dataclass
class CocoObject:
    category_id: int
    polygon: Polygon   # rounded to 0.01 px, COCO pixel coordinates (pixel i spans [i, i+1))

    @property
    def bbox(self) -> list[float]:
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return [round(min(xs), 2), round(min(ys), 2),
                round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]


@dataclass
class CocoLayout:
    width: int
    height: int
    objects: list[CocoObject] = field(default_factory=list)


def _raster(poly: Sequence[Point], width: int, height: int, scale: int = 1) -> np.ndarray:
    """Boolean mask of a polygon given in pixel-area coordinates (pixel i spans [i, i+1))."""
    canvas = Image.new('L', (width * scale, height * scale), 0)
    # Pillow fills pixels whose integer index lies inside, i.e. it samples pixel i at i:
    # shift by half a pixel so that pixel i is sampled at its centre i + 0.5.
    ImageDraw.Draw(canvas).polygon([(x * scale - 0.5, y * scale - 0.5) for x, y in poly], fill=1)
    return np.asarray(canvas, dtype=bool)


def coco_layout(seed: int, split: str, index: int) -> CocoLayout:
    """Image size and non-touching objects of COCO sample image ``index`` of ``split``."""
    rng = _rng(seed, _COCO, COCO_SPLITS[split][1], index, _LAYOUT)
    width = int(rng.choice(COCO_WIDTHS))
    height = int(rng.choice(COCO_HEIGHTS))
    layout = CocoLayout(width, height)
    occupied = np.zeros((height, width), dtype=bool)
    n_wanted = int(rng.integers(1, 7))
    lo, hi = COCO_SIZE_RANGE
    for _ in range(n_wanted):
        k = int(rng.integers(len(COCO_CLASSES)))
        cat_id, name, _ = COCO_CLASSES[k]
        size = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        for _attempt in range(40):
            r = size / 2
            theta = float(rng.uniform(0, 2 * math.pi))
            poly = _shape_polygon(name, 0.0, 0.0, r, theta, rng)
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            x_lo, x_hi = 2 - min(xs), width - 2 - max(xs)
            y_lo, y_hi = 2 - min(ys), height - 2 - max(ys)
            if x_hi <= x_lo or y_hi <= y_lo:
                size *= 0.8
                continue
            cx, cy = float(rng.uniform(x_lo, x_hi)), float(rng.uniform(y_lo, y_hi))
            poly = [(round(float(x) + cx, 2), round(float(y) + cy, 2)) for x, y in poly]
            mask = _raster(poly, width, height)
            grown = mask.copy()   # keep a 1 px gap so that no object touches another
            grown[1:] |= mask[:-1]
            grown[:-1] |= mask[1:]
            grown[:, 1:] |= mask[:, :-1]
            grown[:, :-1] |= mask[:, 1:]
            if mask.sum() >= 16 and not (grown & occupied).any():
                occupied |= mask
                layout.objects.append(CocoObject(cat_id, poly))
                break
    return layout


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A background/distractor colour: any hue, low saturation, never an object colour."""
    return _hsv(float(rng.uniform()), float(rng.uniform(0.0, 0.3)), float(rng.uniform(0.2, 0.85)))


def render_coco(seed: int, split: str, index: int, layout: CocoLayout) -> np.ndarray:
    """RGB uint8 (H, W, 3) image of a COCO sample layout."""
    rng = _rng(seed, _COCO, COCO_SPLITS[split][1], index, _RENDER)
    h, w = layout.height, layout.width
    c0, c1 = _muted_colour(rng), _muted_colour(rng)
    blend = np.clip(0.5 + 0.6 * _smooth_noise(rng, h, w, float(rng.uniform(40, 120))), 0, 1)
    img = c0 * (1 - blend) + c1 * blend
    cell = float(rng.uniform(12, 30))   # mottling: mostly brightness, little chroma
    img += 12 * _smooth_noise(rng, h, w, cell, 1) + 5 * _smooth_noise(rng, h, w, cell, 3)

    # Clutter: strokes, blobs and hollow shapes in distractor colours, under the objects.
    canvas = Image.fromarray(_to_uint8(img))
    draw = ImageDraw.Draw(canvas)

    def colour() -> tuple[int, int, int]:
        return tuple(int(v) for v in _to_uint8(_muted_colour(rng)))

    for _ in range(int(rng.integers(4, 12))):   # blobs
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(6, 45)
        n = int(rng.integers(6, 12))
        radii = r * rng.uniform(0.5, 1.3, size=n)
        draw.polygon(_regular_polygon(cx, cy, list(radii), rng.uniform(0, 6.3)), fill=colour())
    for _ in range(int(rng.integers(2, 6))):    # hollow shapes: rings, frames
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 40)
        box = [cx - r, cy - r * rng.uniform(0.6, 1.4), cx + r, cy + r]
        if rng.uniform() < 0.5:
            draw.ellipse(box, outline=colour(), width=int(rng.integers(1, 4)))
        else:
            draw.rectangle(box, outline=colour(), width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(4, 14))):   # strokes
        pts = [(rng.uniform(-20, w + 20), rng.uniform(-20, h + 20)) for _ in range(2)]
        draw.line(pts, fill=colour(), width=int(rng.integers(1, 5)))
    img = np.array(canvas, dtype=np.float32)

    ss = 4   # supersampling factor of the object edges
    hues = {c: hue for c, _, hue in COCO_CLASSES}
    for obj in layout.objects:
        base = _hsv(hues[obj.category_id] + float(rng.uniform(-0.025, 0.025)),
                    float(rng.uniform(0.7, 0.95)), float(rng.uniform(0.7, 1.0)))
        x0, y0, bw, bh = obj.bbox
        cx, cy, r = x0 + bw / 2, y0 + bh / 2, max(bw, bh) / 2
        # Work on the box's pixels only: columns [u0, u1), rows [v0, v1).
        u0, v0 = max(0, int(x0)), max(0, int(y0))
        u1, v1 = min(w, int(math.ceil(x0 + bw)) + 1), min(h, int(math.ceil(y0 + bh)) + 1)
        ys, xs = np.mgrid[v0:v1, u0:u1].astype(np.float32) + 0.5
        phi = float(rng.uniform(0, 2 * math.pi))
        shade = 1 + float(rng.uniform(0.05, 0.2)) * (
            (xs - cx) * math.cos(phi) + (ys - cy) * math.sin(phi)) / r
        fill = base * shade[..., None] + 4 * _smooth_noise(rng, v1 - v0, u1 - u0, 3.0, 1)
        big = _raster([(x - u0, y - v0) for x, y in obj.polygon], u1 - u0, v1 - v0, ss)
        alpha = big.astype(np.float32).reshape(v1 - v0, ss, u1 - u0, ss).mean(axis=(1, 3))
        alpha = alpha[..., None]
        img[v0:v1, u0:u1] = img[v0:v1, u0:u1] * (1 - alpha) + fill * alpha

    return _to_uint8(img)


def _coco_json(seed: int, split: str) -> dict:
    n_images, _, first_id = COCO_SPLITS[split]
    images, annotations = [], []
    for i in range(n_images):
        layout = coco_layout(seed, split, i)
        image_id = first_id + i
        images.append({
            'license': 1,
            'file_name': f'{image_id:012d}.jpg',
            'coco_url': '',
            'height': layout.height,
            'width': layout.width,
            'date_captured': _COCO_DATE,
            'flickr_url': '',
            'id': image_id,
        })
        for k, obj in enumerate(layout.objects):
            annotations.append({
                'segmentation': [[c for p in obj.polygon for c in p]],
                'area': round(_polygon_area(obj.polygon), 2),
                'iscrowd': 0,
                'image_id': image_id,
                'bbox': obj.bbox,
                'category_id': obj.category_id,
                'id': image_id * _ANN_IDS_PER_IMAGE + k + 1,
            })
    return {
        'info': {
            'description': 'mmattn COCO-format sample: synthetic shapes on cluttered backgrounds '
                           '(tools/data/make_sample_data.py)',
            'url': '',
            'version': '1.0',
            'year': 2024,
            'contributor': 'mmattn',
            'date_created': '2024/01/01',
        },
        'licenses': [{'url': 'https://www.apache.org/licenses/LICENSE-2.0', 'id': 1,
                      'name': 'Apache License 2.0'}],
        'images': images,
        'annotations': annotations,
        'categories': [{'supercategory': 'shape', 'id': c, 'name': n} for c, n, _ in COCO_CLASSES],
    }


def make_coco(out: Path, seed: int = DEFAULT_SEED, limit: int | None = None) -> None:
    """Write ``out/annotations/instances_{split}2017.json`` and ``out/{split}2017/*.jpg``."""
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    for split, (n_images, _, first_id) in COCO_SPLITS.items():
        coco = _coco_json(seed, split)
        text = json.dumps(coco, separators=(',', ':'))
        (out / 'annotations' / f'instances_{split}2017.json').write_text(text + '\n')
        img_dir = out / f'{split}2017'
        img_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n_images if limit is None else min(limit, n_images)):
            img = render_coco(seed, split, i, coco_layout(seed, split, i))
            Image.fromarray(img).save(img_dir / f'{first_id + i:012d}.jpg', 'JPEG',
                                      quality=COCO_JPEG_QUALITY, optimize=True)


# ------------------------------------------------------------------------------------------------
# Cityscapes sample
# ------------------------------------------------------------------------------------------------

CS_SIZE = (256, 128)   # (W, H)
CS_SPLITS: dict[str, tuple[int, tuple[tuple[str, int], ...]]] = {
    # split: (split code of the seed stream, ((city, number of images), ...))
    'train': (0, (('aachen', 12), ('bochum', 12))),
    'val': (1, (('frankfurt', 8),)),
}
CS_FRAME = 19   # Cityscapes annotates the 20th frame of every 30-frame snippet


@dataclass
class CsObject:
    label: str            # a cityscapesscripts label name
    polygon: Polygon      # float while laid out; integer after ``_finish``
    base_y: float = 0.0   # ground contact row, orders the 'things' far to near


@dataclass
class CsScene:
    width: int
    height: int
    horizon: float
    vanish_x: float
    ppm: float                 # pixels per metre at the bottom row
    lane_marks: list[float]    # bottom-row x of the dashed lane lines
    overcast: bool
    objects: list[CsObject]


def _clip(poly: Polygon, w: int, h: int) -> list[tuple[int, int]]:
    """Sutherland-Hodgman clip to [0, w-1] x [0, h-1], then round to integer vertices."""
    def cut(pts: Polygon, inside: Callable[[Point], bool],
            cross: Callable[[Point, Point], Point]) -> Polygon:
        res: Polygon = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    res.append(cross(prev, cur))
                res.append(cur)
            elif inside(prev):
                res.append(cross(prev, cur))
        return res

    def at_x(x: float) -> Callable[[Point, Point], Point]:
        return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0]))

    def at_y(y: float) -> Callable[[Point, Point], Point]:
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y)

    pts = list(poly)
    for inside, cross in ((lambda p: p[0] >= 0, at_x(0.0)), (lambda p: p[0] <= w - 1, at_x(w - 1)),
                          (lambda p: p[1] >= 0, at_y(0.0)), (lambda p: p[1] <= h - 1, at_y(h - 1))):
        if not pts:
            break
        pts = cut(pts, inside, cross)
    out: list[tuple[int, int]] = []
    for x, y in pts:
        q = (int(math.floor(x + 0.5)), int(math.floor(y + 0.5)))
        if not out or out[-1] != q:
            out.append(q)
    while len(out) > 1 and out[0] == out[-1]:
        out.pop()
    return out


def _blob(cx: float, cy: float, rx: float, ry: float, rng: np.random.Generator,
          n: int = 14) -> Polygon:
    radii = rng.uniform(0.75, 1.15, size=n)
    angles = [2 * math.pi * k / n for k in range(n)]
    return [(cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)) for a, r in zip(angles, radii)]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def cityscapes_scene(seed: int, split: str, city: int, index: int) -> CsScene:
    """The labelled polygons (in drawing order) of one Cityscapes sample street scene."""
    rng = _rng(seed, _CITYSCAPES, CS_SPLITS[split][0], city, index, _LAYOUT)
    W, H = CS_SIZE
    yh = H * float(rng.uniform(0.40, 0.50))   # horizon row
    xv = W * float(rng.uniform(0.38, 0.62))   # vanishing point column
    depth = H - yh

    def t_of(y: float) -> float:            # 0 at the horizon, 1 at the bottom row
        return (y - yh) / depth

    def ray_x(b: float, y: float) -> float:  # x of the ground line through V and (b, H) at row y
        return xv + (b - xv) * t_of(y)

    def ray_y(b: float, x: float) -> float:  # row of that line at column x
        return yh + depth * (x - xv) / (b - xv)

    road_l = xv - W * float(rng.uniform(0.45, 0.85))
    road_r = xv + W * float(rng.uniform(0.45, 0.85))
    road_m = float(rng.uniform(7.0, 12.0))
    ppm = (road_r - road_l) / road_m             # pixels per metre at the bottom row
    n_lanes = 2 if road_m < 9.5 else 3
    lane_marks = [road_l + (road_r - road_l) * k / n_lanes for k in range(1, n_lanes)]

    objs: list[CsObject] = []
    things: list[CsObject] = []
    add = objs.append

    # Sky, then a distant band at the horizon.
    add(CsObject('sky', _rect(-1, -1, W + 1, yh + 2)))
    add(CsObject(str(rng.choice(['building', 'vegetation'])),
                 [(-1, yh + 2)] + [(x, yh - float(rng.uniform(1, 6)))
                                   for x in np.linspace(-1, W + 1, 9)] + [(W + 1, yh + 2)]))

    sides = []
    for sign, road_b in ((-1, road_l), (1, road_r)):
        parking = float(rng.uniform(2.0, 2.6)) if rng.uniform() < 0.3 else 0.0
        sidewalk = float(rng.uniform(2.5, 5.0))
        terrain = float(rng.uniform(1.5, 4.0)) if rng.uniform() < 0.45 else 0.0
        b_curb = road_b + sign * parking * ppm
        b_out = b_curb + sign * sidewalk * ppm
        b_base = b_out + sign * terrain * ppm
        sides.append((sign, road_b, b_curb, b_out, b_base, parking, terrain))

    # Facades: a sequence of buildings (or tree masses) standing on the base line of each side.
    for sign, road_b, b_curb, b_out, b_base, parking, terrain in sides:
        park_side = rng.uniform() < 0.2
        inward = -sign   # facades run from the image edge towards the vanishing point
        x = (0.0 if sign < 0 else float(W)) + sign * 2
        while abs(x - xv) > 3:
            width = max(3.0, abs(xv - x) * float(rng.uniform(0.2, 0.5)))
            x_next = x + inward * width if abs(xv - x) - width > 3 else xv - inward * 2
            xa, xb = x, x_next
            ya, yb = ray_y(b_base, xa), ray_y(b_base, xb)
            ta, tb = t_of(ya), t_of(yb)
            if park_side or rng.uniform() < 0.12:
                tops = [(xx, ray_y(b_base, xx) - float(rng.uniform(4, 12)) * ppm
                         * t_of(ray_y(b_base, xx))) for xx in np.linspace(xa, xb, 5)]
                add(CsObject('vegetation', [(xa, ya + 2)] + tops + [(xb, yb + 2)]))
            else:
                hm = float(rng.uniform(8, 30))
                add(CsObject('building', [(xa, ya + 2), (xa, ya - hm * ppm * ta),
                                          (xb, yb - hm * ppm * tb), (xb, yb + 2)]))
            x = x_next
        # Ground strips of this side: terrain, sidewalk, parking (triangles with apex V).
        if terrain:
            add(CsObject('terrain', [(xv, yh), (b_base, H + 2), (b_out, H + 2)]))
        add(CsObject('sidewalk', [(xv, yh), (b_out, H + 2), (b_curb, H + 2)]))
        if parking:
            add(CsObject('parking', [(xv, yh), (b_curb, H + 2), (road_b, H + 2)]))
        # A low wall or fence along the outer line of the sidewalk.
        for label, prob, hm_rng in (('wall', 0.35, (0.8, 2.0)), ('fence', 0.35, (1.0, 2.2))):
            if rng.uniform() < prob:
                ya = yh + depth * float(rng.uniform(0.05, 0.5))
                yb = min(H + 20.0, ya + depth * float(rng.uniform(0.2, 0.8)))
                xa, xb = ray_x(b_out, ya), ray_x(b_out, yb)
                hm = float(rng.uniform(*hm_rng))
                add(CsObject(label, [(xa, ya), (xa, ya - hm * ppm * t_of(ya)),
                                     (xb, yb - hm * ppm * t_of(yb)), (xb, yb)]))

    add(CsObject('road', [(xv, yh), (road_l, H + 2), (road_r, H + 2)]))

    def ground_point(b0: float, b1: float, t: float) -> tuple[float, float]:
        """A point on the ground at depth t between the lines through b0 and b1."""
        y = yh + depth * t
        return ray_x(b0 + (b1 - b0) * float(rng.uniform()), y), y

    def depth_t(lo: float = 0.12, hi: float = 1.0) -> float:
        return float(rng.uniform(lo, hi)) ** 0.8

    def person(label: str, x: float, y: float, s: float, hm: float) -> CsObject:
        """Standing silhouette with feet at (x, y); s = pixels per metre there."""
        h, w = hm * s, 0.55 * s
        head = _regular_polygon(x, y - h + 0.12 * s, [0.12 * s] * 8, -math.pi / 2)
        body = [(x + w / 2, y - h + 0.26 * s), (x + w / 2, y - 0.45 * h),
                (x + w / 4, y), (x + 0.05 * w, y), (x, y - 0.4 * h), (x - 0.05 * w, y),
                (x - w / 4, y), (x - w / 2, y - 0.45 * h), (x - w / 2, y - h + 0.26 * s)]
        return CsObject(label, head[:4] + body + head[4:], y)

    def two_wheeler(label: str, x: float, y: float, s: float, length: float,
                    facing: int) -> CsObject:
        """Side view of a bicycle / motorcycle with wheels touching row y."""
        r = (0.33 if label == 'bicycle' else 0.32) * s
        xr, xf = x - facing * (length / 2 * s - r), x + facing * (length / 2 * s - r)
        lower = [(xx + r * math.cos(a), y - r + r * math.sin(a))
                 for xx in (xr, xf) for a in np.linspace(math.pi, 0, 7)]
        top = 1.0 * s if label == 'bicycle' else 1.1 * s
        poly = sorted(lower, key=lambda p: p[0] * facing)   # rear wheel to front wheel
        return CsObject(label, poly + [(xf, y - top), (xr, y - top * 0.85)], y)

    # Street furniture and vegetation on both sidewalks.
    for sign, road_b, b_curb, b_out, b_base, parking, terrain in sides:
        for _ in range(int(rng.integers(1, 4))):         # poles with lights / signs
            x, y = ground_point(b_curb + sign * 0.4 * ppm, b_curb + sign * 1.2 * ppm, depth_t())
            s = ppm * t_of(y)
            hm, wm = float(rng.uniform(3.5, 8.0)), float(rng.uniform(0.12, 0.25))
            wp = max(1.2, wm * s)
            things.append(CsObject('pole', _rect(x - wp / 2, y - hm * s, x + wp / 2, y + 0.5), y))
            if rng.uniform() < 0.45:
                lw, lh = max(2.0, 0.35 * s), max(4.0, 0.95 * s)
                top = y - min(hm, 4.5) * s
                things.append(CsObject('traffic light',
                                       _rect(x - lw / 2, top, x + lw / 2, top + lh), y + 0.01))
            if rng.uniform() < 0.55:
                r = max(1.6, 0.35 * s)
                cy = y - float(rng.uniform(2.2, 3.0)) * s
                kind = int(rng.integers(3))
                poly = (_regular_polygon(x, cy, [r] * 12, 0) if kind == 0 else
                        _regular_polygon(x, cy, [r * 1.2] * 3, -math.pi / 2) if kind == 1 else
                        _rect(x - r, cy - r, x + r, cy + r))
                things.append(CsObject('traffic sign', poly, y + 0.02))
        for _ in range(int(rng.integers(0, 3))):         # trees
            x, y = ground_point(b_out - sign * 0.3 * ppm, b_out - sign * 1.5 * ppm, depth_t(0.2))
            s = ppm * t_of(y)
            tw, th = max(1.2, 0.3 * s), float(rng.uniform(2.5, 4)) * s
            things.append(CsObject('vegetation', _rect(x - tw / 2, y - th - 0.5 * s,
                                                       x + tw / 2, y + 0.5), y))
            rx = float(rng.uniform(1.5, 3.0)) * s
            things.append(CsObject('vegetation', _blob(x, y - th - 0.8 * rx, rx,
                                                       rx * float(rng.uniform(0.8, 1.2)), rng), y))
        for _ in range(int(rng.integers(0, 4))):         # pedestrians
            x, y = ground_point(b_curb, b_out, depth_t())
            things.append(person('person', x, y, ppm * t_of(y), float(rng.uniform(1.55, 1.95))))
        if rng.uniform() < 0.35:                          # parked bicycle
            x, y = ground_point(b_curb, b_out, depth_t())
            things.append(two_wheeler('bicycle', x, y, ppm * t_of(y), 1.7,
                                      int(rng.choice([-1, 1]))))
        if rng.uniform() < 0.35:                          # static clutter: bins, benches
            x, y = ground_point(b_curb, b_out, depth_t())
            s = ppm * t_of(y)
            things.append(CsObject('static', _rect(x - 0.4 * s, y - 1.0 * s, x + 0.4 * s, y), y))

    # Traffic on the road: cars in lanes (rear view), crossing vehicles (side view), riders.
    def lane_point(t: float) -> tuple[float, float]:
        return ground_point(road_l + 0.9 * ppm, road_r - 0.9 * ppm, t)

    for _ in range(int(rng.integers(1, 5))):
        x, y = lane_point(depth_t())
        s = ppm * t_of(y)
        w, h = float(rng.uniform(1.7, 1.95)) * s, float(rng.uniform(1.35, 1.6)) * s
        things.append(CsObject('car', [(x - w / 2, y), (x - w / 2, y - 0.55 * h),
                                       (x - 0.38 * w, y - h), (x + 0.38 * w, y - h),
                                       (x + w / 2, y - 0.55 * h), (x + w / 2, y)], y))

    def side_vehicle(label: str, x: float, y: float, s: float, facing: int) -> CsObject:
        if label == 'car':
            lm, hm = float(rng.uniform(3.9, 4.8)), float(rng.uniform(1.4, 1.55))
            prof = [(0, 0), (0, 0.5), (0.06, 0.58), (0.3, 0.62), (0.42, 1), (0.8, 1),
                    (0.95, 0.62), (1, 0.55), (1, 0)]
        elif label == 'truck':
            lm, hm = float(rng.uniform(7, 10)), float(rng.uniform(3.2, 3.8))
            prof = [(0, 0), (0, 0.72), (0.05, 0.8), (0.2, 0.8), (0.2, 1), (1, 1), (1, 0)]
        elif label == 'bus':
            lm, hm = float(rng.uniform(11, 13)), float(rng.uniform(3.0, 3.3))
            prof = [(0, 0), (0, 0.95), (0.02, 1), (0.98, 1), (1, 0.95), (1, 0)]
        else:   # train (a tram), with its pantograph
            lm, hm = float(rng.uniform(25, 32)), 3.4
            prof = [(0, 0), (0, 0.9), (0.04, 1), (0.4, 1), (0.42, 1.14), (0.5, 1.14),
                    (0.52, 1), (0.96, 1), (1, 0.9), (1, 0)]
        L, Hh = lm * s, hm * s
        x0 = x - L / 2
        return CsObject(label, [(x0 + L * (u if facing > 0 else 1 - u), y - Hh * v)
                                for u, v in prof], y)

    big = []
    if index % 3 == 0 or rng.uniform() < 0.25:
        big.append('bus')
    if index % 3 == 1 or rng.uniform() < 0.25:
        big.append('truck')
    if index % 4 == 2:
        big.append('train')
    for label in big + ['car'] * int(rng.integers(0, 3)):
        x, y = lane_point(depth_t(0.1, 0.4))
        things.append(side_vehicle(label, x, y, ppm * t_of(y), int(rng.choice([-1, 1]))))
    for k in range(int(rng.integers(0, 3)) + (index % 2)):   # riders
        label = 'motorcycle' if (k == 0 and index % 2) or rng.uniform() < 0.3 else 'bicycle'
        x, y = lane_point(depth_t(0.2))
        s = ppm * t_of(y)
        facing = int(rng.choice([-1, 1]))
        bike = two_wheeler(label, x, y, s, 1.7 if label == 'bicycle' else 2.1, facing)
        rider = person('rider', x - facing * 0.1 * s, y - 0.55 * s, s, 1.25)
        rider.base_y = bike.base_y = y
        things += [bike, rider]
    for _ in range(int(rng.integers(0, 3))):                 # pedestrians crossing
        x, y = lane_point(depth_t())
        things.append(person('person', x, y, ppm * t_of(y), float(rng.uniform(1.55, 1.95))))

    # Things from far to near (stable sort keeps a rider in front of its bike).
    objs += sorted(things, key=lambda o: o.base_y)

    # The ego vehicle's bonnet: ignore pixels along the bottom.
    e0, e1 = H * float(rng.uniform(0.05, 0.09)), H * float(rng.uniform(0.09, 0.14))
    hood = [(xx, H - (e0 + (e1 - e0) * math.cos(math.pi * (xx / W - 0.5)) ** 2))
            for xx in np.linspace(-1, W + 1, 11)]
    add(CsObject('ego vehicle', [(-1, H + 1)] + hood + [(W + 1, H + 1)]))

    return CsScene(W, H, yh, xv, ppm, lane_marks, bool(rng.uniform() < 0.35), objs)


def _finish(scene: CsScene) -> list[CsObject]:
    """Clip and round the scene's polygons; drop the ones left empty."""
    out = []
    for obj in scene.objects:
        poly = _clip(obj.polygon, scene.width, scene.height)
        if len(set(poly)) >= 3 and _polygon_area(poly) > 0:
            out.append(CsObject(obj.label, poly, obj.base_y))
    return out


def cityscapes_label_images(objects: Sequence[CsObject], width: int,
                            height: int) -> dict[str, Image.Image]:
    """labelIds / labelTrainIds / color / instanceIds images, rasterised from the polygons in
    order exactly as cityscapesscripts' json2labelImg and json2instanceImg do."""
    from cityscapesscripts.helpers.labels import labels, name2label

    size = (width, height)
    bg = name2label['unlabeled']
    images = {'labelIds': Image.new('L', size, bg.id),
              'labelTrainIds': Image.new('L', size, bg.trainId),
              'color': Image.new('RGBA', size, bg.color),
              'instanceIds': Image.new('I', size, bg.id)}
    draws = {k: ImageDraw.Draw(v) for k, v in images.items()}
    n_instances = {lab.name: 0 for lab in labels if lab.hasInstances}
    for obj in objects:
        lab = name2label[obj.label]
        if lab.id < 0:
            continue
        draws['labelIds'].polygon(obj.polygon, fill=lab.id)
        draws['labelTrainIds'].polygon(obj.polygon, fill=lab.trainId)
        draws['color'].polygon(obj.polygon, fill=lab.color)
        inst = lab.id
        if lab.hasInstances:
            inst = lab.id * 1000 + n_instances[lab.name]
            n_instances[lab.name] += 1
        draws['instanceIds'].polygon(obj.polygon, fill=inst)
    return images


# Base colours (RGB) and their jitter per label, for the photo.
_CS_PALETTES: dict[str, list[tuple[int, int, int]]] = {
    'building': [(150, 120, 100), (182, 162, 132), (122, 112, 106), (165, 92, 72),
                 (200, 190, 172), (108, 100, 92), (140, 140, 135)],
    'car': [(205, 205, 208), (32, 32, 36), (140, 142, 146), (170, 32, 30), (30, 62, 140),
            (215, 212, 200), (90, 92, 96), (40, 80, 52)],
    'truck': [(215, 215, 212), (190, 190, 185), (178, 62, 40), (40, 90, 60)],
    'bus': [(232, 190, 32), (200, 40, 40), (40, 92, 172), (238, 238, 236)],
    'train': [(200, 30, 40), (236, 236, 232), (230, 200, 40)],
    'clothes': [(40, 40, 60), (150, 30, 30), (30, 60, 120), (200, 200, 190), (60, 90, 50),
                (120, 90, 60), (30, 30, 30), (180, 150, 40)],
    'skin': [(225, 182, 150), (190, 140, 110), (140, 100, 80)],
}


def render_cityscapes(seed: int, split: str, city: int, index: int, scene: CsScene,
                      objects: Sequence[CsObject]) -> np.ndarray:
    """RGB uint8 (H, W, 3) photo of a scene: each polygon painted with its class's texture."""
    rng = _rng(seed, _CITYSCAPES, CS_SPLITS[split][0], city, index, _RENDER)
    W, H = scene.width, scene.height
    img = np.zeros((H, W, 3), dtype=np.float32)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)

    def pick(name: str, jitter: float = 12) -> np.ndarray:
        pal = _CS_PALETTES[name]
        colour = np.array(pal[int(rng.integers(len(pal)))], np.float32)
        return colour + rng.uniform(-jitter, jitter, 3)

    def noise(cell: float, amp: float, ch: int = 1) -> np.ndarray:
        return amp * _smooth_noise(rng, H, W, cell, ch)

    fine = noise(1.6, 1.0)   # shared high-frequency grain, scaled per class
    yh, xv = scene.horizon, scene.vanish_x
    tmap = np.clip((ys - yh) / (H - yh), 1e-3, None)

    for obj in objects:
        canvas = Image.new('L', (W, H), 0)
        ImageDraw.Draw(canvas).polygon(obj.polygon, fill=1)
        m = np.asarray(canvas, dtype=bool)
        if not m.any():
            continue
        rows, cols = np.nonzero(m)
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        v = (ys - y0) / max(1, y1 - y0)   # 0..1 down the object's box
        u = (xs - x0) / max(1, x1 - x0)   # 0..1 across it
        lab = obj.label
        alpha = 1.0
        if lab == 'sky':
            top, bottom = ((np.array([188, 192, 198.]), np.array([228, 230, 232.]))
                           if scene.overcast else
                           (np.array([80, 130, 200.]), np.array([196, 214, 232.])))
            g = np.clip(ys / max(1.0, yh), 0, 1)[..., None]
            tex = top * (1 - g) + bottom * g + noise(20, 10) * np.array([1, 1, 0.6])
        elif lab == 'building':
            base = pick('building')
            cw, ch = float(rng.uniform(5, 9)), float(rng.uniform(5, 9))
            win = ((np.mod(xs - x0, cw) > cw * 0.45) & (np.mod(ys - y0, ch) > ch * 0.4)
                   & (v > 0.05))[..., None]
            glass = np.array([55, 62, 78.]) + rng.uniform(-10, 10, 3)
            tex = np.where(win, glass + 18 * fine, base + noise(10, 8) + 5 * fine)
        elif lab == 'vegetation':
            base = np.array([58, 108, 40.]) + rng.uniform(-15, 15, 3)
            leaf = noise(2.2, 1.0)
            tex = base * (1 + 0.35 * leaf) + 10 * fine
        elif lab == 'terrain':
            base = np.array([140, 150, 82.]) + rng.uniform(-12, 12, 3)
            tex = base + noise(6, 10) + 9 * fine
        elif lab in ('sidewalk', 'parking', 'static'):
            base = ({'sidewalk': np.array([168, 156, 158.]), 'parking': np.array([118, 114, 110.]),
                     'static': np.array([96, 78, 60.])}[lab] + rng.uniform(-10, 10, 3))
            grid = ((np.mod(xs, 5) < 0.6) | (np.mod(ys, 4) < 0.6))[..., None] & (lab == 'sidewalk')
            tex = base - 25 * grid + 5 * fine
        elif lab == 'road':
            base = np.array([84, 84, 90.]) + rng.uniform(-8, 8, 3)
            tex = base + noise(8, 5) + 6 * fine
            marks = np.zeros((H, W), dtype=bool)
            for b in scene.lane_marks:
                xm = xv + (b - xv) * tmap
                half = np.maximum(0.35, 0.08 * scene.ppm * tmap)
                dash = np.mod(6.0 / tmap, 9.0) < 4.5   # 3 m dashes in perspective
                marks |= (np.abs(xs - xm) < half) & dash & (ys > yh + 1)
            tex = np.where(marks[..., None], np.array([215, 215, 210.]), tex)
        elif lab in ('wall', 'pole'):
            base = (np.array([150, 146, 136.]) if lab == 'wall' else np.array([96, 96, 102.]))
            base = base + rng.uniform(-12, 12, 3)
            stripes = (np.mod(ys, 3) < 0.7)[..., None] if lab == 'wall' else (u < 0.35)[..., None]
            tex = base + np.where(stripes, -18.0, 8.0) + 4 * fine
        elif lab == 'fence':
            lattice = ((np.mod(xs + ys, 4) < 1) | (np.mod(xs - ys, 4) < 1))[..., None]
            metal = np.array([105, 108, 104.]) + rng.uniform(-10, 10, 3)
            tex = np.where(lattice, metal, 0.45 * img + 0.55 * (metal + 40))
        elif lab == 'traffic light':
            tex = np.array([38, 40, 34.]) + 3 * fine
            lamp = [(232, 40, 30), (240, 170, 20), (40, 200, 90)][int(rng.integers(3))]
            k = int(rng.integers(3))
            on = ((v * 3 >= k) & (v * 3 < k + 1) & (np.abs(u - 0.5) < 0.3))[..., None]
            tex = np.where(on, np.array(lamp, np.float32), tex)
        elif lab == 'traffic sign':
            col = [(30, 80, 180), (210, 30, 30), (232, 192, 24)][int(rng.integers(3))]
            inner = ((np.abs(u - 0.5) < 0.22) & (np.abs(v - 0.55) < 0.22))[..., None]
            tex = np.where(inner, np.array([238, 238, 238.]), np.array(col, np.float32))
        elif lab in ('person', 'rider'):
            clothes, legs = pick('clothes', 15), pick('clothes', 10) * 0.6
            skin = pick('skin', 8)
            head = np.array([230, 230, 230.]) if lab == 'rider' else skin
            tex = np.where((v < 0.15)[..., None], head,
                           np.where((v < 0.6)[..., None], clothes, legs)) + 4 * fine
        elif lab in ('car', 'truck', 'bus', 'train'):
            body = pick(lab)
            glass = np.array([52, 60, 74.]) + rng.uniform(-8, 8, 3)
            if lab == 'car':
                window = (v > 0.08) & (v < 0.42) & (u > 0.12) & (u < 0.88)
            elif lab == 'truck':
                window = (v > 0.25) & (v < 0.45) & ((u < 0.15) | (u > 0.85))
            elif lab == 'bus':
                window = (v > 0.14) & (v < 0.45) & (np.mod(xs - x0, 7) > 1)
            else:   # tram: tall windows, wide pillars, a contrasting stripe under them
                window = (v > 0.22) & (v < 0.55) & (np.mod(xs - x0, 12) > 4)
                body = np.where(((v > 0.66) & (v < 0.74))[..., None],
                                np.array([250, 250, 250.]) - body * 0.6, body)
            wheel = (v > 0.86) & ((u < 0.28) & (u > 0.06) | (u > 0.72) & (u < 0.94))
            shade = 1.0 - 0.25 * v
            tex = np.where(window[..., None], glass + 6 * fine,
                           body * shade[..., None] + 4 * fine)
            tex = np.where(wheel[..., None], np.array([24, 24, 26.]), tex)
        elif lab in ('motorcycle', 'bicycle'):
            dark = np.array([36, 36, 40.]) if lab == 'bicycle' else np.array([52, 52, 58.])
            rim = (v > 0.45) & ((u < 0.38) | (u > 0.62))
            see_through = rim & (np.abs(np.mod(u * 8, 2) - 1) < 0.6) & (lab == 'bicycle')
            tex = np.where(see_through[..., None], 0.5 * img + 0.5 * dark,
                           dark + 20 * (v < 0.3)[..., None])
        elif lab == 'ego vehicle':
            tex = np.array([30, 30, 34.]) + 25 * (1 - v)[..., None] * np.array([1, 1, 1.1])
        else:
            tex = np.full((H, W, 3), 128.0, np.float32)
        if tex.ndim == 1:
            tex = np.broadcast_to(tex, (H, W, 3))
        img = np.where(m[..., None], alpha * tex + (1 - alpha) * img, img)

    img += rng.normal(0.0, 1.5, size=img.shape).astype(np.float32)
    return _to_uint8(img)


def cityscapes_items(limit: int | None = None) -> Iterator[tuple[str, int, str, int, str]]:
    """(split, city index, city, image index, file stem) of every Cityscapes sample image."""
    for split, (_, cities) in CS_SPLITS.items():
        for c, (city, n) in enumerate(cities):
            for i in range(n if limit is None else min(limit, n)):
                yield split, c, city, i, f'{city}_{i:06d}_{CS_FRAME:06d}'


def make_cityscapes(out: Path, seed: int = DEFAULT_SEED, limit: int | None = None) -> None:
    """Write the leftImg8bit / gtFine trees of the Cityscapes sample under ``out``."""
    for split, c, city, i, stem in cityscapes_items(limit):
        scene = cityscapes_scene(seed, split, c, i)
        objects = _finish(scene)
        img_dir = out / 'leftImg8bit' / split / city
        gt_dir = out / 'gtFine' / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        photo = render_cityscapes(seed, split, c, i, scene, objects)
        Image.fromarray(photo).save(img_dir / f'{stem}_leftImg8bit.png', optimize=True)
        for kind, im in cityscapes_label_images(objects, scene.width, scene.height).items():
            if kind == 'instanceIds':   # 16-bit grey PNG, as in Cityscapes
                im = Image.fromarray(np.asarray(im).astype(np.uint16))
            im.save(gt_dir / f'{stem}_gtFine_{kind}.png', optimize=True)
        polygons = {'imgHeight': scene.height, 'imgWidth': scene.width,
                    'objects': [{'label': o.label, 'polygon': [list(p) for p in o.polygon]}
                                for o in objects]}
        (gt_dir / f'{stem}_gtFine_polygons.json').write_text(
            json.dumps(polygons, separators=(',', ':')) + '\n')


# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('data'), help='output root (data)')
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED)
    parser.add_argument('--limit', type=int, default=None,
                        help='render only the first N images of each COCO split / Cityscapes city')
    parser.add_argument('--only', choices=('coco', 'cityscapes'), default=None)
    args = parser.parse_args(argv)
    if args.only in (None, 'coco'):
        make_coco(args.out / 'coco_sample', args.seed, args.limit)
    if args.only in (None, 'cityscapes'):
        make_cityscapes(args.out / 'cityscapes_sample', args.seed, args.limit)


if __name__ == '__main__':
    main()
