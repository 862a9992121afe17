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
    data/pidray_sample/                       PIDray layout: X-ray-like scans, boxes + polygons
        annotations/xray_{train,test_easy,test_hard,test_hidden}.json   48 / 10 / 8 / 8 images
        train/xray_00000.png ...  easy/xray_easy00000.png ...  hard/ ...  hidden/ ...

The generators live in the ``sample_data`` package beside this script: ``sample_data/coco.py``
(shapes on cluttered backgrounds), ``sample_data/cityscapes*.py`` (street scenes in
perspective) and ``sample_data/pidray.py`` (translucent prohibited items in bags); their
docstrings describe the contents.

Usage (from the repository root)::

    .venv/bin/python tools/data/make_sample_data.py --out data

Every image depends only on (seed, dataset, split, index). ``--limit N`` renders only the first N
images of each COCO / PIDray split and of each Cityscapes city (the COCO and PIDray annotation
files are always written complete); the tests use it to check that the committed files are
reproduced.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

# The package sits beside this script, which is run by path (not installed).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from sample_data import DEFAULT_SEED, make_cityscapes, make_coco, make_pidray  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('data'), help='output root (data)')
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED)
    parser.add_argument('--limit', type=int, default=None,
                        help='render only the first N images of each COCO split / Cityscapes city')
    parser.add_argument('--only', choices=('coco', 'cityscapes', 'pidray'), default=None)
    args = parser.parse_args(argv)
    if args.only in (None, 'coco'):
        make_coco(args.out / 'coco_sample', args.seed, args.limit)
    if args.only in (None, 'cityscapes'):
        make_cityscapes(args.out / 'cityscapes_sample', args.seed, args.limit)
    if args.only in (None, 'pidray'):
        make_pidray(args.out / 'pidray_sample', args.seed, args.limit)


if __name__ == '__main__':
    main()
