"""Cheap start-up checks of a config's datasets: the annotation problems that otherwise show up as
``loss_bbox 0.0000``, a COCO mAP of -1 or "need at least one array to concatenate".

Only COCO-format detection / instance datasets (mmdet's ``CocoDataset`` and subclasses) are
checked: the annotation file is read once with ``json`` (no image is opened; each listed image's
file is looked up on disk). The rules are mmdet 3.x's ``CocoDataset.parse_data_info`` /
``filter_data``: an annotation counts when its category is one of the config's classes, its box
overlaps the image and has width and height >= 1 and positive ``area``; with
``filter_cfg.filter_empty_gt`` an image without such an annotation is dropped from training.
"""
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config

__all__ = ['DatasetReport', 'check_coco_file', 'check_datasets']

#: problems listed with at most this many annotation / image ids
SHOW = 5


@dataclass
class DatasetReport:
    """What :func:`check_coco_file` found in one annotation file."""
    where: str
    ann_file: str
    num_images: int = 0
    num_annotations: int = 0
    #: problem -> ids (annotation ids, or image ids for image problems)
    problems: Dict[str, List[int]] = field(default_factory=dict)
    #: images without one valid annotation (dropped from training by ``filter_empty_gt``)
    empty_images: List[int] = field(default_factory=list)
    #: annotations of categories that are not among the config's classes (ignored, not an error)
    other_classes: int = 0

    def add(self, problem: str, ident: int) -> None:
        self.problems.setdefault(problem, []).append(ident)

    def lines(self) -> List[str]:
        out = [f'{self.where}: {self.ann_file}: {self.num_images} images, '
               f'{self.num_annotations} annotations']
        for problem, ids in self.problems.items():
            more = f' ... ({len(ids) - SHOW} more)' if len(ids) > SHOW else ''
            out.append(f'  {len(ids)} {problem}: ids {ids[:SHOW]}{more}')
        if self.other_classes:
            out.append(f'  {self.other_classes} annotations of categories not in the config\'s '
                       'classes (ignored)')
        if self.empty_images:
            out.append(f'  {len(self.empty_images)} images have no valid annotation')
        return out


def _coco_datasets(cfg: Config, keys: Sequence[str]) -> Iterator[Tuple[str, dict]]:
    from mmattn.utils.runner import _datasets
    for key in keys:
        loader = cfg.get(key)
        if isinstance(loader, dict) and isinstance(loader.get('dataset'), dict):
            for where, ds in _datasets(loader['dataset'], f'{key}.dataset'):
                if _is_coco(ds.get('type')) and ds.get('ann_file'):
                    yield where, ds


def _is_coco(dataset_type) -> bool:
    if not isinstance(dataset_type, str):
        return False
    try:
        from mmdet.datasets import CocoDataset
        from mmdet.registry import DATASETS
        # 'mmattn.PIDrayDataset' resolves through the scope; 'mmdet.CocoDataset' too
        cls = DATASETS.get(dataset_type) or DATASETS.get(dataset_type.split('.')[-1])
    except ImportError:
        return False
    return isinstance(cls, type) and issubclass(cls, CocoDataset)


def check_coco_file(ann_file: str, img_dir: Optional[str], classes: Optional[Sequence[str]],
                    where: str = 'dataset') -> DatasetReport:
    """Check one COCO annotation file against the config's ``classes`` (None: every category);
    ``img_dir`` is where the images' ``file_name`` s are looked up (None: not checked)."""
    try:
        with open(ann_file) as f:
            coco = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f'{where}.ann_file: {ann_file} is not a readable COCO json: {e}') from e
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            raise ValueError(f'{where}.ann_file: {ann_file} has no {key!r} list')
    report = DatasetReport(where, ann_file, len(coco['images']), len(coco['annotations']))
    names = {c['id']: c.get('name') for c in coco['categories']}
    wanted = set(names) if classes is None else {i for i, n in names.items() if n in classes}
    images = {img['id']: img for img in coco['images']}
    valid_per_image = dict.fromkeys(images, 0)
    for ann in coco['annotations']:
        aid, img = ann.get('id'), images.get(ann.get('image_id'))
        if img is None:
            report.add('annotations of an image that is not listed', aid)
            continue
        if ann.get('category_id') not in names:
            report.add('annotations with an unknown category_id', aid)
            continue
        if ann['category_id'] not in wanted:
            report.other_classes += 1
            continue
        x, y, w, h = ann.get('bbox', (0, 0, 0, 0))
        if w < 1 or h < 1 or ann.get('area', w * h) <= 0:
            report.add('zero-size boxes (width or height < 1, or area <= 0)', aid)
            continue
        inter_w = min(x + w, img['width']) - max(x, 0)
        inter_h = min(y + h, img['height']) - max(y, 0)
        if inter_w <= 0 or inter_h <= 0:
            report.add('boxes outside their image', aid)
            continue
        if not ann.get('iscrowd', 0) and not ann.get('ignore', False):
            valid_per_image[img['id']] += 1
    if img_dir is not None:
        for img in coco['images']:
            if not osp.isfile(osp.join(img_dir, img['file_name'])):
                report.add(f'images listed but missing in {img_dir}', img['id'])
    report.empty_images = [i for i, n in valid_per_image.items() if n == 0]
    return report


def check_datasets(cfg: Config, keys: Sequence[str] = ('train_dataloader', 'val_dataloader',
                                                      'test_dataloader'),
                   logger=None) -> List[DatasetReport]:
    """Check every COCO-format dataset of ``keys``; log a warning for each problem found.

    Raises ``ValueError`` when a training dataset would be empty after mmdet's filtering (every
    image without a valid annotation), naming the file and why; warns when an evaluation dataset
    has no valid annotation (its COCO metrics would be -1).
    """
    import logging
    from mmengine.logging import print_log
    reports = []
    for where, ds in _coco_datasets(cfg, keys):
        from mmattn.utils.runner import dataset_files
        root, ann = dataset_files(ds)
        if ann is None or '://' in ann or not osp.isfile(ann):
            continue  # check_data_paths names missing files
        prefix = (ds.get('data_prefix') or {}).get('img')
        img_dir = osp.join(root or '', prefix) if prefix is not None else None
        classes = (ds.get('metainfo') or {}).get('classes')
        report = check_coco_file(ann, img_dir, classes, where)
        reports.append(report)
        valid = report.num_images - len(report.empty_images)
        if report.problems or (valid == 0 and report.num_images):
            print_log('\n'.join(report.lines()), logger=logger or 'current',
                      level=logging.WARNING)
        filtering = (ds.get('filter_cfg') or {}).get('filter_empty_gt', False)
        if where.startswith('train_dataloader') and filtering and valid == 0:
            raise ValueError(
                f'{where}: every image of {ann} would be filtered out ({report.num_images} had '
                f'no valid annotation of the classes {list(classes) if classes else "in it"}): '
                + '; '.join(report.lines()[1:]))
        if not where.startswith('train_dataloader') and valid == 0 and report.num_images:
            print_log(f'{where}: {ann} has no valid annotation of the config\'s classes: its '
                      'COCO metrics will be -1', logger=logger or 'current', level=logging.WARNING)
    return reports
