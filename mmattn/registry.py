"""mmattn's registries: children of mmengine's root registries, scope ``mmattn``.

Configs keep ``default_scope='mmdet'`` (or ``'mmseg'``, ``'mmdet3d'``), import mmattn with
``custom_imports=dict(imports=['mmattn.models'], allow_failed_imports=False)`` and name mmattn
classes with the scope prefix: ``type='mmattn.PoolFormer'``.
"""
import importlib
from typing import Dict

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry


class LazyRegistry(Registry):
    """A Registry that also knows, per name, the module registering it (``lazy``, filled by
    :mod:`mmattn.models`): the module is imported on the first lookup of that name, so models
    built on mmdet / mmseg / mmdet3d import them only when used."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: Dict[str, str] = {}

    def get(self, key: str):
        scope, real_key = self.split_scope_key(key) if isinstance(key, str) else (None, None)
        if real_key is not None and scope in (None, self._scope):
            self.import_from_location()
            module = self.lazy.get(real_key)
            if module is not None and real_key not in self._module_dict:
                importlib.import_module(module)
        return super().get(key)


MODELS = LazyRegistry('model', parent=MMENGINE_MODELS, locations=['mmattn.models'])
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, locations=['mmattn.models'])
WEIGHT_INITIALIZERS = Registry(
    'weight initializer', parent=MMENGINE_WEIGHT_INITIALIZERS, locations=['mmattn.models'])
TASK_UTILS = Registry('task util', parent=MMENGINE_TASK_UTILS, locations=['mmattn.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['mmattn.datasets'])
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMENGINE_DATA_SAMPLERS, locations=['mmattn.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, locations=['mmattn.datasets'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, locations=['mmattn.evaluation'])
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR, locations=['mmattn.evaluation'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['mmattn.engine'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, locations=['mmattn.engine'])
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, locations=['mmattn.engine'])
OPTIM_WRAPPERS = Registry(
    'optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, locations=['mmattn.engine'])
PARAM_SCHEDULERS = Registry(
    'parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS, locations=['mmattn.engine'])
VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS, locations=["mmattn.utils"])
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS, locations=["mmattn.utils"])
