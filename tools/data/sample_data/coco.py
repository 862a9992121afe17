"""The COCO sample: five shape classes, each with its own shape and colour family (circle/red,
triangle/blue, square/green, star/yellow, cross/magenta), 1-6 objects of 16-120 px on cluttered,
low-saturation backgrounds (textured noise, lines, blobs, hollow shapes). Objects never cover one
another (their boxes may overlap), so each polygon is the visible outline and each box its tight
bound."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .common import (DEFAULT_SEED, STREAM_COCO, STREAM_LAYOUT, STREAM_RENDER, Polygon, hsv,
                     polygon_area, raster, regular_polygon, rng_stream, smooth_noise, to_uint8)

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
_PLACEMENT_ATTEMPTS = 40
_SUPERSAMPLING = 4   # of the object edges


@dataclass
class CocoObject:
    category_id: int
    polygon: Polygon   # rounded to 0.01 px, COCO pixel coordinates (pixel i spans [i, i+1))

    @property
    def bbox(self) -> list[float]:
        """Tight [x, y, w, h] of the polygon, rounded to 0.01 px."""
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return [round(min(xs), 2), round(min(ys), 2),
                round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]


@dataclass
class CocoLayout:
    width: int
    height: int
    objects: list[CocoObject] = field(default_factory=list)


def _rng(seed: int, split: str, index: int, purpose: int) -> np.random.Generator:
    return rng_stream(seed, STREAM_COCO, COCO_SPLITS[split][1], index, purpose)


# ------------------------------------------------------------------------------------- layout

def shape_polygon(name: str, cx: float, cy: float, r: float, theta: float,
                  rng: np.random.Generator) -> Polygon:
    """Outline of a ``name`` shape whose vertices lie within radius ``r`` of (cx, cy)."""
    if name == 'circle':
        return regular_polygon(cx, cy, [r] * 36, theta)
    if name == 'triangle':
        jitter = rng.uniform(-0.08, 0.08, size=3)
        pts = regular_polygon(cx, cy, [r] * 3, theta)
        return [(cx + (x - cx) * (1 - abs(j)), cy + (y - cy) * (1 - abs(j)))
                for (x, y), j in zip(pts, jitter)]
    if name == 'square':
        return regular_polygon(cx, cy, [r] * 4, theta)
    if name == 'star':
        return regular_polygon(cx, cy, [r, 0.45 * r] * 5, theta)
    if name == 'cross':
        a = 0.32
        local = [(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1),
                 (-a, -1), (-a, -a), (-1, -a), (-1, a), (-a, a), (-a, 1)]
        s = r / math.hypot(1.0, a)
        c, sn = math.cos(theta), math.sin(theta)
        return [(cx + s * (x * c - y * sn), cy + s * (x * sn + y * c)) for x, y in local]
    raise ValueError(f'unknown COCO sample shape {name!r}')


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` (H, W) dilated by one pixel, 4-connected."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _place_shape(rng: np.random.Generator, name: str, size: float,
                 occupied: np.ndarray) -> Polygon | None:
    """A ``name`` outline of about ``size`` px inside the image that keeps a 1 px gap to the
    ``occupied`` (H, W) pixels (which it then joins), or None after the attempts run out."""
    height, width = occupied.shape
    for _attempt in range(_PLACEMENT_ATTEMPTS):
        theta = float(rng.uniform(0, 2 * math.pi))
        poly = shape_polygon(name, 0.0, 0.0, size / 2, theta, rng)
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x_lo, x_hi = 2 - min(xs), width - 2 - max(xs)
        y_lo, y_hi = 2 - min(ys), height - 2 - max(ys)
        if x_hi <= x_lo or y_hi <= y_lo:
            size *= 0.8
            continue
        cx, cy = float(rng.uniform(x_lo, x_hi)), float(rng.uniform(y_lo, y_hi))
        poly = [(round(float(x) + cx, 2), round(float(y) + cy, 2)) for x, y in poly]
        mask = raster(poly, width, height)
        if mask.sum() >= 16 and not (_grow(mask) & occupied).any():
            occupied |= mask
            return poly
    return None


def coco_layout(seed: int, split: str, index: int) -> CocoLayout:
    """Image size and non-touching objects of COCO sample image ``index`` of ``split``."""
    rng = _rng(seed, split, index, STREAM_LAYOUT)
    width = int(rng.choice(COCO_WIDTHS))
    height = int(rng.choice(COCO_HEIGHTS))
    layout = CocoLayout(width, height)
    occupied = np.zeros((height, width), dtype=bool)
    lo, hi = COCO_SIZE_RANGE
    for _ in range(int(rng.integers(1, 7))):
        cat_id, name, _ = COCO_CLASSES[int(rng.integers(len(COCO_CLASSES)))]
        size = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        poly = _place_shape(rng, name, size, occupied)
        if poly is not None:
            layout.objects.append(CocoObject(cat_id, poly))
    return layout


# ------------------------------------------------------------------------------------- render

def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A background/distractor colour: any hue, low saturation, never an object colour."""
    return hsv(float(rng.uniform()), float(rng.uniform(0.0, 0.3)), float(rng.uniform(0.2, 0.85)))


