"""The bundled sample datasets under data/: reproduced by tools/data/make_sample_data.py and read by
the real mmdet / mmseg dataset classes, pycocotools and cityscapesscripts."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mmattn  # noqa: F401  (compatibility patches before mmdet / mmseg are imported)

ROOT = Path(__file__).resolve().parents[2]
COCO_ROOT = ROOT / 'data' / 'coco_sample'
CS_ROOT = ROOT / 'data' / 'cityscapes_sample'
N_REGEN = 2   # images re-rendered per COCO split and per Cityscapes city
COCO_SIZES = {'train': 240, 'val': 60}
CS_CITIES = {'train': {'aachen': 12, 'bochum': 12}, 'val': {'frankfurt': 8}}
CS_GT_KINDS = ('labelIds', 'labelTrainIds', 'instanceIds', 'color')


@pytest.fixture(scope='module')
def gen():
    """tools/data/make_sample_data.py as a module."""
    path = ROOT / 'tools' / 'data' / 'make_sample_data.py'
    spec = importlib.util.spec_from_file_location('make_sample_data', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def regenerated(gen, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('sample_data')
    gen.main(['--out', str(out), '--limit', str(N_REGEN)])
    return out


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def _coco_json(split: str) -> dict:
    return json.loads((COCO_ROOT / 'annotations' / f'instances_{split}2017.json').read_text())


# ------------------------------------------------------------------------------------ determinism

def test_coco_regenerates_identically(regenerated: Path):
    for split in COCO_SIZES:
        name = f'annotations/instances_{split}2017.json'
        assert (regenerated / 'coco_sample' / name).read_bytes() == (COCO_ROOT / name).read_bytes()
        images = _coco_json(split)['images'][:N_REGEN]
        made = sorted((regenerated / 'coco_sample' / f'{split}2017').iterdir())
        assert [p.name for p in made] == [im['file_name'] for im in images]
        for p in made:
            committed = COCO_ROOT / f'{split}2017' / p.name
            np.testing.assert_array_equal(_pixels(p), _pixels(committed), err_msg=str(p.name))


def test_cityscapes_regenerates_identically(regenerated: Path):
    made = sorted(p for p in (regenerated / 'cityscapes_sample').rglob('*') if p.is_file())
    n_cities = sum(len(c) for c in CS_CITIES.values())
    assert len(made) == N_REGEN * n_cities * (2 + len(CS_GT_KINDS))
    for p in made:
        committed = CS_ROOT / p.relative_to(regenerated / 'cityscapes_sample')
        if p.suffix == '.json':
            assert p.read_bytes() == committed.read_bytes(), committed
        else:
            a, b = _pixels(p), _pixels(committed)
            assert a.dtype == b.dtype and a.shape == b.shape, committed
            np.testing.assert_array_equal(a, b, err_msg=str(committed))


# ----------------------------------------------------------------------------------- COCO sample

def test_coco_layout_and_json_structure():
    for split, n in COCO_SIZES.items():
        coco = _coco_json(split)
        assert set(coco) == {'info', 'licenses', 'images', 'annotations', 'categories'}
        assert len(coco['images']) == n
        on_disk = sorted(p.name for p in (COCO_ROOT / f'{split}2017').glob('*.jpg'))
        assert on_disk == sorted(im['file_name'] for im in coco['images'])
        assert [c['name'] for c in coco['categories']] == [
            'circle', 'triangle', 'square', 'star', 'cross']
        cat_ids = {c['id'] for c in coco['categories']}
        images = {im['id']: im for im in coco['images']}
        ann_ids = [a['id'] for a in coco['annotations']]
        assert len(set(ann_ids)) == len(ann_ids)
        for im in coco['images']:
            with Image.open(COCO_ROOT / f'{split}2017' / im['file_name']) as pil:
                assert pil.size == (im['width'], im['height']) and pil.mode == 'RGB'
        for ann in coco['annotations']:
            im = images[ann['image_id']]
            assert ann['category_id'] in cat_ids and ann['iscrowd'] == 0
            (poly,) = ann['segmentation']
            xs, ys = poly[0::2], poly[1::2]
            x, y, w, h = ann['bbox']
            # the box is the tight bound of the polygon, inside the image
            assert [x, y, x + w, y + h] == pytest.approx([min(xs), min(ys), max(xs), max(ys)],
                                                         abs=0.011)
            assert 0 <= x and x + w <= im['width'] and 0 <= y and y + h <= im['height']
            shoelace = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i]
                                     for i in range(len(xs))))
            assert ann['area'] == pytest.approx(shoelace, abs=0.01)


def _shift_or(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] |= \
                mask[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
    return out


def test_coco_objects_are_where_their_polygons_are():
    """Inside each polygon the pixels have its class's vivid colour; outside the polygons (grown by
    one pixel for JPEG's colour bleed) no pixel has an object's colour: nothing is drawn that is
    not annotated, and the annotations are not off by a pixel."""
    from pycocotools.coco import COCO

    hues = {1: 0.0, 2: 0.62, 3: 0.33, 4: 0.14, 5: 0.84}
    for split in COCO_SIZES:
        coco = COCO(str(COCO_ROOT / 'annotations' / f'instances_{split}2017.json'))
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            with Image.open(COCO_ROOT / f'{split}2017' / info['file_name']) as pil:
                hsv = np.asarray(pil.convert('HSV')).astype(np.float32) / 255.0
            vivid = (hsv[..., 1] > 0.6) & (hsv[..., 2] > 0.5)
            union = np.zeros((info['height'], info['width']), dtype=bool)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
                mask = coco.annToMask(ann).astype(bool)
                union |= mask
                core = ~_shift_or(~mask, 1)   # one pixel in from the outline
                core = core if core.sum() >= 4 else mask
                dh = np.abs((hsv[..., 0][core] - hues[ann['category_id']] + 0.5) % 1.0 - 0.5)
                where = (info['file_name'], ann['id'])
                assert np.median(dh) < 0.05, (where, np.median(dh))
                assert vivid[core].mean() >= 0.9, (where, vivid[core].mean())
            stray = int(vivid[~_shift_or(union, 1)].sum())
            assert stray <= 5, (info['file_name'], stray)


@pytest.mark.parametrize('split', list(COCO_SIZES))
def test_coco_sample_loads_in_mmdet(split: str):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs

    coco = _coco_json(split)
    classes = tuple(c['name'] for c in coco['categories'])
    ds = CocoDataset(
        data_root=str(COCO_ROOT), ann_file=f'annotations/instances_{split}2017.json',
        data_prefix=dict(img=f'{split}2017/'), metainfo=dict(classes=classes),
        pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True),
                  PackDetInputs()])
    assert len(ds) == COCO_SIZES[split]
    n_instances = sum(len(ds.get_data_info(i)['instances']) for i in range(len(ds)))
    assert n_instances == len(coco['annotations'])
    anns: dict[int, list] = {}
    for ann in coco['annotations']:
        anns.setdefault(ann['image_id'], []).append(ann)
    for i in range(len(ds) if split == 'val' else 24):   # the whole pipeline on a part of train
        item = ds[i]
        sample = item['data_samples']
        gt = sample.gt_instances
        expected = anns.get(sample.img_id, [])
        assert len(gt) == len(expected)
        assert tuple(item['inputs'].shape[1:]) == sample.ori_shape
        want = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in expected)],
                        np.float32).reshape(-1, 4)
        np.testing.assert_allclose(gt.bboxes.tensor.numpy(), want, atol=1e-3)
        assert gt.labels.tolist() == [a['category_id'] - 1 for a in expected]
        for mask, a in zip(gt.masks.to_ndarray(), expected):
            xs, ys = a['segmentation'][0][0::2], a['segmentation'][0][1::2]
            perimeter = sum(math.dist((xs[k], ys[k]), (xs[k - 1], ys[k - 1]))
                            for k in range(len(xs)))
            assert abs(int(mask.sum()) - a['area']) <= 0.25 * perimeter, (sample.img_path, a)


def test_coco_eval_of_ground_truth_is_perfect():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    for split in COCO_SIZES:
        gt = COCO(str(COCO_ROOT / 'annotations' / f'instances_{split}2017.json'))
        dets = [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'],
                     segmentation=a['segmentation'], score=1.0)
                for a in gt.loadAnns(gt.getAnnIds())]
        for iou_type in ('bbox', 'segm'):
            E = COCOeval(gt, gt.loadRes(dets), iou_type)
            E.evaluate()
            E.accumulate()
            E.summarize()
            assert E.stats[0] == pytest.approx(1.0) and E.stats[1] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- Cityscapes sample

def _cs_stems(split: str) -> list[tuple[str, str]]:
    return [(city, p.name[:-len('_leftImg8bit.png')])
            for city in CS_CITIES[split]
            for p in sorted((CS_ROOT / 'leftImg8bit' / split / city).glob('*_leftImg8bit.png'))]


def test_cityscapes_layout():
    for split, cities in CS_CITIES.items():
        assert sorted(p.name for p in (CS_ROOT / 'leftImg8bit' / split).iterdir()) == sorted(cities)
        assert sorted(p.name for p in (CS_ROOT / 'gtFine' / split).iterdir()) == sorted(cities)
        stems = _cs_stems(split)
        assert len(stems) == sum(cities.values())
        for city, stem in stems:
            c, seq, frame = stem.split('_')
            assert c == city and len(seq) == 6 and len(frame) == 6
            img_path = CS_ROOT / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png'
            with Image.open(img_path) as im:
                assert im.mode == 'RGB' and im.size == (256, 128)
            gt_dir = CS_ROOT / 'gtFine' / split / city
            modes = {'labelIds': 'L', 'labelTrainIds': 'L', 'instanceIds': 'I;16',
                     'color': 'RGBA'}
            for kind, mode in modes.items():
                with Image.open(gt_dir / f'{stem}_gtFine_{kind}.png') as im:
                    assert im.mode == mode and im.size == (256, 128), (stem, kind, im.mode)
            poly = json.loads((gt_dir / f'{stem}_gtFine_polygons.json').read_text())
            assert (poly['imgWidth'], poly['imgHeight']) == (256, 128) and poly['objects']


def test_cityscapes_label_files_agree():
    """labelTrainIds, color and instanceIds are the labelIds mapped through cityscapesscripts'
    label table, and labelIds / instanceIds are what cityscapesscripts rasterises from the
    polygons json."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.helpers.labels import labels
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    to_train = np.full(256, 255, np.uint8)
    to_colour = np.zeros((256, 3), np.uint8)
    for lab in labels:
        if lab.id >= 0:
            to_train[lab.id] = lab.trainId if lab.trainId >= 0 else 255
            to_colour[lab.id] = lab.color
    for split in CS_CITIES:
        for city, stem in _cs_stems(split):
            gt = CS_ROOT / 'gtFine' / split / city / f'{stem}_gtFine_'
            ids = _pixels(Path(f'{gt}labelIds.png'))
            np.testing.assert_array_equal(_pixels(Path(f'{gt}labelTrainIds.png')), to_train[ids])
            colour = _pixels(Path(f'{gt}color.png'))
            np.testing.assert_array_equal(colour[..., :3], to_colour[ids])
            assert (colour[..., 3] == 255).all()
            inst = _pixels(Path(f'{gt}instanceIds.png')).astype(np.int64)
            np.testing.assert_array_equal(np.where(inst >= 1000, inst // 1000, inst), ids)
            ann = Annotation()
            ann.fromJsonFile(f'{gt}polygons.json')
            np.testing.assert_array_equal(np.asarray(createLabelImage(ann, 'ids')), ids)
            np.testing.assert_array_equal(np.asarray(createInstanceImage(ann, 'ids')), inst)


def _cs_dataset(split: str):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import CityscapesDataset
    from mmseg.datasets.transforms import LoadAnnotations, PackSegInputs

    return CityscapesDataset(
        data_root=str(CS_ROOT),
        data_prefix=dict(img_path=f'leftImg8bit/{split}', seg_map_path=f'gtFine/{split}'),
        img_suffix='_leftImg8bit.png', seg_map_suffix='_gtFine_labelTrainIds.png',
        pipeline=[LoadImageFromFile(), LoadAnnotations(), PackSegInputs()])


def test_cityscapes_sample_loads_in_mmseg():
    from cityscapesscripts.helpers.labels import trainId2label
    from mmseg.datasets import CityscapesDataset

    assert CityscapesDataset.METAINFO['classes'] == tuple(trainId2label[k].name for k in range(19))
    valid = set(range(19)) | {255}
    for split, cities in CS_CITIES.items():
        ds = _cs_dataset(split)
        assert len(ds) == sum(cities.values())
        seen: set[int] = set()
        for i in range(len(ds)):
            item = ds[i]
            seg = item['data_samples'].gt_sem_seg.data.numpy()
            assert seg.shape == (1, 128, 256) and tuple(item['inputs'].shape) == (3, 128, 256)
            values = set(np.unique(seg).tolist())
            assert values <= valid, values - valid
            assert 255 in values   # the ego-vehicle strip at least
            seen |= values
        assert seen == valid, sorted(valid - seen)   # every train id occurs in every split


def _trainid_predictions_as_label_ids(out: Path) -> tuple[list[str], list[str]]:
    """The val labelTrainIds, written as cityscapesscripts-style prediction files (label ids) by
    mmseg's CityscapesMetric converter; returns (predictions, ground-truth labelIds files)."""
    from mmseg.evaluation import CityscapesMetric

    out.mkdir()
    preds, gts = [], []
    for city, stem in _cs_stems('val'):
        gt = CS_ROOT / 'gtFine' / 'val' / city / f'{stem}_gtFine_'
        train_ids = _pixels(Path(f'{gt}labelTrainIds.png')).astype(np.int64)   # as predicted
        ids = CityscapesMetric._convert_to_label_id(train_ids)
        Image.fromarray(ids.astype(np.uint8)).save(out / f'{stem}.png')
        preds.append(str(out / f'{stem}.png'))
        gts.append(f'{gt}labelIds.png')
    return preds, gts


def test_cityscapes_eval_of_ground_truth_is_perfect(tmp_path: Path):
    """cityscapesscripts' pixel-level evaluation (which reads the labelIds files) scores the
    ground truth, passed through mmseg's trainId -> labelId conversion, 1.0."""
    import copy

    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as CSEval

    preds, gts = _trainid_predictions_as_label_ids(tmp_path / 'pred')
    args = copy.copy(CSEval.args)
    args.JSONOutput = False
    args.quiet = True
    res = CSEval.evaluateImgLists(preds, gts, args)
    assert res['averageScoreClasses'] == pytest.approx(1.0)
    assert res['averageScoreCategories'] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) or math.isnan(v) for v in res['classScores'].values())


def test_mmseg_cityscapes_metric_on_ground_truth(tmp_path: Path):
    from mmseg.evaluation import CityscapesMetric

    metric = CityscapesMetric(output_dir=str(tmp_path / 'pred'))
    ds = _cs_dataset('val')
    for i in range(len(ds)):
        sample = ds[i]['data_samples']
        metric.process({}, [dict(pred_sem_seg=dict(data=sample.gt_sem_seg.data),
                                 img_path=sample.img_path, seg_map_path=sample.seg_map_path)])
    scores = metric.compute_metrics(metric.results)
    assert scores == {'averageScoreCategories': pytest.approx(1.0),
                      'averageScoreInstCategories': pytest.approx(1.0)}
