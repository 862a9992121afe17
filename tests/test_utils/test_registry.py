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
    """mmattn modules may build mmdet/mmcv pieces (losses, norms) under default_scope='mmdet'."""
    from mmdet.registry import MODELS as DET_MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        loss = DET_MODELS.build(dict(type='FocalLoss', use_sigmoid=True))
    out = loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]))
    assert out.ndim == 0