def _clutter_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in to_uint8(_muted_colour(rng)))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Float (h, w, 3): two muted colours blended by coarse noise, mottled by finer noise."""
    c0, c1 = _muted_colour(rng), _muted_colour(rng)
    blend = np.clip(0.5 + 0.6 * smooth_noise(rng, h, w, float(rng.uniform(40, 120))), 0, 1)
    img = c0 * (1 - blend) + c1 * blend
    cell = float(rng.uniform(12, 30))   # mottling: mostly brightness, little chroma
    img += 12 * smooth_noise(rng, h, w, cell, 1) + 5 * smooth_noise(rng, h, w, cell, 3)
    return img


def _draw_clutter(rng: np.random.Generator, canvas: Image.Image) -> None:
    """Blobs, hollow shapes (rings, frames) and strokes in distractor colours."""
    w, h = canvas.size
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 12))):   # blobs
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(6, 45)
        n = int(rng.integers(6, 12))
        radii = r * rng.uniform(0.5, 1.3, size=n)
        draw.polygon(regular_polygon(cx, cy, list(radii), rng.uniform(0, 6.3)),
                     fill=_clutter_colour(rng))
    for _ in range(int(rng.integers(2, 6))):    # hollow shapes
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 40)
        box = [cx - r, cy - r * rng.uniform(0.6, 1.4), cx + r, cy + r]
        shape = draw.ellipse if rng.uniform() < 0.5 else draw.rectangle
        shape(box, outline=_clutter_colour(rng), width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(4, 14))):   # strokes
        pts = [(rng.uniform(-20, w + 20), rng.uniform(-20, h + 20)) for _ in range(2)]
        draw.line(pts, fill=_clutter_colour(rng), width=int(rng.integers(1, 5)))


def _paint_object(rng: np.random.Generator, img: np.ndarray, obj: CocoObject) -> None:
    """Blend a shaded, textured, anti-aliased ``obj`` into ``img`` (H, W, 3) in place."""
    h, w = img.shape[:2]
    hue = {c: hue for c, _, hue in COCO_CLASSES}[obj.category_id]
    base = hsv(hue + float(rng.uniform(-0.025, 0.025)),
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
    fill = base * shade[..., None] + 4 * smooth_noise(rng, v1 - v0, u1 - u0, 3.0, 1)
    ss = _SUPERSAMPLING
    big = raster([(x - u0, y - v0) for x, y in obj.polygon], u1 - u0, v1 - v0, ss)
    alpha = big.astype(np.float32).reshape(v1 - v0, ss, u1 - u0, ss).mean(axis=(1, 3))
    alpha = alpha[..., None]
    img[v0:v1, u0:u1] = img[v0:v1, u0:u1] * (1 - alpha) + fill * alpha


def render_coco(seed: int, split: str, index: int, layout: CocoLayout) -> np.ndarray:
    """RGB uint8 (H, W, 3) image of a COCO sample layout."""
    rng = _rng(seed, split, index, STREAM_RENDER)
    canvas = Image.fromarray(to_uint8(_background(rng, layout.height, layout.width)))
    _draw_clutter(rng, canvas)   # under the objects
    img = np.array(canvas, dtype=np.float32)
    for obj in layout.objects:
        _paint_object(rng, img, obj)
    return to_uint8(img)


# --------------------------------------------------------------------------------------- json

def _image_entry(image_id: int, layout: CocoLayout) -> dict:
    return {
        'license': 1,
        'file_name': f'{image_id:012d}.jpg',
        'coco_url': '',
        'height': layout.height,
        'width': layout.width,
        'date_captured': _COCO_DATE,
        'flickr_url': '',
        'id': image_id,
    }


def _annotation_entry(image_id: int, k: int, obj: CocoObject) -> dict:
    return {
        'segmentation': [[c for p in obj.polygon for c in p]],
        'area': round(polygon_area(obj.polygon), 2),
        'iscrowd': 0,
        'image_id': image_id,
        'bbox': obj.bbox,
        'category_id': obj.category_id,
        'id': image_id * _ANN_IDS_PER_IMAGE + k + 1,
    }


def coco_json(seed: int, split: str) -> dict:
    """The ``instances_{split}2017.json`` content of the COCO sample."""
    n_images, _, first_id = COCO_SPLITS[split]
    images, annotations = [], []
    for i in range(n_images):
        layout = coco_layout(seed, split, i)
        image_id = first_id + i
        images.append(_image_entry(image_id, layout))
        annotations += [_annotation_entry(image_id, k, obj)
                        for k, obj in enumerate(layout.objects)]
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
    """Write ``out/annotations/instances_{split}2017.json`` (always complete) and the first
    ``limit`` (default all) images ``out/{split}2017/*.jpg`` of each split."""
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    for split, (n_images, _, first_id) in COCO_SPLITS.items():
        text = json.dumps(coco_json(seed, split), separators=(',', ':'))
        (out / 'annotations' / f'instances_{split}2017.json').write_text(text + '\n')
        img_dir = out / f'{split}2017'
        img_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n_images if limit is None else min(limit, n_images)):
            img = render_coco(seed, split, i, coco_layout(seed, split, i))
            Image.fromarray(img).save(img_dir / f'{first_id + i:012d}.jpg', 'JPEG',
                                      quality=COCO_JPEG_QUALITY, optimize=True)
