"""mmattn's registries: scope, parents, lazy locations, cross-scope builds."""
import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

import mmattn  # noqa: F401
from mmattn.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS


def test_scope_and_parents():
    for reg in (MODELS, DATASETS, TRANSFORMS, METRICS, HOOKS):
        assert reg.scope == 'mmattn'
        assert reg.parent.scope == 'mmengine'
    assert MODELS.parent is ROOT_MODELS
    assert 'mmattn' in ROOT_MODELS.children


def test_unknown_type_names_the_key_and_scope():
    from mmdet.registry import MODELS as DET_MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        with pytest.raises(KeyError, match='NoSuchBackbone'):
            DET_MODELS.build(dict(type='mmattn.NoSuchBackbone'))


def test_mmdet_component_built_from_inside_mmattn_scope():
    """mmattn modules may build mmdet/mmcv pieces (losses, norms) under default_scope='mmdet';
    an mmattn module that builds mmdet's losses itself (BVR's keypoint head) gets them whatever
    the current scope, mmattn's own included (where mmdet's names are not visible)."""
    from mmdet.models.losses import FocalLoss, GaussianFocalLoss, SmoothL1Loss
    from mmdet.registry import MODELS as DET_MODELS

    from mmattn.models.heads.bvr import BVRKeypointHead
    with DefaultScope.overwrite_default_scope('mmdet'):
        loss = DET_MODELS.build(dict(type='FocalLoss', use_sigmoid=True))
    out = loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]))
    assert out.ndim == 0
    with DefaultScope.overwrite_default_scope('mmattn'):
        with pytest.raises(KeyError, match='FocalLoss'):
            MODELS.build(dict(type='FocalLoss', use_sigmoid=True))
        head = BVRKeypointHead(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1)
        custom = BVRKeypointHead(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
                                 loss_cls=dict(type='FocalLoss', use_sigmoid=True))
    assert type(head.loss_cls) is GaussianFocalLoss and type(head.loss_offset) is SmoothL1Loss
    assert type(custom.loss_cls) is FocalLoss


LAZY_PROBE = r'''
import sys
import mmattn.models  # noqa: F401
from mmattn.registry import MODELS
from mmengine.registry import DefaultScope
heavy = [m for m in ('mmdet', 'mmdet3d', 'mmseg') if m in sys.modules]
assert not heavy, f'import mmattn.models imported {heavy}'
assert MODELS.get('PoolFormer').__name__ == 'PoolFormer'
assert 'mmdet3d' not in sys.modules
# a lazily registered class is found by name (as a config names it), from another scope too
from mmdet3d.registry import MODELS as DET3D_MODELS
with DefaultScope.overwrite_default_scope('mmdet3d'):
    assert DET3D_MODELS.get('mmattn.ScatterFormer').__name__ == 'ScatterFormer'
    assert DET3D_MODELS.get('mmattn.CenterHeadIoU').__name__ == 'CenterHeadIoU'
from mmattn.models.necks import CascadeDEDBackbone  # noqa: F401  (module attribute, lazily)
print('LAZY OK')
'''


@pytest.mark.slow
def test_models_import_only_what_a_class_needs():
    """``import mmattn.models`` imports no task package; a class built on one (ScatterFormer on
    mmdet3d) imports it when a config names it."""
    import os.path as osp
    import subprocess
    import sys
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    res = subprocess.run([sys.executable, '-c', LAZY_PROBE], cwd=root, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0 and 'LAZY OK' in res.stdout, res.stderr[-3000:]


def test_every_lazy_name_is_registered_by_its_module():
    import importlib
    import mmattn.models  # noqa: F401
    for name, module in MODELS.lazy.items():
        importlib.import_module(module)
        assert name in MODELS.module_dict, (name, module)
