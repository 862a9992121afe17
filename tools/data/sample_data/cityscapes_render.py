"""The photo of a Cityscapes sample scene: each polygon painted, in drawing order, with a texture
of its class (window grids on buildings, lane marks on the road, lamps in traffic lights...)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .cityscapes_scene import CS_SPLITS, CsObject, CsScene
from .common import STREAM_CITYSCAPES, STREAM_RENDER, rng_stream, smooth_noise, to_uint8

# Base colours (RGB) of a label or part, one picked per object and jittered.
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


@dataclass
class _Canvas:
    """The photo being painted and what every texture may use."""
    rng: np.random.Generator
    scene: CsScene
    img: np.ndarray    # (H, W, 3) float, the objects painted so far
    xs: np.ndarray     # (H, W) float32 column / row of every pixel
    ys: np.ndarray
    fine: np.ndarray   # (H, W, 1) shared high-frequency grain, scaled per class

    def pick(self, name: str, jitter: float = 12) -> np.ndarray:
        """A jittered colour (3,) of palette ``name``."""
        pal = _CS_PALETTES[name]
        colour = np.array(pal[int(self.rng.integers(len(pal)))], np.float32)
        return colour + self.rng.uniform(-jitter, jitter, 3)

    def noise(self, cell: float, amp: float, ch: int = 1) -> np.ndarray:
        """Value noise (H, W, ch) of amplitude ``amp``."""
        return amp * smooth_noise(self.rng, self.scene.height, self.scene.width, cell, ch)


@dataclass
class _Box:
    """An object's pixel box: corner (x0, y0) and the (H, W) coordinates u, v running 0..1
    across / down it."""
    x0: np.integer
    y0: np.integer
    u: np.ndarray
    v: np.ndarray


Texture = Callable[[_Canvas, _Box, str], np.ndarray]


def _sky(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    top, bottom = ((np.array([188, 192, 198.]), np.array([228, 230, 232.]))
                   if c.scene.overcast else
                   (np.array([80, 130, 200.]), np.array([196, 214, 232.])))
    g = np.clip(c.ys / max(1.0, c.scene.horizon), 0, 1)[..., None]
    return top * (1 - g) + bottom * g + c.noise(20, 10) * np.array([1, 1, 0.6])


def _building(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    base = c.pick('building')
    cw, ch = float(c.rng.uniform(5, 9)), float(c.rng.uniform(5, 9))
    win = ((np.mod(c.xs - b.x0, cw) > cw * 0.45) & (np.mod(c.ys - b.y0, ch) > ch * 0.4)
           & (b.v > 0.05))[..., None]
    glass = np.array([55, 62, 78.]) + c.rng.uniform(-10, 10, 3)
    return np.where(win, glass + 18 * c.fine, base + c.noise(10, 8) + 5 * c.fine)


def _vegetation(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    base = np.array([58, 108, 40.]) + c.rng.uniform(-15, 15, 3)
    leaf = c.noise(2.2, 1.0)
    return base * (1 + 0.35 * leaf) + 10 * c.fine


def _terrain(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    base = np.array([140, 150, 82.]) + c.rng.uniform(-12, 12, 3)
    return base + c.noise(6, 10) + 9 * c.fine


def _flat(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    """Sidewalk (paving slabs), parking, static clutter."""
    base = ({'sidewalk': np.array([168, 156, 158.]), 'parking': np.array([118, 114, 110.]),
             'static': np.array([96, 78, 60.])}[lab] + c.rng.uniform(-10, 10, 3))
    grid = ((np.mod(c.xs, 5) < 0.6) | (np.mod(c.ys, 4) < 0.6))[..., None] & (lab == 'sidewalk')
    return base - 25 * grid + 5 * c.fine


def _road(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    """Asphalt with dashed lane marks in perspective."""
    scene = c.scene
    yh, xv = scene.horizon, scene.vanish_x
    base = np.array([84, 84, 90.]) + c.rng.uniform(-8, 8, 3)
    tex = base + c.noise(8, 5) + 6 * c.fine
    tmap = np.clip((c.ys - yh) / (scene.height - yh), 1e-3, None)
    marks = np.zeros((scene.height, scene.width), dtype=bool)
    for bm in scene.lane_marks:
        xm = xv + (bm - xv) * tmap
        half = np.maximum(0.35, 0.08 * scene.ppm * tmap)
        dash = np.mod(6.0 / tmap, 9.0) < 4.5   # 3 m dashes in perspective
        marks |= (np.abs(c.xs - xm) < half) & dash & (c.ys > yh + 1)
    return np.where(marks[..., None], np.array([215, 215, 210.]), tex)


def _wall_or_pole(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    base = (np.array([150, 146, 136.]) if lab == 'wall' else np.array([96, 96, 102.]))
    base = base + c.rng.uniform(-12, 12, 3)
    stripes = (np.mod(c.ys, 3) < 0.7)[..., None] if lab == 'wall' else (b.u < 0.35)[..., None]
    return base + np.where(stripes, -18.0, 8.0) + 4 * c.fine


def _fence(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    """A see-through lattice."""
    lattice = ((np.mod(c.xs + c.ys, 4) < 1) | (np.mod(c.xs - c.ys, 4) < 1))[..., None]
    metal = np.array([105, 108, 104.]) + c.rng.uniform(-10, 10, 3)
    return np.where(lattice, metal, 0.45 * c.img + 0.55 * (metal + 40))


def _traffic_light(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    tex = np.array([38, 40, 34.]) + 3 * c.fine
    lamp = [(232, 40, 30), (240, 170, 20), (40, 200, 90)][int(c.rng.integers(3))]
    k = int(c.rng.integers(3))
    on = ((b.v * 3 >= k) & (b.v * 3 < k + 1) & (np.abs(b.u - 0.5) < 0.3))[..., None]
    return np.where(on, np.array(lamp, np.float32), tex)


def _traffic_sign(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    col = [(30, 80, 180), (210, 30, 30), (232, 192, 24)][int(c.rng.integers(3))]
    inner = ((np.abs(b.u - 0.5) < 0.22) & (np.abs(b.v - 0.55) < 0.22))[..., None]
    return np.where(inner, np.array([238, 238, 238.]), np.array(col, np.float32))


def _person(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    """Head (a white helmet on riders), clothes, legs."""
    clothes, legs = c.pick('clothes', 15), c.pick('clothes', 10) * 0.6
    skin = c.pick('skin', 8)
    head = np.array([230, 230, 230.]) if lab == 'rider' else skin
    return np.where((b.v < 0.15)[..., None], head,
                    np.where((b.v < 0.6)[..., None], clothes, legs)) + 4 * c.fine


def _vehicle(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    """Car / truck / bus / tram body with windows and wheels."""
    u, v = b.u, b.v
    body = c.pick(lab)
    glass = np.array([52, 60, 74.]) + c.rng.uniform(-8, 8, 3)
    if lab == 'car':
        window = (v > 0.08) & (v < 0.42) & (u > 0.12) & (u < 0.88)
    elif lab == 'truck':
        window = (v > 0.25) & (v < 0.45) & ((u < 0.15) | (u > 0.85))
    elif lab == 'bus':
        window = (v > 0.14) & (v < 0.45) & (np.mod(c.xs - b.x0, 7) > 1)
    else:   # tram: tall windows, wide pillars, a contrasting stripe under them
        window = (v > 0.22) & (v < 0.55) & (np.mod(c.xs - b.x0, 12) > 4)
        body = np.where(((v > 0.66) & (v < 0.74))[..., None],
                        np.array([250, 250, 250.]) - body * 0.6, body)
    wheel = (v > 0.86) & ((u < 0.28) & (u > 0.06) | (u > 0.72) & (u < 0.94))
    shade = 1.0 - 0.25 * v
    tex = np.where(window[..., None], glass + 6 * c.fine, body * shade[..., None] + 4 * c.fine)
    return np.where(wheel[..., None], np.array([24, 24, 26.]), tex)


def _two_wheeler(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    """Dark frame; a bicycle's wheels are partly see-through."""
    dark = np.array([36, 36, 40.]) if lab == 'bicycle' else np.array([52, 52, 58.])
    rim = (b.v > 0.45) & ((b.u < 0.38) | (b.u > 0.62))
    see_through = rim & (np.abs(np.mod(b.u * 8, 2) - 1) < 0.6) & (lab == 'bicycle')
    return np.where(see_through[..., None], 0.5 * c.img + 0.5 * dark,
                    dark + 20 * (b.v < 0.3)[..., None])


