"""Start-up dataset checks: bad COCO annotations are reported with their ids, an empty training
set is an error that says why, an evaluation set without valid annotations warns."""
import json
import logging
import os.path as osp
import shutil
import subprocess
import sys

import pytest
from mmengine.logging import MMLogger

from mmattn.datasets.check import check_coco_file, check_datasets
from mmattn.utils.runner import load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SAMPLE = osp.join(ROOT, 'data', 'coco_sample')
CONFIG = osp.join(ROOT, 'configs', 'sample', 'fcos_r18_fpn_sample-coco.py')
CLASSES = ('circle', 'triangle', 'square', 'star', 'cross')


def _coco(split='val'):
    with open(osp.join(SAMPLE, 'annotations', f'instances_{split}2017.json')) as f:
        return json.load(f)


def _write(tmp_path, coco, split='val') -> str:
    """A copy of the sample's layout (images linked) with ``coco`` as the annotation file."""
    root = tmp_path / 'coco'
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    for s in ('train2017', 'val2017'):
        if not (root / s).exists():
            (root / s).symlink_to(osp.join(SAMPLE, s))
    (root / 'annotations' / f'instances_{split}2017.json').write_text(json.dumps(coco))
    for other in ('train', 'val'):  # the sample's file for a split not written yet
        if not (root / 'annotations' / f'instances_{other}2017.json').exists():
            shutil.copy(osp.join(SAMPLE, 'annotations', f'instances_{other}2017.json'),
                        root / 'annotations' / f'instances_{other}2017.json')
    return str(root)


def test_sample_annotations_are_clean():
    for split in ('train', 'val'):
        report = check_coco_file(osp.join(SAMPLE, 'annotations', f'instances_{split}2017.json'),
                                 osp.join(SAMPLE, f'{split}2017'), CLASSES)
        assert not report.problems and not report.empty_images and not report.other_classes
        assert report.num_images in (240, 60)


def test_each_problem_is_reported_with_its_ids(tmp_path):
    coco = _coco()
    anns = coco['annotations']
    img = {i['id']: i for i in coco['images']}[anns[0]['image_id']]
    anns[0]['bbox'] = [img['width'] + 5, 10, 20, 20]  # right of the image
    anns[1]['bbox'] = [10, 10, 0, 12]                  # zero width
    anns[2]['bbox'] = [10, 10, 12, -3]                 # negative height
    anns[3]['category_id'] = 99                        # unknown
    coco['images'][5]['file_name'] = 'nowhere.jpg'     # listed, missing
    root = _write(tmp_path, coco)
    report = check_coco_file(osp.join(root, 'annotations', 'instances_val2017.json'),
                             osp.join(root, 'val2017'), CLASSES)
    assert report.problems == {
        'boxes outside their image': [anns[0]['id']],
        'zero-size boxes (width or height < 1, or area <= 0)': [anns[1]['id'], anns[2]['id']],
        'annotations with an unknown category_id': [anns[3]['id']],
        f'images listed but missing in {osp.join(root, "val2017")}': [coco['images'][5]['id']]}
    text = '\n'.join(report.lines())
    assert f'1 boxes outside their image: ids [{anns[0]["id"]}]' in text
    # a subset of classes: the other annotations are ignored, not errors
    report = check_coco_file(osp.join(SAMPLE, 'annotations', 'instances_val2017.json'), None,
                             CLASSES[:2])
    assert report.other_classes > 0 and not report.problems


def _capture_warnings():
    logger = MMLogger.get_current_instance()
    records = []

    class Handler(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Handler(logging.WARNING)
    logger.addHandler(handler)
    return logger, handler, records


@pytest.mark.slow
def test_empty_training_set_is_an_error_and_empty_val_warns(tmp_path):
    train = _coco('train')
    for ann in train['annotations']:
        ann['bbox'] = [0, 0, 0, 0]  # every box zero-size: nothing left to learn from
    root = _write(tmp_path, train, 'train')
    val = _coco('val')
    val['annotations'] = []
    _write(tmp_path, val, 'val')
    cfg = load_config(CONFIG)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = root + '/'
    with pytest.raises(ValueError, match=r'train_dataloader\.dataset: every image of .*'
                       r'instances_train2017\.json would be filtered out \(240 had no valid '
                       r'annotation'):
        check_datasets(cfg)
    logger, handler, records = _capture_warnings()
    try:
        check_datasets(cfg, ('val_dataloader', ))
    finally:
        logger.removeHandler(handler)
    assert any('instances_val2017.json has no valid annotation' in r and 'will be -1' in r
               for r in records), records

    # the command-line tool says the same and exits 1
    res = subprocess.run([sys.executable, 'tools/analysis_tools/check_dataset.py', CONFIG,
                          '--cfg-options', f'train_dataloader.dataset.data_root={root}/',
                          f'val_dataloader.dataset.data_root={root}/',
                          f'test_dataloader.dataset.data_root={root}/'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and 'would be filtered out (240 had no valid annotation' in \
        res.stderr, res.stderr[-2000:]


@pytest.mark.slow
def test_train_tool_checks_at_start_up(tmp_path):
    train = _coco('train')
    for ann in train['annotations']:
        ann['category_id'] = 42  # not a category of the file
    root = _write(tmp_path, train, 'train')
    res = subprocess.run([sys.executable, 'tools/train.py', CONFIG, '--work-dir',
                          str(tmp_path / 'work'), '--cfg-options',
                          f'train_dataloader.dataset.data_root={root}/',
                          f'val_dataloader.dataset.data_root={root}/'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert 'would be filtered out (240 had no valid annotation' in res.stderr, res.stderr[-2000:]
    assert '853 annotations with an unknown category_id' in res.stderr + res.stdout
    assert 'need at least one array' not in res.stderr


def test_scoped_dataset_types_are_checked():
    """'mmattn.PIDrayDataset' (a CocoDataset under mmattn's scope), its three test subsets inside a
    ConcatDataset included, is checked like mmdet's own types."""
    cfg = load_config(
        osp.join(ROOT, 'configs/sdanet/sdanet_cascade-mask-rcnn_r18_fpn_sample-pidray.py'))
    reports = check_datasets(cfg, ('train_dataloader', 'test_dataloader'))
    files = sorted(osp.basename(r.ann_file) for r in reports)
    assert files == ['xray_test_easy.json', 'xray_test_hard.json', 'xray_test_hidden.json',
                     'xray_train.json'], files
    assert all(not r.problems for r in reports)
