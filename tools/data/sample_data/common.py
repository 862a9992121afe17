"""Helpers shared by the sample-data generators: seeded random streams, colours, value noise,
polygons and their rasterisation."""
from __future__ import annotations

import colorsys
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
Polygon = list[Point]

DEFAULT_SEED = 0
# Integers naming the random streams: (seed, dataset, split, ..., purpose).
STREAM_COCO, STREAM_CITYSCAPES = 1, 2
STREAM_LAYOUT, STREAM_RENDER = 0, 1


def rng_stream(seed: int, *stream: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the integers naming the stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] -> float32 RGB (3,) in [0, 255]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float,
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


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and clip to uint8."""
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def regular_polygon(cx: float, cy: float, radii: Sequence[float], theta: float) -> Polygon:
    """Vertices at equal angular steps starting at ``theta``, radius cycling through ``radii``."""
    n = len(radii)
    return [(cx + r * math.cos(theta + 2 * math.pi * k / n),
             cy + r * math.sin(theta + 2 * math.pi * k / n)) for k, r in enumerate(radii)]


def rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    """Axis-aligned rectangle (x0, y0) - (x1, y1)."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def polygon_area(poly: Sequence[Point]) -> float:
    """Shoelace area."""
    s = 0.0
    for (x0, y0), (x1, y1) in zip(poly, list(poly[1:]) + [poly[0]]):
        s += x0 * y1 - x1 * y0
    return abs(s) / 2.0


def raster(poly: Sequence[Point], width: int, height: int, scale: int = 1) -> np.ndarray:
    """Boolean (height * scale, width * scale) mask of a polygon given in pixel-area coordinates
    (pixel i spans [i, i+1))."""
    canvas = Image.new('L', (width * scale, height * scale), 0)
    # Pillow fills pixels whose integer index lies inside, i.e. it samples pixel i at i:
    # shift by half a pixel so that pixel i is sampled at its centre i + 0.5.
    ImageDraw.Draw(canvas).polygon([(x * scale - 0.5, y * scale - 0.5) for x, y in poly], fill=1)
    return np.asarray(canvas, dtype=bool)
