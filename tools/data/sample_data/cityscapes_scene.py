"""Layout of the Cityscapes sample's street scenes: labelled polygons in drawing order.

A scene is seen in perspective from a car on the road: sky, a distant band at the horizon, facades
(buildings or tree masses) and ground strips (terrain, sidewalk, parking) on both sides, low walls
and fences, the road; then the 'things' from far to near (poles with lights and signs, trees,
pedestrians, parked bicycles, static clutter, cars in lanes, crossing cars / trucks / buses / trams,
riders on bicycles and motorcycles); last the ego-vehicle's bonnet. Every random draw comes from one
stream per image, in that order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .common import (STREAM_CITYSCAPES, STREAM_LAYOUT, Point, Polygon, polygon_area, rect,
                     regular_polygon, rng_stream)

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
    polygon: Polygon      # float while laid out; integer after ``finish_objects``
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


@dataclass
class Street:
    """The scene's random stream and ground geometry. A ground line is named by its x ``b`` at the
    bottom row; all ground lines meet at the vanishing point (vanish_x, horizon)."""
    rng: np.random.Generator
    horizon: float    # row of the horizon
    vanish_x: float   # column of the vanishing point
    road_l: float     # bottom-row x of the road's edges
    road_r: float
    road_m: float     # road width in metres

    width, height = CS_SIZE

    @property
    def depth(self) -> float:
        return self.height - self.horizon

    @property
    def ppm(self) -> float:
        """Pixels per metre at the bottom row."""
        return (self.road_r - self.road_l) / self.road_m

    def lane_marks(self) -> list[float]:
        n_lanes = 2 if self.road_m < 9.5 else 3
        return [self.road_l + (self.road_r - self.road_l) * k / n_lanes for k in range(1, n_lanes)]

    def t_of(self, y: float) -> float:
        """0 at the horizon, 1 at the bottom row."""
        return (y - self.horizon) / self.depth

    def ray_x(self, b: float, y: float) -> float:
        """x of the ground line through the vanishing point and (b, H) at row y."""
        return self.vanish_x + (b - self.vanish_x) * self.t_of(y)

    def ray_y(self, b: float, x: float) -> float:
        """Row of that line at column x."""
        return self.horizon + self.depth * (x - self.vanish_x) / (b - self.vanish_x)

    def scale(self, y: float) -> float:
        """Pixels per metre at row y."""
        return self.ppm * self.t_of(y)

    def ground_point(self, b0: float, b1: float, t: float) -> tuple[float, float]:
        """A point on the ground at depth t between the lines through b0 and b1."""
        y = self.horizon + self.depth * t
        return self.ray_x(b0 + (b1 - b0) * float(self.rng.uniform()), y), y

    def depth_t(self, lo: float = 0.12, hi: float = 1.0) -> float:
        return float(self.rng.uniform(lo, hi)) ** 0.8

    def lane_point(self, t: float) -> tuple[float, float]:
        return self.ground_point(self.road_l + 0.9 * self.ppm, self.road_r - 0.9 * self.ppm, t)

    def facing(self) -> int:
        return int(self.rng.choice([-1, 1]))


@dataclass
class Side:
    """One side of the road; b_* are bottom-row x of the ground lines, from the road outwards."""
    sign: int         # -1 left, 1 right
    road_b: float     # road edge
    b_curb: float     # kerb (road edge + parking strip)
    b_out: float      # outer edge of the sidewalk
    b_base: float     # base line of the facades (sidewalk + terrain)
    parking: float    # strip widths in metres, 0 when absent
    terrain: float


# --------------------------------------------------------------------------- object silhouettes

def blob(cx: float, cy: float, rx: float, ry: float, rng: np.random.Generator,
         n: int = 14) -> Polygon:
    """An irregular ellipse with radii (rx, ry) around (cx, cy)."""
    radii = rng.uniform(0.75, 1.15, size=n)
    angles = [2 * math.pi * k / n for k in range(n)]
    return [(cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)) for a, r in zip(angles, radii)]


def person(label: str, x: float, y: float, s: float, hm: float) -> CsObject:
    """Standing silhouette ``hm`` metres tall with feet at (x, y); s = pixels per metre there."""
    h, w = hm * s, 0.55 * s
    head = regular_polygon(x, y - h + 0.12 * s, [0.12 * s] * 8, -math.pi / 2)
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


def side_vehicle(rng: np.random.Generator, label: str, x: float, y: float, s: float,
                 facing: int) -> CsObject:
    """Side view of a car / truck / bus / train (a tram) centred on x, wheels on row y."""
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


# ------------------------------------------------------------------------------ the background

def _street(rng: np.random.Generator) -> Street:
    W, H = CS_SIZE
    yh = H * float(rng.uniform(0.40, 0.50))
    xv = W * float(rng.uniform(0.38, 0.62))
    road_l = xv - W * float(rng.uniform(0.45, 0.85))
    road_r = xv + W * float(rng.uniform(0.45, 0.85))
    return Street(rng, yh, xv, road_l, road_r, float(rng.uniform(7.0, 12.0)))


def _sky_and_horizon(st: Street) -> list[CsObject]:
    """The sky, then a distant band of buildings or trees along the horizon."""
    W, yh = st.width, st.horizon
    band = str(st.rng.choice(['building', 'vegetation']))
    tops = [(x, yh - float(st.rng.uniform(1, 6))) for x in np.linspace(-1, W + 1, 9)]
    return [CsObject('sky', rect(-1, -1, W + 1, yh + 2)),
            CsObject(band, [(-1, yh + 2)] + tops + [(W + 1, yh + 2)])]


def _sides(st: Street) -> list[Side]:
    rng, out = st.rng, []
    for sign, road_b in ((-1, st.road_l), (1, st.road_r)):
        parking = float(rng.uniform(2.0, 2.6)) if rng.uniform() < 0.3 else 0.0
        sidewalk = float(rng.uniform(2.5, 5.0))
        terrain = float(rng.uniform(1.5, 4.0)) if rng.uniform() < 0.45 else 0.0
        b_curb = road_b + sign * parking * st.ppm
        b_out = b_curb + sign * sidewalk * st.ppm
        b_base = b_out + sign * terrain * st.ppm
        out.append(Side(sign, road_b, b_curb, b_out, b_base, parking, terrain))
    return out


def _facade(st: Street, b: float, xa: float, xb: float, trees: bool) -> CsObject:
    """A building (or, if ``trees``, a tree mass) from column xa to xb standing on line b."""
    ya, yb = st.ray_y(b, xa), st.ray_y(b, xb)
    if trees or st.rng.uniform() < 0.12:
        tops = [(xx, st.ray_y(b, xx) - float(st.rng.uniform(4, 12)) * st.ppm
                 * st.t_of(st.ray_y(b, xx))) for xx in np.linspace(xa, xb, 5)]
        return CsObject('vegetation', [(xa, ya + 2)] + tops + [(xb, yb + 2)])
    hm = float(st.rng.uniform(8, 30))
    return CsObject('building', [(xa, ya + 2), (xa, ya - hm * st.ppm * st.t_of(ya)),
                                 (xb, yb - hm * st.ppm * st.t_of(yb)), (xb, yb + 2)])


def _facades(st: Street, side: Side) -> list[CsObject]:
    """Facades from the image edge towards the vanishing point, on the side's base line."""
    park_side = st.rng.uniform() < 0.2
    xv, inward = st.vanish_x, -side.sign
    x = (0.0 if side.sign < 0 else float(st.width)) + side.sign * 2
    out = []
    while abs(x - xv) > 3:
        width = max(3.0, abs(xv - x) * float(st.rng.uniform(0.2, 0.5)))
        x_next = x + inward * width if abs(xv - x) - width > 3 else xv - inward * 2
        out.append(_facade(st, side.b_base, x, x_next, park_side))
        x = x_next
    return out


