"""Config loading and Runner construction shared by ``tools/train.py`` and ``tools/test.py``.

The checks here turn the usual late, deep failures into one early error that names the config key
or file: a config that does not exist, a ``data_root`` or annotation file that is missing, an
annotation file that does not parse.
"""
import difflib
import os.path as osp
import warnings
from typing import Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

DATALOADER_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _datasets(cfg: dict, where: str) -> Iterator[Tuple[str, dict]]:
    """Yield ``(key path, dataset cfg)`` for a dataset cfg and every dataset wrapped inside it."""
    yield where, cfg
    if isinstance(cfg.get('dataset'), dict):
        yield from _datasets(cfg['dataset'], f'{where}.dataset')
    for i, sub in enumerate(cfg.get('datasets') or []):
        if isinstance(sub, dict):
            yield from _datasets(sub, f'{where}.datasets[{i}]')


def dataset_files(ds: dict) -> Tuple[Optional[str], Optional[str]]:
    """The data root and the annotation file (joined with the data root) of a dataset cfg."""
    root = ds.get('data_root')
    ann = ds.get('ann_file') or None
    if ann and root and not osp.isabs(ann) and '://' not in ann:
        ann = osp.join(root, ann)
    return root, ann


def check_data_paths(cfg: Config, keys=DATALOADER_KEYS) -> None:
    """Raise ``FileNotFoundError`` naming the config key when a data root or annotation file of a
    dataloader in ``keys`` is missing (remote ``s3://``-style paths are not checked)."""
    for key in keys:
        loader = cfg.get(key)
        if not isinstance(loader, dict) or not isinstance(loader.get('dataset'), dict):
            continue
        for where, ds in _datasets(loader['dataset'], f'{key}.dataset'):
            root, ann = dataset_files(ds)
            if root and '://' not in root and not osp.isdir(root):
                raise FileNotFoundError(
                    f'{where}.data_root: directory {root!r} does not exist (config '
                    f'{cfg.filename}). Put the dataset there or pass '
                    f'--cfg-options {where}.data_root=PATH')
            if ann and '://' not in ann and not osp.exists(ann):
                raise FileNotFoundError(f'{where}.ann_file: {ann!r} does not exist (config '
                                        f'{cfg.filename})')


def _config_keys(node, prefix: str = '') -> Iterator[str]:
    """Every dotted key path of a (nested) config: ``model``, ``model.backbone``, ..."""
    items = node.items() if isinstance(node, dict) else \
        enumerate(node) if isinstance(node, (list, tuple)) else ()
    for k, v in items:
        key = f'{prefix}{k}'
        yield key
        yield from _config_keys(v, key + '.')


def warn_unknown_options(cfg: Config, options: dict) -> List[str]:
    """Warn for each ``--cfg-options`` key that is not in the config (a typo such as
    ``trian_cfg.max_epochs`` would otherwise be added silently), naming the closest existing key;
    return those keys. Keys under ``_delete_`` or new on purpose still merge."""
    existing = set(_config_keys(cfg._cfg_dict.to_dict()))
    unknown = [k for k in options if k not in existing]
    for key in unknown:
        parent = key.rsplit('.', 1)[0] if '.' in key else ''
        close = difflib.get_close_matches(key, existing, n=1, cutoff=0.8)
        hint = f'; did you mean {close[0]!r}?' if close else (
            '' if not parent or parent in existing else f' (nor is {parent!r})')
        warnings.warn(f'--cfg-options {key}: there is no such key in {cfg.filename}, it is added '
                      f'as a new one{hint}', stacklevel=2)
    return unknown


def load_config(path: str, options: Optional[dict] = None, launcher: str = 'none') -> Config:
    """Read a config, apply ``--cfg-options`` and make distributed runs work on CPUs (gloo).

    ``unsafe_load=True`` in the config lets checkpoints unpickle any class (see
    :mod:`mmattn.utils.checkpoint`); off by default."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if options:
        warn_unknown_options(cfg, options)
        cfg.merge_from_dict(options)
    cfg.launcher = launcher
    if cfg.get('unsafe_load', False):  # the config's opt-in to unpickling arbitrary classes
        from mmattn.utils.checkpoint import allow_unsafe_load
        allow_unsafe_load(True)
    if launcher != 'none' and not torch.cuda.is_available():
        cfg.setdefault('env_cfg', ConfigDict())
        cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
        cfg.env_cfg.dist_cfg.backend = 'gloo'
        wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(type='MMDistributedDataParallel')
        wrapper.device_ids = None  # CPU modules: DDP takes no device ids
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = wrapper
    return cfg


class MMAttnRunner(Runner):
    """mmengine's Runner whose dataloader errors name the dataset's files, and whose checkpoints
    carry the random generators' states so that a resumed run continues exactly
    (:class:`mmattn.engine.hooks.RNGStateHook`, registered unless the config lists one)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from mmattn.engine.hooks.rng_state import RNGStateHook
        if not any(isinstance(h, RNGStateHook) for h in self.hooks):
            self.register_hook(RNGStateHook())

    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):  # type: ignore[override]
        try:
            return Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        except (ValueError, KeyError, TypeError, OSError, AssertionError) as e:
            if not isinstance(dataloader, dict) or not isinstance(dataloader.get('dataset'), dict):
                raise
            files = [f'data_root={r!r}, ann_file={a!r}'
                     for _, ds in _datasets(dataloader['dataset'], 'dataset')
                     for r, a in [dataset_files(ds)] if r or a]
            msg = f'could not load the dataset ({"; ".join(files)}): {type(e).__name__}: {e}'
            try:
                err = type(e)(msg)
            except Exception:  # noqa: BLE001 - exception types whose constructor needs more
                err = ValueError(msg)
            raise err from e


def build_runner(cfg: Config) -> Runner:
    """Build the config's runner (``runner_type`` if given, else :class:`MMAttnRunner`)."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return MMAttnRunner.from_cfg(cfg)


def enable_visualization(cfg: Config, show_dir: Optional[str] = None, show: bool = False,
                         wait_time: float = 2, score_thr: float = 0.3) -> None:
    """Switch on the config's visualization hook so test predictions are drawn (to PNGs)."""
    hooks = cfg.get('default_hooks') or {}
    hook = hooks.get('visualization')
    if hook is None:
        raise KeyError(f'{cfg.filename}: default_hooks.visualization is not set; add a '
                       'DetVisualizationHook / SegVisualizationHook / Det3DVisualizationHook')
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    hook_type = str(hook['type'])
    if 'Seg' in hook_type:
        hook['interval'] = 1  # mmseg draws every 50th image by default
        if show_dir:
            cfg.visualizer['save_dir'] = osp.abspath(show_dir)
    else:
        if show_dir:
            hook['test_out_dir'] = osp.abspath(show_dir)
        if hook_type.endswith(('DetVisualizationHook', 'BEVVisualizationHook')):
            hook['score_thr'] = score_thr
