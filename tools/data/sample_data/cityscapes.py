"""The Cityscapes sample: street scenes in perspective (sky, buildings, vegetation, terrain,
sidewalk, road, walls, fences, poles with lights and signs, persons, riders on bicycles and
motorcycles, cars, trucks, buses, trams, an ego-vehicle strip of ignore pixels). Each scene is a
list of labelled polygons in drawing order; the label images are rasterised from exactly those
polygons the way cityscapesscripts' ``json2labelImg`` / ``json2instanceImg`` do, using
``cityscapesscripts.helpers.labels`` for the id / trainId / colour mapping."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .cityscapes_render import render_cityscapes
from .cityscapes_scene import CS_FRAME, CS_SPLITS, CsObject, cityscapes_scene, finish_objects
from .common import DEFAULT_SEED


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


def cityscapes_items(limit: int | None = None) -> Iterator[tuple[str, int, str, int, str]]:
    """(split, city index, city, image index, file stem) of every Cityscapes sample image, or of
    the first ``limit`` of each city."""
    for split, (_, cities) in CS_SPLITS.items():
        for c, (city, n) in enumerate(cities):
            for i in range(n if limit is None else min(limit, n)):
                yield split, c, city, i, f'{city}_{i:06d}_{CS_FRAME:06d}'


def _write_gt(gt_dir: Path, stem: str, objects: Sequence[CsObject], width: int,
              height: int) -> None:
    """The four label PNGs and the polygons json of one image."""
    for kind, im in cityscapes_label_images(objects, width, height).items():
        if kind == 'instanceIds':   # 16-bit grey PNG, as in Cityscapes
            im = Image.fromarray(np.asarray(im).astype(np.uint16))
        im.save(gt_dir / f'{stem}_gtFine_{kind}.png', optimize=True)
    polygons = {'imgHeight': height, 'imgWidth': width,
                'objects': [{'label': o.label, 'polygon': [list(p) for p in o.polygon]}
                            for o in objects]}
    (gt_dir / f'{stem}_gtFine_polygons.json').write_text(
        json.dumps(polygons, separators=(',', ':')) + '\n')


def make_cityscapes(out: Path, seed: int = DEFAULT_SEED, limit: int | None = None) -> None:
    """Write the leftImg8bit / gtFine trees of the Cityscapes sample under ``out``."""
    for split, c, city, i, stem in cityscapes_items(limit):
        scene = cityscapes_scene(seed, split, c, i)
        objects = finish_objects(scene)
        img_dir = out / 'leftImg8bit' / split / city
        gt_dir = out / 'gtFine' / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        photo = render_cityscapes(seed, split, c, i, scene, objects)
        Image.fromarray(photo).save(img_dir / f'{stem}_leftImg8bit.png', optimize=True)
        _write_gt(gt_dir, stem, objects, scene.width, scene.height)
