"""Every config under configs/ builds its model and runs one forward pass on a tiny input."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope, init_default_scope

import mmattn  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p)


def _fast_one_per_folder(paths):
    """The fast set forwards one config per folder (its sample config when it has one); the
    others are marked slow (CI runs them all)."""
    fast = {}
    for p in paths:
        folder = osp.dirname(p)
        if folder not in fast or ('sample' in osp.basename(p)
                                  and 'sample' not in osp.basename(fast[folder])):
            fast[folder] = p
    return [p if p in fast.values() else pytest.param(p, marks=pytest.mark.slow) for p in paths]


def _no_pretrained(cfg):
    """Drop every pretrained-weight reference so building needs no download."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'Pretrained' or 'checkpoint' in cfg and 'type' in cfg:
            return None
        return {k: (None if k == 'pretrained' else _no_pretrained(v)) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_no_pretrained(v) for v in cfg)
    return cfg


def _registry(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
    elif scope == 'mmdet3d':
        from mmdet3d.registry import MODELS
    else:
        raise AssertionError(f'unexpected default_scope {scope}')
    return MODELS


def _tiny_batch(scope: str, model):
    """A 2-image batch (one odd size) through the model's own data preprocessor."""
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        packed = demo_mm_inputs(2, [[3, 96, 128], [3, 90, 121]], num_classes=5)
    elif scope == 'mmseg':
        from mmseg.structures import SegDataSample
        from mmengine.structures import PixelData
        packed = dict(inputs=[torch.randint(0, 255, (3, 64, 128), dtype=torch.uint8),
                              torch.randint(0, 255, (3, 64, 128), dtype=torch.uint8)],
                      data_samples=[])
        for _ in range(2):
            ds = SegDataSample(metainfo=dict(img_shape=(64, 128), ori_shape=(64, 128),
                                             pad_shape=(64, 128)))
            ds.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, 64, 128)))
            packed['data_samples'].append(ds)
    elif scope == 'mmdet3d':
        from mmdet3d.structures import Det3DDataSample
        g = torch.Generator().manual_seed(0)
        # points in +-20 m, z in [-1, 3]: inside every config's range; 5 features
        points = [torch.cat([torch.rand(n, 3, generator=g) * torch.tensor([40., 40., 4.]) -
                             torch.tensor([20., 20., 1.]), torch.rand(n, 2, generator=g)], 1)
                  for n in (1500, 900)]
        packed = dict(inputs=dict(points=points),
                      data_samples=[Det3DDataSample(metainfo=dict(box_type_3d=None))
                                    for _ in points])
    else:
        raise AssertionError(f'no tiny-input builder for {scope} configs')
    return model.data_preprocessor(packed, training=False)


def _tensors(out) -> list:
    """Every tensor in a nested tuple / list / dict output."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _tensors(o)]


@pytest.mark.parametrize('path', _fast_one_per_folder(CONFIGS),
                         ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_config_builds_and_forwards(path):
    cfg = Config.fromfile(path)
    scope = cfg.get('default_scope', 'mmdet')
    model_cfg = ConfigDict(_no_pretrained(copy.deepcopy(cfg.model.to_dict())))
    rpn_test = (model_cfg.get('test_cfg') or {}).get('rpn') if scope == 'mmdet' else None
    if rpn_test:  # two-stage detectors: RoI (and mask) heads run on every proposal in 'tensor'
        rpn_test.max_per_img = min(rpn_test.get('max_per_img', 20), 20)   # mode; 20 suffice here
    with DefaultScope.overwrite_default_scope(scope):
        init_default_scope(scope)
        model = _registry(scope).build(model_cfg)
        model.eval()
        data = _tiny_batch(scope, model)
        with torch.no_grad():
            out = model(**data, mode='tensor')
            feats = model.extract_feat(data['inputs']) if scope == 'mmdet' else None
    tensors = _tensors(out)
    assert tensors and all(torch.isfinite(t).all() for t in tensors)
    if scope == 'mmseg':  # logits: one channel per class, at the decode head's stride
        head = cfg.model.decode_head
        num_classes = head.num_classes
        assert {tuple(t.shape[:2]) for t in tensors} == {(2, num_classes)}, \
            [tuple(t.shape) for t in tensors]
    if scope == 'mmdet':  # the neck's levels, each with the neck's channels, in stride order
        neck = cfg.model.neck[-1] if isinstance(cfg.model.neck, list) else cfg.model.neck
        # a neck after an FPN (SDANeck) keeps its levels and width: num_levels / in_channels
        num_outs = neck.get('num_outs', neck.get('num_levels'))
        channels = neck.get('out_channels', neck.get('in_channels'))
        assert len(feats) == num_outs, (len(feats), num_outs)
        assert all(f.shape[:2] == (2, channels) for f in feats)
        sizes = [f.shape[-1] for f in feats]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1], sizes


def test_model_index_lists_every_metafile_and_configs_exist():
    import yaml
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)['Import']
    metafiles = sorted(osp.relpath(p, ROOT)
                       for p in glob.glob(osp.join(ROOT, 'configs', '*', 'metafile.yml')))
    assert sorted(index) == metafiles
    for meta in index:
        with open(osp.join(ROOT, meta)) as f:
            models = yaml.safe_load(f)['Models']
        assert models, meta
        for m in models:
            assert osp.isfile(osp.join(ROOT, m['Config'])), f'{meta}: {m["Name"]} -> {m["Config"]}'