def _ground_strips(st: Street, side: Side) -> list[CsObject]:
    """Terrain, sidewalk, parking: triangles with their apex at the vanishing point."""
    v, bottom = (st.vanish_x, st.horizon), st.height + 2
    out = []
    if side.terrain:
        out.append(CsObject('terrain', [v, (side.b_base, bottom), (side.b_out, bottom)]))
    out.append(CsObject('sidewalk', [v, (side.b_out, bottom), (side.b_curb, bottom)]))
    if side.parking:
        out.append(CsObject('parking', [v, (side.b_curb, bottom), (side.road_b, bottom)]))
    return out


def _wall_and_fence(st: Street, side: Side) -> list[CsObject]:
    """Maybe a low wall, maybe a fence, along the outer line of the sidewalk."""
    rng, b, out = st.rng, side.b_out, []
    for label, prob, hm_rng in (('wall', 0.35, (0.8, 2.0)), ('fence', 0.35, (1.0, 2.2))):
        if rng.uniform() < prob:
            ya = st.horizon + st.depth * float(rng.uniform(0.05, 0.5))
            yb = min(st.height + 20.0, ya + st.depth * float(rng.uniform(0.2, 0.8)))
            xa, xb = st.ray_x(b, ya), st.ray_x(b, yb)
            hm = float(rng.uniform(*hm_rng))
            out.append(CsObject(label, [(xa, ya), (xa, ya - hm * st.ppm * st.t_of(ya)),
                                        (xb, yb - hm * st.ppm * st.t_of(yb)), (xb, yb)]))
    return out


