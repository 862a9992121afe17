"""Bad input gives one clear error that names the file or key."""
import json
import os.path as osp
import shutil

import pytest
import torch

import mmattn  # noqa: F401
from mmattn.utils.checkpoint import CheckpointError, check_checkpoint
from mmattn.utils.runner import build_runner, check_data_paths, load_config

from ._utils import DET_CONFIG, ROOT, iter_config, run_tool


def test_missing_config():
    with pytest.raises(FileNotFoundError, match='no_such_config.py'):
        load_config('configs/no_such_config.py')


def test_missing_data_root_names_the_key():
    cfg = load_config(DET_CONFIG, {'train_dataloader.dataset.data_root': '/nonexistent/coco/'})
    with pytest.raises(FileNotFoundError, match=r'train_dataloader\.dataset\.data_root.*/nonexistent/coco/'):
        check_data_paths(cfg)


def test_missing_annotation_file_names_the_file():
    cfg = load_config(DET_CONFIG, {'val_dataloader.dataset.ann_file': 'annotations/missing.json'})
    with pytest.raises(FileNotFoundError, match='annotations/missing.json'):
        check_data_paths(cfg)


def test_annotation_that_does_not_parse_names_the_file(tmp_path):
    root = tmp_path / 'coco'
    shutil.copytree(osp.join(ROOT, 'data/coco_sample/train2017'), root / 'train2017')
    (root / 'annotations').mkdir()
    (root / 'annotations/instances_train2017.json').write_text('{"images": [ truncated')
    cfg = iter_config(DET_CONFIG, str(tmp_path / 'work'), 1)
    cfg.train_dataloader.dataset.data_root = str(root) + '/'
    runner = build_runner(cfg)
    with pytest.raises(ValueError, match='instances_train2017.json'):
        runner.build_dataloader(cfg.train_dataloader)


def test_unknown_type_names_it(tmp_path):
    cfg = iter_config(DET_CONFIG, str(tmp_path), 1)
    cfg.model.backbone.type = 'mmattn.NoSuchBackbone'
    with pytest.raises(KeyError, match='NoSuchBackbone'):
        build_runner(cfg)


def test_checkpoint_of_another_model_names_the_file(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    other = tmp_path / 'resnet_cls.pth'
    torch.save({'state_dict': {'fc.weight': torch.zeros(10, 4)}}, other)
    with pytest.raises(CheckpointError, match='resnet_cls.pth does not hold this model.*0/7'):
        check_checkpoint(model, str(other))
    good = tmp_path / 'good.pth'
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, good)
    check_checkpoint(model, str(good))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        check_checkpoint(model, str(tmp_path / 'missing.pth'))


@pytest.mark.slow
def test_test_tool_rejects_missing_checkpoint():
    res = run_tool(['tools/test.py', DET_CONFIG, '/nonexistent/epoch_1.pth'], timeout=300)
    assert res.returncode != 0
    assert 'checkpoint not found: /nonexistent/epoch_1.pth' in res.stderr


@pytest.mark.slow
def test_train_and_test_reject_another_models_checkpoint(tmp_path):
    """One rule for tools/train.py (load_from, --resume CKPT) and tools/test.py: a checkpoint of
    another model is rejected before anything runs, naming the file and keys."""
    other = tmp_path / 'resnet_cls.pth'
    torch.save({'state_dict': {'fc.weight': torch.zeros(10, 4)}, 'meta': {}}, other)
    expected = f'{other} does not hold this model'
    opts = ['--cfg-options', f'load_from={other}', 'train_dataloader.num_workers=0',
            'val_dataloader.num_workers=0']
    res = run_tool(['tools/train.py', DET_CONFIG, '--work-dir', str(tmp_path / 'train'), *opts],
                   timeout=600)
    assert res.returncode != 0 and expected in res.stderr, res.stderr[-3000:]
    assert 'Epoch(train)' not in res.stdout + res.stderr
    res = run_tool(['tools/train.py', DET_CONFIG, '--work-dir', str(tmp_path / 'resume'),
                    '--resume', str(other)], timeout=600)
    assert res.returncode != 0 and expected in res.stderr, res.stderr[-3000:]
    res = run_tool(['tools/test.py', DET_CONFIG, str(other), '--work-dir', str(tmp_path / 'test')],
                   timeout=600)
    assert res.returncode != 0 and expected in res.stderr, res.stderr[-3000:]