def _ego_vehicle(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    return np.array([30, 30, 34.]) + 25 * (1 - b.v)[..., None] * np.array([1, 1, 1.1])


def _unknown(c: _Canvas, b: _Box, lab: str) -> np.ndarray:
    return np.full((c.scene.height, c.scene.width, 3), 128.0, np.float32)


_TEXTURES: dict[str, Texture] = {
    'sky': _sky, 'building': _building, 'vegetation': _vegetation, 'terrain': _terrain,
    'sidewalk': _flat, 'parking': _flat, 'static': _flat, 'road': _road,
    'wall': _wall_or_pole, 'pole': _wall_or_pole, 'fence': _fence,
    'traffic light': _traffic_light, 'traffic sign': _traffic_sign,
    'person': _person, 'rider': _person,
    'car': _vehicle, 'truck': _vehicle, 'bus': _vehicle, 'train': _vehicle,
    'motorcycle': _two_wheeler, 'bicycle': _two_wheeler, 'ego vehicle': _ego_vehicle,
}


def _object_mask(obj: CsObject, width: int, height: int) -> np.ndarray:
    """Boolean (H, W) mask of the polygon, filled as the label images are."""
    canvas = Image.new('L', (width, height), 0)
    ImageDraw.Draw(canvas).polygon(obj.polygon, fill=1)
    return np.asarray(canvas, dtype=bool)


def _box(c: _Canvas, m: np.ndarray) -> _Box:
    rows, cols = np.nonzero(m)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    return _Box(x0, y0, (c.xs - x0) / max(1, x1 - x0), (c.ys - y0) / max(1, y1 - y0))


def render_cityscapes(seed: int, split: str, city: int, index: int, scene: CsScene,
                      objects: Sequence[CsObject]) -> np.ndarray:
    """RGB uint8 (H, W, 3) photo of a scene: each polygon painted with its class's texture."""
    rng = rng_stream(seed, STREAM_CITYSCAPES, CS_SPLITS[split][0], city, index, STREAM_RENDER)
    W, H = scene.width, scene.height
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    c = _Canvas(rng, scene, np.zeros((H, W, 3), dtype=np.float32), xs, ys,
                smooth_noise(rng, H, W, 1.6, 1))
    for obj in objects:
        m = _object_mask(obj, W, H)
        if not m.any():
            continue
        tex = _TEXTURES.get(obj.label, _unknown)(c, _box(c, m), obj.label)
        c.img = np.where(m[..., None], tex, c.img)
    img = c.img + rng.normal(0.0, 1.5, size=c.img.shape).astype(np.float32)
    return to_uint8(img)