def _road(st: Street) -> CsObject:
    return CsObject('road', [(st.vanish_x, st.horizon), (st.road_l, st.height + 2),
                             (st.road_r, st.height + 2)])


# ------------------------------------------------------------------------- things on sidewalks

def _pole(st: Street, side: Side) -> list[CsObject]:
    """A pole near the kerb, maybe with a traffic light and / or a traffic sign."""
    rng, sign, ppm = st.rng, side.sign, st.ppm
    x, y = st.ground_point(side.b_curb + sign * 0.4 * ppm, side.b_curb + sign * 1.2 * ppm,
                           st.depth_t())
    s = st.scale(y)
    hm, wm = float(rng.uniform(3.5, 8.0)), float(rng.uniform(0.12, 0.25))
    wp = max(1.2, wm * s)
    out = [CsObject('pole', rect(x - wp / 2, y - hm * s, x + wp / 2, y + 0.5), y)]
    if rng.uniform() < 0.45:
        lw, lh = max(2.0, 0.35 * s), max(4.0, 0.95 * s)
        top = y - min(hm, 4.5) * s
        out.append(CsObject('traffic light', rect(x - lw / 2, top, x + lw / 2, top + lh), y + 0.01))
    if rng.uniform() < 0.55:
        r = max(1.6, 0.35 * s)
        cy = y - float(rng.uniform(2.2, 3.0)) * s
        kind = int(rng.integers(3))
        poly = (regular_polygon(x, cy, [r] * 12, 0) if kind == 0 else
                regular_polygon(x, cy, [r * 1.2] * 3, -math.pi / 2) if kind == 1 else
                rect(x - r, cy - r, x + r, cy + r))
        out.append(CsObject('traffic sign', poly, y + 0.02))
    return out


