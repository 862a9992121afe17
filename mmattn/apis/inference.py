"""Inference by model name or config: mmdet's ``DetInferencer``, mmseg's ``MMSegInferencer`` and
mmdet3d's ``init_model`` / ``inference_detector``, with the weights of :func:`resolve`."""
import glob
import os.path as osp
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import torch.nn as nn

from mmattn.utils.checkpoint import check_checkpoint

from .weights import ModelEntry, resolve

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
TASKS = ('mmdet', 'mmseg', 'mmdet3d')


@dataclass
class InferenceModel:
    """A model ready for :func:`inference`.

    Attributes:
        task: the config's ``default_scope``: ``'mmdet'``, ``'mmseg'`` or ``'mmdet3d'``.
        model: the built model (in eval mode, on its device).
        inferencer: the mmdet / mmseg Inferencer (``None`` for mmdet3d).
        config: the config file; checkpoint: the loaded file (``None``: random initialisation).
        entry: the model-index entry, if the model came from the index.
    """
    task: str
    model: nn.Module
    inferencer: Any
    config: str
    checkpoint: Optional[str]
    entry: Optional[ModelEntry] = None


def init_model(model_name_or_config: str, weights: Optional[str] = None, device: str = 'cpu',
               progress: bool = True, resolve_weights: bool = True) -> InferenceModel:
    """Build the model of a model-index name or config file and load its weights (see
    :func:`mmattn.apis.resolve`; a config file gets the index's weights only with
    ``resolve_weights``); a checkpoint of another model raises ``CheckpointError``."""
    import mmattn
    from mmengine.config import Config
    mmattn.setup_openmmlab()
    resolved = resolve(model_name_or_config, weights, progress, index_weights=resolve_weights)
    config, ckpt = resolved.config, resolved.checkpoint
    task = Config.fromfile(config).get('default_scope', 'mmdet')
    if task == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=config, weights=ckpt, device=device,
                                   show_progress=False)
        model = inferencer.model
    elif task == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=config, weights=ckpt, device=device)
        model = inferencer.model
    elif task == 'mmdet3d':
        from mmdet3d.apis import init_model as init_3d
        inferencer, model = None, init_3d(Config.fromfile(config), ckpt, device=device)
    else:
        raise ValueError(f'{config}: default_scope {task!r} is not one of {", ".join(TASKS)}')
    if ckpt:
        check_checkpoint(model, ckpt)
    return InferenceModel(task, model, inferencer, config, ckpt, resolved.entry)


def list_inputs(inputs: str, exts: Sequence[str]) -> List[str]:
    """The files named by ``inputs`` (a file, or a folder: its files with ``exts``), sorted."""
    if osp.isdir(inputs):
        files = sorted(f for f in glob.glob(osp.join(inputs, '*')) if f.lower().endswith(exts))
        if not files:
            raise FileNotFoundError(f'no inputs ({", ".join(exts)}) in folder {inputs}')
        return files
    if not osp.isfile(inputs):
        raise FileNotFoundError(f'input not found: {inputs}')
    return [inputs]


def inference(model_name_or_config: Union[str, InferenceModel],
              inputs: Union[str, np.ndarray, Sequence[Union[str, np.ndarray]]],
              weights: Optional[str] = None, device: str = 'cpu', batch_size: int = 1) -> Any:
    """Predictions of a model-index name, a config file or an :func:`init_model` result.

    Args:
        model_name_or_config: a name of ``model-index.yml`` (published weights are fetched,
            checked, converted and cached), a config path or an :class:`InferenceModel`.
        inputs: an image path / HxWx3 BGR uint8 array (``.bin`` point file for mmdet3d), a
            folder, or a list of them.
        weights: a checkpoint path or URL instead of the index's weights.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...

    Returns:
        ``DetDataSample`` / ``SegDataSample`` / ``Det3DDataSample``: one for a single input, a
        list for a list or a folder.
    """
    im = model_name_or_config if isinstance(model_name_or_config, InferenceModel) else \
        init_model(model_name_or_config, weights, device)
    single = isinstance(inputs, np.ndarray) or (isinstance(inputs, str) and not osp.isdir(inputs))
    if isinstance(inputs, str):
        exts = ('.bin', ) if im.task == 'mmdet3d' else IMAGE_EXTS
        items: List[Any] = list_inputs(inputs, exts)
    else:
        items = [inputs] if single else list(inputs)
    if im.task == 'mmdet3d':
        from mmdet3d.apis import inference_detector
        samples = [inference_detector(im.model, item)[0] for item in items]
    elif im.task == 'mmdet':
        samples = im.inferencer(items, return_datasamples=True, batch_size=batch_size,
                                no_save_pred=True)['predictions']
    else:
        samples = im.inferencer(items, return_datasamples=True, batch_size=batch_size)
        samples = samples if isinstance(samples, list) else [samples]
    return samples[0] if single else samples


__all__ = ['IMAGE_EXTS', 'InferenceModel', 'inference', 'init_model', 'list_inputs']
