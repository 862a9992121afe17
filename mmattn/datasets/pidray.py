"""PIDray (SDANet, ICCV 2021): X-ray baggage images of 12 prohibited items in COCO format, and the
evaluator that reports the three test subsets of one ``tools/test.py`` run.

Official layout (``data/pidray/``)::

    annotations/xray_train.json  xray_test_easy.json  xray_test_hard.json  xray_test_hidden.json
    train/  easy/  hard/  hidden/          (*.png)

:class:`PIDrayDataset` is mmdet's ``CocoDataset`` with PIDray's classes (official ``CLASSES`` order,
category ids 1..12) that refuses bad annotation files with the file and annotation named.
:class:`PIDrayEvaluator` evaluates a ``ConcatDataset`` of the easy / hard / hidden subsets: one
metric per subset (keys ``easy/coco/bbox_mAP`` ...), their unweighted mean (``overall/...``, the
paper's "overall": its published overall AP is the mean of the three subsets' in every row) and the
pooled COCO evaluation of all test images together (``pooled/...``).
"""
import copy
import os.path as osp
from collections import OrderedDict
from typing import List, Sequence, Union

from mmdet.datasets import CocoDataset
from mmdet.evaluation.evaluator import MultiDatasetsEvaluator
from mmengine.dist import broadcast_object_list, collect_results, is_main_process
from mmengine.evaluator.metric import _to_cpu
from mmengine.logging import print_log

from mmattn.registry import DATASETS, EVALUATOR

__all__ = ['PIDRAY_CLASSES', 'PIDrayDataset', 'PIDrayEvaluator', 'PIDrayAnnotationError']

#: official ``CLASSES`` order = category ids 1..12
PIDRAY_CLASSES = ('Baton', 'Pliers', 'Hammer', 'Powerbank', 'Scissors', 'Wrench', 'Gun', 'Bullet',
                  'Sprayer', 'HandCuffs', 'Knife', 'Lighter')
#: a box may leave its image by this much (rounding of exported coordinates), px
BOX_TOLERANCE = 1.0


class PIDrayAnnotationError(ValueError):
    """A PIDray annotation file that does not fit its images; names the file and the ids."""


@DATASETS.register_module()
class PIDrayDataset(CocoDataset):
    """PIDray in COCO format (``ann_file`` + ``data_prefix=dict(img='train/')`` etc.).

    Unlike ``CocoDataset``, an annotation of an unknown category, a box outside its image (beyond
    :data:`BOX_TOLERANCE`) or a listed image missing on disk is an error naming the annotation
    file, the annotation / image id and the image file.
    """

    METAINFO = {
        'classes': PIDRAY_CLASSES,
        'palette': [(220, 20, 60), (119, 11, 32), (0, 0, 142), (0, 0, 230), (106, 0, 228),
                    (0, 60, 100), (0, 80, 100), (0, 0, 70), (0, 0, 192), (250, 170, 30),
                    (100, 170, 30), (220, 220, 0)],
    }

    def parse_data_info(self, raw_data_info: dict) -> Union[dict, List[dict]]:
        """``CocoDataset.parse_data_info`` after checking the image file and its annotations."""
        info, anns = raw_data_info['raw_img_info'], raw_data_info['raw_ann_info']
        where = f'{self.ann_file}: image {info["img_id"]} ({info["file_name"]})'
        path = osp.join(self.data_prefix.get('img', ''), info['file_name'])
        if not osp.isfile(path):
            raise PIDrayAnnotationError(f'{where} is listed but missing on disk: {path}')
        w, h = info['width'], info['height']
        for ann in anns:
            if ann['category_id'] not in self.cat2label:
                raise PIDrayAnnotationError(
                    f'{where}: annotation {ann["id"]} has unknown category id '
                    f'{ann["category_id"]} (PIDray: ids {sorted(self.cat2label)} = '
                    f'{", ".join(self.metainfo["classes"])})')
            x, y, bw, bh = ann['bbox']
            if (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + bw > w + BOX_TOLERANCE
                    or y + bh > h + BOX_TOLERANCE):
                raise PIDrayAnnotationError(
                    f'{where}: annotation {ann["id"]} has box [x, y, w, h] = {ann["bbox"]} '
                    f'outside the {w}x{h} image')
        return super().parse_data_info(raw_data_info)