def _tree(st: Street, side: Side) -> list[CsObject]:
    """A trunk and a crown near the outer edge of the sidewalk."""
    rng, sign, ppm = st.rng, side.sign, st.ppm
    x, y = st.ground_point(side.b_out - sign * 0.3 * ppm, side.b_out - sign * 1.5 * ppm,
                           st.depth_t(0.2))
    s = st.scale(y)
    tw, th = max(1.2, 0.3 * s), float(rng.uniform(2.5, 4)) * s
    trunk = CsObject('vegetation', rect(x - tw / 2, y - th - 0.5 * s, x + tw / 2, y + 0.5), y)
    rx = float(rng.uniform(1.5, 3.0)) * s
    crown = blob(x, y - th - 0.8 * rx, rx, rx * float(rng.uniform(0.8, 1.2)), rng)
    return [trunk, CsObject('vegetation', crown, y)]


def _sidewalk_things(st: Street, side: Side) -> list[CsObject]:
    """Poles, trees, pedestrians, maybe a parked bicycle and static clutter (bins, benches)."""
    rng, out = st.rng, []
    for _ in range(int(rng.integers(1, 4))):
        out += _pole(st, side)
    for _ in range(int(rng.integers(0, 3))):
        out += _tree(st, side)
    for _ in range(int(rng.integers(0, 4))):
        x, y = st.ground_point(side.b_curb, side.b_out, st.depth_t())
        out.append(person('person', x, y, st.scale(y), float(rng.uniform(1.55, 1.95))))
    if rng.uniform() < 0.35:
        x, y = st.ground_point(side.b_curb, side.b_out, st.depth_t())
        out.append(two_wheeler('bicycle', x, y, st.scale(y), 1.7, st.facing()))
    if rng.uniform() < 0.35:
        x, y = st.ground_point(side.b_curb, side.b_out, st.depth_t())
        s = st.scale(y)
        out.append(CsObject('static', rect(x - 0.4 * s, y - 1.0 * s, x + 0.4 * s, y), y))
    return out


# ------------------------------------------------------------------------------ road traffic

def _lane_cars(st: Street) -> list[CsObject]:
    """1-4 cars in the lanes, seen from behind."""
    out = []
    for _ in range(int(st.rng.integers(1, 5))):
        x, y = st.lane_point(st.depth_t())
        s = st.scale(y)
        w, h = float(st.rng.uniform(1.7, 1.95)) * s, float(st.rng.uniform(1.35, 1.6)) * s
        out.append(CsObject('car', [(x - w / 2, y), (x - w / 2, y - 0.55 * h),
                                    (x - 0.38 * w, y - h), (x + 0.38 * w, y - h),
                                    (x + w / 2, y - 0.55 * h), (x + w / 2, y)], y))
    return out


def _crossing_vehicles(st: Street, index: int) -> list[CsObject]:
    """Buses, trucks, trams (the image index guarantees each class in every split) and cars
    crossing, seen from the side."""
    rng = st.rng
    big = []
    if index % 3 == 0 or rng.uniform() < 0.25:
        big.append('bus')
    if index % 3 == 1 or rng.uniform() < 0.25:
        big.append('truck')
    if index % 4 == 2:
        big.append('train')
    out = []
    for label in big + ['car'] * int(rng.integers(0, 3)):
        x, y = st.lane_point(st.depth_t(0.1, 0.4))
        out.append(side_vehicle(rng, label, x, y, st.scale(y), st.facing()))
    return out


def _riders(st: Street, index: int) -> list[CsObject]:
    """Riders on bicycles or motorcycles (a motorcycle in every odd image): bike, then rider."""
    rng, out = st.rng, []
    for k in range(int(rng.integers(0, 3)) + (index % 2)):
        label = 'motorcycle' if (k == 0 and index % 2) or rng.uniform() < 0.3 else 'bicycle'
        x, y = st.lane_point(st.depth_t(0.2))
        s = st.scale(y)
        facing = st.facing()
        bike = two_wheeler(label, x, y, s, 1.7 if label == 'bicycle' else 2.1, facing)
        rider = person('rider', x - facing * 0.1 * s, y - 0.55 * s, s, 1.25)
        rider.base_y = bike.base_y = y
        out += [bike, rider]
    return out


