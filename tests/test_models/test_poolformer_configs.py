"""PoolFormer configs: the full configs load an official classifier checkpoint through the real
detector / segmentor ``init_weights``; the sample-data configs train two iterations (Runner).
"""
import glob
import os.path as osp

import pytest
import torch

import mmattn  # noqa: F401  (config compatibility patches: mmdet:: / mmseg:: bases)
from mmattn.models.backbones.poolformer import PoolFormer
from mmattn.testing.marks import fast_first
from mmattn.testing.runs import short_run_config
from mmattn.testing.threads import cpu_threads

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FULL = sorted(p for p in glob.glob(osp.join(REPO, 'configs/poolformer/*.py')) if 'sample' not in p)
SAMPLE = sorted(glob.glob(osp.join(REPO, 'configs/poolformer/*sample*.py')))


def build(cfg):
    from mmengine.registry import DefaultScope
    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)


def official_classifier(arch: str) -> dict:
    """An official-layout classifier state_dict (sail-sg ``poolformer_<arch>.pth.tar``), random."""
    torch.manual_seed(0)
    with torch.device('meta'):
        layout = PoolFormer(arch, out_indices=(3, )).state_dict()
    sd = {k: torch.randn(v.shape) for k, v in layout.items() if not k.startswith('norm6.')}
    c = layout['norm6.weight'].shape[0]
    sd.update({
        'norm.weight': torch.randn(c),
        'norm.bias': torch.randn(c),
        'head.weight': torch.randn(1000, c),
        'head.bias': torch.randn(1000)
    })
    return sd


def test_config_set():
    names = {osp.basename(p) for p in FULL}
    for arch in ('s12', 's24', 's36'):
        assert {f'retinanet_poolformer-{arch}_fpn_1x_coco.py',
                f'mask-rcnn_poolformer-{arch}_fpn_1x_coco.py',
                f'fpn_poolformer-{arch}_4xb2-80k_cityscapes-512x1024.py'} <= names
    assert {f'fpn_poolformer-{arch}_8xb4-40k_ade20k-512x512.py'
            for arch in ('s12', 's24', 's36', 'm36', 'm48')} <= names
    assert [osp.basename(p) for p in SAMPLE] == [
        'fpn_poolformer-s12_sample-cityscapes.py', 'mask-rcnn_poolformer-s12_fpn_sample-coco.py',
        'retinanet_poolformer-s12_fpn_sample-coco.py']


@pytest.mark.parametrize('path', fast_first(FULL), ids=osp.basename)
def test_full_config_loads_official_classifier(path, tmp_path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    init = cfg.model.backbone.init_cfg
    assert init.type == 'Pretrained' and init.checkpoint.startswith(
        'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_')
    arch = cfg.model.backbone.arch
    assert init.checkpoint.endswith(f'poolformer_{arch}.pth.tar')
    sd = official_classifier(arch)
    ckpt = str(tmp_path / f'poolformer_{arch}.pth.tar')
    torch.save(sd, ckpt)
    cfg.model.backbone.init_cfg.checkpoint = ckpt
    model = build(cfg)
    model.init_weights()
    own = model.backbone.state_dict()
    assert all(
        torch.equal(own[k], v) for k, v in sd.items() if not k.startswith(('norm.', 'head.')))
    x = torch.randn(1, 3, 64, 96)
    feats = model.extract_feat(x)
    assert len(feats) == (5 if 'rcnn' in path or 'retinanet' in path else 4)


@pytest.mark.slow
@pytest.mark.parametrize('path', SAMPLE, ids=osp.basename)
def test_sample_config_trains_two_iterations(path, tmp_path):
    from mmattn.utils.runner import build_runner
    torch.set_num_threads(cpu_threads())
    runner = build_runner(short_run_config(path, str(tmp_path)))
    backbone = runner.model.backbone
    assert isinstance(backbone, PoolFormer) and backbone.init_cfg is None
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    runner.train()
    assert osp.isfile(tmp_path / 'iter_2.pth')
    # the loop validated after the last iteration (an untrained RetinaNet may find nothing: no mAP)
    assert 'val/time' in runner.message_hub.log_scalars
    after = backbone.state_dict()
    moved = {k for k, v in after.items() if not torch.equal(v, before[k])}
    # AdamW moves every parameter that got a gradient: all of the trunk and the used output norms
    assert all(k in moved for k in after if k.startswith(('patch_embed.', 'network.')))
    assert all(k in moved for k in after if k.startswith('norm'))