@EVALUATOR.register_module()
class PIDrayEvaluator(MultiDatasetsEvaluator):
    """Per-subset, mean-of-subsets and pooled COCO metrics of a ``ConcatDataset`` of subsets.

    Args:
        metrics: one ``CocoMetric`` config per subset, in the ``ConcatDataset``'s order, each with
            its subset's ``ann_file``; same metric settings in all.
        dataset_prefixes: subset names, used as key prefixes (``easy/coco/bbox_mAP``).
        pooled: also evaluate all subsets' images as one COCO set (image ids made unique).

    Keys: ``<subset>/coco/<name>``; ``overall/coco/<name>``: mean over the subsets of each value
    (the paper's overall; subsets where COCO reports -1, no ground truth of that kind, are left
    out); ``pooled/coco/<name>``: the pooled evaluation.
    """

    def __init__(self, metrics: Union[dict, Sequence], dataset_prefixes: Sequence[str] = (
            'easy', 'hard', 'hidden'), pooled: bool = True) -> None:
        super().__init__(metrics, list(dataset_prefixes))
        if len(self.metrics) != len(self.dataset_prefixes):
            raise ValueError(f'PIDrayEvaluator: {len(self.metrics)} metrics for subsets '
                             f'{list(dataset_prefixes)}: give one CocoMetric per subset')
        self.pooled = pooled

    def _pooled_metric(self, offsets: List[int]):
        """A copy of the first metric over the union of the subsets' ground truth."""
        from mmdet.datasets.api_wrappers import COCO
        merged = dict(images=[], annotations=[], categories=None)
        ann_id = 0
        for metric, offset in zip(self.metrics, offsets):
            data = metric._coco_api.dataset
            merged['categories'] = merged['categories'] or data['categories']
            merged['images'] += [dict(img, id=img['id'] + offset) for img in data['images']]
            for ann in data['annotations']:
                ann_id += 1
                merged['annotations'].append(dict(ann, id=ann_id,
                                                  image_id=ann['image_id'] + offset))
        coco = COCO()
        coco.dataset = merged
        coco.createIndex()
        pooled = copy.copy(self.metrics[0])
        pooled._coco_api, pooled.img_ids, pooled.cat_ids = coco, None, None
        pooled.results = []
        return pooled

    def evaluate(self, size: int) -> dict:
        """Per-subset metrics (as ``MultiDatasetsEvaluator``), then overall (mean) and pooled."""
        meta = self.dataset_meta[0] if isinstance(self.dataset_meta, Sequence) else \
            self.dataset_meta
        if not meta or 'cumulative_sizes' not in meta:
            raise ValueError('PIDrayEvaluator evaluates a ConcatDataset of the test subsets '
                             f'{self.dataset_prefixes} (configs/_base_/datasets/'
                             'pidray_instance.py); for one subset use CocoMetric')
        slices = self._get_cumulative_sizes()
        if len(slices) != len(self.dataset_prefixes):
            raise ValueError(f'PIDrayEvaluator: the test set has {len(slices)} subsets, prefixes '
                             f'are {self.dataset_prefixes}')
        results = OrderedDict()
        per_subset, pooled_inputs, offsets, offset = [], [], [], 0
        for prefix, start, end, metric in zip(self.dataset_prefixes, [0] + slices[:-1], slices,
                                              self.metrics):
            collected = collect_results(metric.results, size, metric.collect_device)
            metric.results.clear()
            if not is_main_process():
                continue
            part = _to_cpu(collected)[start:end]
            print_log(f'================ PIDray {prefix} ({end - start} images) ================',
                      logger='current')
            values = metric.compute_metrics(part)
            key = '/'.join(p for p in (prefix, metric.prefix) if p)
            results.update({f'{key}/{k}': v for k, v in values.items()})
            per_subset.append(values)
            offsets.append(offset)
            for gt, pred in part:
                pooled_inputs.append((dict(gt, img_id=gt['img_id'] + offset),
                                      dict(pred, img_id=pred['img_id'] + offset)))
            offset += max(metric._coco_api.get_img_ids(), default=0)
        if is_main_process():
            suffix = self.metrics[0].prefix
            for k in per_subset[0]:
                vals = [v.get(k) for v in per_subset]
                if all(isinstance(v, (int, float)) for v in vals):
                    # COCO's -1: no ground truth of that kind (e.g. large objects) in a subset
                    valid = [v for v in vals if v >= 0]
                    results['/'.join(p for p in ('overall', suffix, k) if p)] = round(
                        sum(valid) / len(valid), 4) if valid else -1.0
            if self.pooled:
                print_log(f'================ PIDray pooled ({len(pooled_inputs)} images) '
                          '================', logger='current')
                pooled = self._pooled_metric(offsets)
                for k, v in pooled.compute_metrics(pooled_inputs).items():
                    results['/'.join(p for p in ('pooled', suffix, k) if p)] = v
            print_log(self.summary(results), logger='current')
        out = [results] if is_main_process() else [None]
        broadcast_object_list(out)
        return out[0]

    def summary(self, results: dict) -> str:
        """The table of AP (IoU .50:.95) per subset, overall (mean) and pooled; '-' where COCO
        gave no number (no detections at all)."""
        suffix = self.metrics[0].prefix
        kinds = [k for k in getattr(self.metrics[0], 'metrics', ('bbox', 'segm'))
                 if k in ('bbox', 'segm')]
        rows = [*self.dataset_prefixes, 'overall', 'pooled']
        lines = ['PIDray AP (IoU .50:.95); overall = mean of the subsets (the paper\'s), pooled = '
                 'all test images as one set',
                 f'{"subset":<10}' + ''.join(f'{k:>8}' for k in kinds)]
        for row in rows:
            vals = [results.get('/'.join(p for p in (row, suffix, f'{k}_mAP') if p))
                    for k in kinds]
            lines.append(f'{row:<10}' + ''.join(
                f'{100 * v:8.1f}' if v is not None else f'{"-":>8}' for v in vals))
        return '\n'.join(lines)