def _crossing_pedestrians(st: Street) -> list[CsObject]:
    out = []
    for _ in range(int(st.rng.integers(0, 3))):
        x, y = st.lane_point(st.depth_t())
        out.append(person('person', x, y, st.scale(y), float(st.rng.uniform(1.55, 1.95))))
    return out


def _ego_vehicle(st: Street) -> CsObject:
    """The ego vehicle's bonnet: ignore pixels along the bottom."""
    W, H = st.width, st.height
    e0, e1 = H * float(st.rng.uniform(0.05, 0.09)), H * float(st.rng.uniform(0.09, 0.14))
    hood = [(xx, H - (e0 + (e1 - e0) * math.cos(math.pi * (xx / W - 0.5)) ** 2))
            for xx in np.linspace(-1, W + 1, 11)]
    return CsObject('ego vehicle', [(-1, H + 1)] + hood + [(W + 1, H + 1)])


# ------------------------------------------------------------------------------------ the scene

def cityscapes_scene(seed: int, split: str, city: int, index: int) -> CsScene:
    """The labelled polygons (in drawing order) of one Cityscapes sample street scene."""
    rng = rng_stream(seed, STREAM_CITYSCAPES, CS_SPLITS[split][0], city, index, STREAM_LAYOUT)
    st = _street(rng)
    objs = _sky_and_horizon(st)
    sides = _sides(st)
    for side in sides:
        objs += _facades(st, side)
        objs += _ground_strips(st, side)
        objs += _wall_and_fence(st, side)
    objs.append(_road(st))
    things: list[CsObject] = []
    for side in sides:
        things += _sidewalk_things(st, side)
    things += _lane_cars(st)
    things += _crossing_vehicles(st, index)
    things += _riders(st, index)
    things += _crossing_pedestrians(st)
    objs += sorted(things, key=lambda o: o.base_y)   # stable: a rider stays in front of its bike
    objs.append(_ego_vehicle(st))
    return CsScene(st.width, st.height, st.horizon, st.vanish_x, st.ppm, st.lane_marks(),
                   bool(rng.uniform() < 0.35), objs)


# ------------------------------------------------------------------------------ final polygons

def _clip_half_plane(pts: Polygon, inside: Callable[[Point], bool],
                     cross: Callable[[Point, Point], Point]) -> Polygon:
    """One Sutherland-Hodgman step: the part of ``pts`` where ``inside`` holds."""
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


def _at_x(x: float) -> Callable[[Point, Point], Point]:
    return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0]))


def _at_y(y: float) -> Callable[[Point, Point], Point]:
    return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y)


def clip_polygon(poly: Polygon, w: int, h: int) -> list[tuple[int, int]]:
    """Sutherland-Hodgman clip to [0, w-1] x [0, h-1], then round to integer vertices."""
    pts = list(poly)
    edges = ((lambda p: p[0] >= 0, _at_x(0.0)), (lambda p: p[0] <= w - 1, _at_x(w - 1)),
             (lambda p: p[1] >= 0, _at_y(0.0)), (lambda p: p[1] <= h - 1, _at_y(h - 1)))
    for inside, cross in edges:
        if not pts:
            break
        pts = _clip_half_plane(pts, inside, cross)
    out: list[tuple[int, int]] = []
    for x, y in pts:
        q = (int(math.floor(x + 0.5)), int(math.floor(y + 0.5)))
        if not out or out[-1] != q:
            out.append(q)
    while len(out) > 1 and out[0] == out[-1]:
        out.pop()
    return out


def finish_objects(scene: CsScene) -> list[CsObject]:
    """Clip and round the scene's polygons; drop the ones left empty."""
    out = []
    for obj in scene.objects:
        poly = clip_polygon(obj.polygon, scene.width, scene.height)
        if len(set(poly)) >= 3 and polygon_area(poly) > 0:
            out.append(CsObject(obj.label, poly, obj.base_y))
    return out
