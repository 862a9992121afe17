"""Checks that a checkpoint belongs to the model it is loaded into."""
from typing import Dict, Mapping

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from mmengine.model import is_model_wrapper


def state_dict_of(checkpoint: Mapping, filename: str = '<checkpoint>') -> Dict[str, torch.Tensor]:
    """The tensor state_dict inside a checkpoint container (``state_dict`` / ``model`` / raw),
    with a DataParallel ``module.`` prefix removed."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'{filename}: expected a dict checkpoint, got {type(checkpoint).__name__}')
    sd = checkpoint
    for key in ('state_dict', 'model', 'module'):
        if isinstance(sd.get(key), Mapping):
            sd = sd[key]
            break
    out = {k[7:] if k.startswith('module.') else k: v for k, v in sd.items()
           if isinstance(v, torch.Tensor)}
    if not out:
        raise KeyError(f'{filename}: holds no tensors (keys: {sorted(checkpoint)[:8]})')
    return out


def check_checkpoint(model: torch.nn.Module, filename: str, min_match: float = 0.5) -> None:
    """Raise ``ValueError`` naming the file and example keys unless at least ``min_match`` of the
    model's state_dict entries are in the checkpoint with the same shape."""
    if is_model_wrapper(model):
        model = model.module
    ckpt = state_dict_of(CheckpointLoader.load_checkpoint(filename, map_location='cpu'), filename)
    own = model.state_dict()
    missing = [k for k in own if k not in ckpt]
    mismatched = [f'{k}: checkpoint {tuple(ckpt[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in own if k in ckpt and ckpt[k].shape != own[k].shape]
    matched = len(own) - len(missing) - len(mismatched)
    if matched < min_match * len(own):
        detail = '; '.join((missing[:5] and [f'missing keys e.g. {missing[:5]}'] or [])
                           + (mismatched[:3] and [f'shape mismatches e.g. {mismatched[:3]}'] or []))
        raise ValueError(f'{filename} does not hold this model ({type(model).__name__}): only '
                         f'{matched}/{len(own)} entries match; {detail}')
