"""What the whole-model converters (``tools/model_converters/{bvr,sdanet,bevanet}2mmattn.py``)
share: building a config's model on the ``meta`` device to check a converted state_dict against,
and the command line around a ``convert(src, config) -> {'state_dict', 'meta'}`` function."""
import argparse
import importlib
import os
import os.path as osp
from typing import Callable, List, Optional

import torch
from torch import nn

from .checkpoint import CheckpointError


def build_on_meta(config: str, default_scope: str,
                  edit: Optional[Callable[[dict], None]] = None) -> nn.Module:
    """The model of ``config`` (its ``model`` dict, changed in place by ``edit``) with meta
    tensors, built in the config's ``default_scope`` (else ``default_scope``); a backbone's
    pre-trained ``init_cfg`` is not read."""
    import mmattn  # noqa: F401  (config patches, registries)
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(config)
    scope = cfg.get('default_scope', default_scope)
    models = importlib.import_module(f'{scope}.registry').MODELS
    if cfg.model.get('backbone') is not None:
        cfg.model.backbone.init_cfg = None
    if edit is not None:
        edit(cfg.model)
    with DefaultScope.overwrite_default_scope(scope):
        with torch.device('meta'):
            return models.build(cfg.model)


def save_atomically(obj: dict, dst: str) -> str:
    """``torch.save`` to ``dst`` through a temporary file, so a failed run leaves no partial file;
    the absolute path written."""
    dst = osp.abspath(dst)
    os.makedirs(osp.dirname(dst), exist_ok=True)
    tmp = dst + '.tmp'
    torch.save(obj, tmp)
    os.replace(tmp, dst)
    return dst


def converter_main(description: str, src_help: str, config_help: str,
                   convert: Callable[[str, Optional[str]], dict],
                   report: Callable[[str, str, dict], List[str]],
                   argv: Optional[List[str]] = None) -> None:
    """``SCRIPT SRC DST [--config CONFIG]``: ``convert(SRC, CONFIG)``, save it to DST, print the
    lines of ``report(SRC, DST, converted)``. A file that cannot be converted exits with one error
    naming it, and nothing is written."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help=src_help)
    parser.add_argument('dst', help='output file')
    parser.add_argument('--config', default=None, help=config_help)
    args = parser.parse_args(argv)
    try:
        out = convert(args.src, args.config)
    except (CheckpointError, FileNotFoundError, KeyError) as e:
        raise SystemExit(f'{args.src}: cannot convert: {e}')
    dst = save_atomically(out, args.dst)
    for line in report(args.src, dst, out):
        print(line)
