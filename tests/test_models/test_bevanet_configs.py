"""BEVANet configs: one Cityscapes config per arch with the official settings (model built on the
meta device), the training pipeline on a sample image, and (slow) two training iterations of the
sample config."""
import glob
import os.path as osp

import pytest
import torch

import mmattn  # noqa: F401  (config compatibility patches: mmseg:: bases)
from mmattn.testing.runs import short_run_config
from mmattn.testing.threads import cpu_threads

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(REPO, 'configs', 'bevanet')
# arch -> (channels, HEAD_PLANES, batch, lr, weight decay, epochs, GPUs), the official yaml
OFFICIAL = {
    's': (32, 128, 12, 0.01, 5e-4, 500, 1),
    'sw': (64, 128, 10, 0.01, 1e-3, 484, 1),
    'base': (64, 128, 6, 0.008, 4e-4, 500, 2),
    'l': (64, 256, 6, 0.008, 5e-4, 484, 2),
}


def load(path: str):
    from mmengine.config import Config
    return Config.fromfile(path)


def build(cfg):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('arch', sorted(OFFICIAL))
def test_cityscapes_config_has_the_official_settings(arch):
    found = glob.glob(osp.join(CONFIGS, f'bevanet-{arch}_*_cityscapes-1024x1024.py'))
    assert len(found) == 1, found
    c, head, batch, lr, wd, epochs, gpus = OFFICIAL[arch]
    assert osp.basename(found[0]).startswith(f'bevanet-{arch}_{gpus}xb{batch}-{epochs}e_')
    cfg = load(found[0])
    assert cfg.model.backbone.arch == arch
    assert cfg.model.decode_head.in_channels == 4 * c and cfg.model.decode_head.channels == head
    assert cfg.train_dataloader.batch_size == batch
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ('SGD', lr, 0.9, wd)
    iters = (2975 // (batch * gpus)) * epochs
    assert cfg.train_cfg.max_iters == iters
    (poly, ) = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end, poly.by_epoch) == (
        'PolyLR', 0.9, 0.0, iters, False)
    head_cfg = cfg.model.decode_head
    assert head_cfg.align_corners is True and head_cfg.get('dropout_ratio', 0) == 0
    losses = [(loss.type, loss.get('loss_weight', 1.0)) for loss in head_cfg.loss_decode]
    assert losses == [('mmattn.PixelMeanCrossEntropyLoss', 0.4), ('OhemCrossEntropy', 1.0),
                      ('BoundaryLoss', 20.0), ('OhemCrossEntropy', 1.0)]
    pipeline = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert pipeline == ['LoadImageFromFile', 'LoadAnnotations', 'RandomChoiceResize', 'Pad',
                        'RandomCrop', 'RandomFlip', 'GenerateEdge', 'PackSegInputs']
    longs = [s[0] for s in cfg.train_dataloader.dataset.pipeline[2].scales]
    assert longs == [int(2048 * (0.5 + i / 10) + 0.5) for i in range(17)]
    with torch.device('meta'):
        model = build(cfg)
    n = sum(p.numel() for m in (model.backbone, model.decode_head.i_head,
                                 model.decode_head.conv_seg) for p in m.parameters())
    # official deploy (seg_augment=False) parameter counts, spec 1b
    expected = {'s': 15.091, 'sw': 57.419, 'base': 58.599, 'l': 59.829}[arch]
    assert abs(n / 1e6 - expected) < 0.001


def test_ade20k_config_has_the_official_settings():
    cfg = load(osp.join(CONFIGS, 'bevanet-base_1xb14-150e_ade20k-512x512.py'))
    head = cfg.model.decode_head
    assert cfg.model.backbone.arch == 'base' and head.num_classes == 150
    assert all('class_weight' not in loss for loss in head.loss_decode)
    assert cfg.train_dataloader.batch_size == 14
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    opt = cfg.optim_wrapper.optimizer
    assert (opt.lr, opt.weight_decay) == (0.0015, 0.0005)
    assert cfg.train_cfg.max_iters == (20210 // 14) * 150 == cfg.param_scheduler[0].end
    longs = [s[0] for s in cfg.train_dataloader.dataset.pipeline[2].scales]
    assert longs == [int(640 * (0.5 + i / 10) + 0.5) for i in range(12)]  # randint(0, 11)


def test_training_pipeline_on_a_sample_image():
    """Scale choice, padding (label 255) to the crop, crop, flip and edges on the sample data."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    cfg = load(osp.join(CONFIGS, 'bevanet-s_sample-cityscapes.py'))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = osp.join(REPO, ds_cfg.data_root)
    with DefaultScope.overwrite_default_scope('mmseg'):
        ds = DATASETS.build(ds_cfg)
    torch.manual_seed(0)
    import random

    import numpy as np
    random.seed(0)
    np.random.seed(0)
    for i in range(6):
        out = ds[i % len(ds)]
        sample = out['data_samples']
        assert tuple(out['inputs'].shape) == (3, 128, 128)
        assert tuple(sample.gt_sem_seg.data.shape) == (1, 128, 128)
        edge = sample.gt_edge_map.data
        assert edge.shape == (1, 128, 128) and set(edge.unique().tolist()) <= {0, 1}
    # the smallest scale (128x64) is padded to the crop: black image, ignored label
    ds_cfg.pipeline[2].scales = [(128, 128)]
    ds_cfg.pipeline[5].prob = 0.0
    with DefaultScope.overwrite_default_scope('mmseg'):
        out = DATASETS.build(ds_cfg)[0]
    assert (out['inputs'][:, 64:] == 0).all() and out['inputs'][:, :64].float().std() > 0
    label = out['data_samples'].gt_sem_seg.data
    assert (label[:, 64:] == 255).all() and (label[:, :64] != 255).any()


@pytest.mark.slow
def test_sample_config_trains_two_iterations(tmp_path):
    from mmattn.models.backbones.bevanet import BEVANet
    from mmattn.utils.runner import build_runner
    torch.set_num_threads(cpu_threads())
    runner = build_runner(short_run_config(osp.join(CONFIGS, 'bevanet-s_sample-cityscapes.py'),
                                            str(tmp_path)))
    backbone = runner.model.backbone
    assert isinstance(backbone, BEVANet) and backbone.init_cfg is None
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    assert osp.isfile(tmp_path / 'iter_2.pth')
    scalars = runner.message_hub.log_scalars
    for name in ('loss_sem_p', 'loss_sem_i', 'loss_bd', 'loss_sem_bd'):
        assert f'train/decode.{name}' in scalars, sorted(scalars)
    assert 'val/mIoU' in scalars or 'val/aAcc' in scalars, sorted(scalars)
    after = runner.model.state_dict()
    moved = [k for k, v in after.items() if v.dtype.is_floating_point
             and not torch.equal(v, before[k])]
    # SGD with weight decay moves every parameter, the aux and boundary heads included
    for prefix in ('backbone.conv1.', 'backbone.spp.', 'decode_head.p_head.', 'decode_head.d_head.',
                   'decode_head.i_head.'):
        assert any(k.startswith(prefix) for k in moved), prefix
