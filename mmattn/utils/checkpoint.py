"""The one checkpoint path of mmattn: safe reading, official-key filters per model family, loading
with a report, and the check that a file belongs to a model.

* :func:`load_file` reads a checkpoint with ``torch.load(weights_only=True)``. Only mmengine's own
  Runner objects (:data:`MMENGINE_SAFE_GLOBALS`: ``HistoryBuffer``, numpy arrays / scalars /
  dtypes in ``message_hub``) are allowed beyond tensors and containers. A file that needs any
  other class is refused with :class:`CheckpointError` naming the file and the classes, unless the
  user opts in with ``MMATTN_UNSAFE_LOAD=1`` (or ``unsafe_load=True`` in a config read by
  ``tools/train.py`` / ``tools/test.py``; :func:`allow_unsafe_load`). :func:`use_safe_loader` makes
  mmengine's ``CheckpointLoader`` (``load_from``, ``--resume``, URLs) read through it.
* Each model family registers one filter with :func:`register_family` next to its model (timm's
  ``checkpoint_filter_fn`` way): the only code that knows the official key names. The filter gets
  the unwrapped file (``state_dict`` / ``model`` / ``module`` containers and ``module.`` removed)
  and the backbone prefix, and returns the model's state_dict.
* :func:`load_checkpoint` (every model's ``init_cfg=dict(type='Pretrained', ...)``, dict or list,
  through :func:`init_weights`) and ``tools/model_converters/convert.py`` use it; a file that does
  not fit raises :class:`CheckpointError` naming the file and the keys.
"""
import importlib
import logging
import pickle
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Pattern, Sequence, Tuple, Union

import torch
import torch.nn as nn

StateDict = Dict[str, torch.Tensor]
FilterFn = Callable[[StateDict, str, Optional[nn.Module]], StateDict]

UNSAFE_ENV = 'MMATTN_UNSAFE_LOAD'
_unsafe_opt_in = False


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely or does not fit the model; names file and keys."""


# ----------------------------------------------------------------------------------- safe reading
def allow_unsafe_load(allow: bool = True) -> None:
    """Opt in (or out) to unpickling classes outside the safe list, for this process."""
    global _unsafe_opt_in
    _unsafe_opt_in = bool(allow)


def unsafe_load_allowed() -> bool:
    """Whether the user opted in to full unpickling (``MMATTN_UNSAFE_LOAD=1`` or the config)."""
    return _unsafe_opt_in or os.environ.get(UNSAFE_ENV, '').lower() in ('1', 'true', 'yes')


def _history_buffer_statistic(obj: Any, name: str) -> Any:
    """The ``getattr`` a pickled ``HistoryBuffer`` calls to restore its statistics methods
    (``min``, ``max``, ``current``, ``mean``): allowed on ``HistoryBuffer`` for those names only."""
    from mmengine.logging import HistoryBuffer
    # the four built-in statistics; ``_statistics_methods`` is filled only once a buffer was
    # created in this process (plus any registered custom statistic)
    allowed = {'min', 'max', 'current', 'mean'} | set(HistoryBuffer._statistics_methods)
    if (obj is HistoryBuffer or isinstance(obj, HistoryBuffer)) and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'refusing getattr({obj!r}, {name!r}): only HistoryBuffer '
                                 'statistics are restored')


def mmengine_safe_globals() -> List[Any]:
    """What mmengine's Runner checkpoints hold besides tensors and containers: ``HistoryBuffer``
    (with its statistics methods, pickled as ``getattr``) and numpy arrays / scalars / dtypes in
    ``message_hub`` (found by a real train and ``--resume``, see
    ``tests/test_utils/test_checkpoint.py``); numpy 1.x names too."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    multiarray = np._core.multiarray
    # a pickled dtype is rebuilt as an instance of its class (Float64DType ...): numeric and bool
    dtypes = [type(np.dtype(t)) for t in ('float64', 'float32', 'float16', 'int64', 'int32',
                                          'int16', 'int8', 'uint8', 'bool')]
    return [HistoryBuffer, np.ndarray, np.dtype, *dtypes, multiarray._reconstruct,
            multiarray.scalar,
            (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
            (multiarray.scalar, 'numpy.core.multiarray.scalar'),
            (_history_buffer_statistic, 'builtins.getattr')]


def _global_name(obj: Any) -> str:
    if isinstance(obj, tuple):
        return obj[1]
    return f'{obj.__module__}.{obj.__qualname__}'


def _unsafe_globals(f: Any) -> List[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: the unpickler's message names it
        return []


def load_file(filename: str, map_location: Union[str, torch.device, None] = 'cpu') -> Any:
    """``torch.load`` of a local file with ``weights_only=True`` and mmengine's safe classes.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (naming the file
    and the refused classes) for anything that is not a readable, safe PyTorch checkpoint.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    if unsafe_load_allowed():
        return torch.load(filename, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(mmengine_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file (and classes) named
        msg = str(e)
        allowed = {_global_name(g) for g in mmengine_safe_globals()}
        found = [g for g in _unsafe_globals(filename) if g not in allowed] or re.findall(
            r'Unsupported global: GLOBAL ([\w.]+)', msg)
        if found:
            raise CheckpointError(
                f'{filename}: refusing to unpickle {", ".join(found)} (not a tensor, container or '
                "one of mmengine's checkpoint classes; unpickling runs code). If you trust this "
                f'file, set {UNSAFE_ENV}=1 or unsafe_load=True in the config.') from None
        lines = [line.strip() for line in msg.splitlines() if line.strip()]
        # torch wraps the unpickler's reason in boilerplate: keep the reason
        after = [i + 1 for i, line in enumerate(lines) if 'WeightsUnpickler error' in line]
        detail = lines[after[0]] if after and after[0] < len(lines) else (lines or [''])[-1]
        raise CheckpointError(f'{filename} is not a readable PyTorch checkpoint: '
                              f'{type(e).__name__}: {detail}') from e


def load_url(url: str, model_dir: Optional[str] = None, map_location=None, progress: bool = True,
             **_) -> Any:
    """Download ``url`` to torch.hub's cache once and read it with :func:`load_file`."""
    import hashlib
    from urllib.parse import urlparse
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    # links without a file name (cloud shares '.../f/<id>/?dl=1') get one from the URL's hash
    name = osp.basename(urlparse(url).path) or \
        f'{hashlib.sha256(url.encode()).hexdigest()[:16]}.pth'
    cached = osp.join(model_dir, name)
    if not osp.exists(cached):
        torch.hub.download_url_to_file(url, cached, progress=progress)
    return load_file(cached, map_location)


def read_checkpoint(filename: str, map_location='cpu') -> Any:
    """A local path or an mmengine-style URI (``https://``, ``open-mmlab://`` ...), read safely."""
    if '://' not in str(filename):
        return load_file(filename, map_location)
    from mmengine.runner.checkpoint import CheckpointLoader
    use_safe_loader()
    return CheckpointLoader.load_checkpoint(filename, map_location=map_location)


def use_safe_loader() -> None:
    """Make mmengine's ``CheckpointLoader`` read local files and URLs through :func:`load_file`
    (``load_from``, ``--resume``, ``init_cfg`` of mmengine/mmdet/mmseg models). Idempotent."""
    import mmengine.runner.checkpoint as mm_ckpt
    if mm_ckpt.CheckpointLoader._schemes.get('') is not _load_local:
        mm_ckpt.CheckpointLoader.register_scheme(prefixes='', loader=_load_local, force=True)
    # load_from_http (and the open-mmlab:// / torchvision:// schemes built on it) call this name
    mm_ckpt.load_url = load_url


def _load_local(filename: str, map_location=None) -> Any:
    return load_file(filename, map_location)


# ------------------------------------------------------------------------------ containers, prefix
def unwrap_state_dict(checkpoint: Any, filename: str = '<checkpoint>') -> StateDict:
    """The tensors of a checkpoint: ``state_dict`` / ``model`` / ``module`` / ``model_state``
    (OpenPCDet) containers unwrapped once and a DataParallel ``module.`` prefix removed."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'{filename}: expected a dict checkpoint, got '
                              f'{type(checkpoint).__name__}')
    sd = checkpoint
    for key in ('state_dict', 'model', 'module', 'model_state'):
        if isinstance(sd.get(key), Mapping):
            sd = sd[key]
            break
    out = {k[7:] if k.startswith('module.') else k: v for k, v in sd.items()
           if isinstance(v, torch.Tensor)}
    if not out:
        raise CheckpointError(f'{filename}: holds no tensors (top-level keys: '
                              f'{sorted(map(str, checkpoint))[:8]})')
    return out


def state_dict_of(checkpoint: Mapping, filename: str = '<checkpoint>') -> StateDict:
    """Alias of :func:`unwrap_state_dict` (older name)."""
    return unwrap_state_dict(checkpoint, filename)


def strip_prefix(state_dict: StateDict, prefix: str, filename: str = '<checkpoint>') -> StateDict:
    """The entries under ``prefix``, without it; an error naming the file if there are none."""
    if not prefix:
        return dict(state_dict)
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        raise CheckpointError(f'{filename}: no keys under prefix {prefix!r} (keys e.g. '
                              f'{sorted(state_dict)[:5]})')
    return out


# ------------------------------------------------------------------------------- family registry
@dataclass
class CheckpointFamily:
    """How one model family's official checkpoints map to its mmattn model.

    Attributes:
        name: ``--model`` name of the converter (``'poolformer'``).
        filter_fn: ``(state_dict, prefix, model or None) -> model state_dict``: takes the
            unwrapped file and the backbone prefix (``''`` / ``'backbone.'``), drops classifier-only
            and derived entries, renames official keys if needed. With a model, entries the model
            does not have *by configuration* (output norms of unused outputs) may be dropped.
        stem_key: a key every checkpoint of the family has (at the top level or under
            ``backbone.``): identifies the family and the prefix when none is given.
        optional: model keys a file may lack (output norms); they keep their initialisation.
        derived: model keys computed at construction (index buffers), never loaded or reported.
        model_from_state_dict: ``filtered state_dict -> model`` of the matching arch (converter
            check); ``None`` skips that check.
    """
    name: str
    filter_fn: FilterFn
    stem_key: str
    optional: Pattern = field(default_factory=lambda: re.compile(r'(?!)'))
    derived: Pattern = field(default_factory=lambda: re.compile(r'(?!)'))
    model_from_state_dict: Optional[Callable[[StateDict], nn.Module]] = None


FAMILIES: Dict[str, CheckpointFamily] = {}

#: Module registering each family (imported on first use, so the converter needs no model import).
#: A new model adds one line here and one :func:`register_family` call next to its model.
FAMILY_MODULES: Dict[str, str] = {
    'poolformer': 'mmattn.models.backbones.poolformer',
    'biformer': 'mmattn.models.backbones.biformer',
    'agent_swin': 'mmattn.models.backbones.swin_family',
    'slab_swin': 'mmattn.models.backbones.swin_family',
    'bevanet': 'mmattn.models.backbones.bevanet',
    'bvr': 'mmattn.models.heads.bvr',
    'sdanet': 'mmattn.models.necks.sda',
    'scatterformer': 'mmattn.models.backbones.scatterformer',
    'scatterformer_pcdet': 'mmattn.models.backbones.scatterformer',
}


def register_family(name: str, filter_fn: FilterFn, stem_key: str,
                    optional: Union[str, Pattern, None] = None,
                    derived: Union[str, Pattern, None] = None,
                    model_from_state_dict: Optional[Callable[[StateDict], nn.Module]] = None
                    ) -> CheckpointFamily:
    """Register the checkpoint filter of a model family (call it next to the model)."""
    never = re.compile(r'(?!)')
    family = CheckpointFamily(name, filter_fn, stem_key, re.compile(optional or never),
                              re.compile(derived or never), model_from_state_dict)
    FAMILIES[name] = family
    return family


def get_family(name: str) -> CheckpointFamily:
    """The registered family ``name``, importing its model module if needed."""
    if name not in FAMILIES and name in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[name])
    if name not in FAMILIES:
        raise KeyError(f'no checkpoint family {name!r}; known: '
                       f'{sorted(set(FAMILIES) | set(FAMILY_MODULES))}')
    return FAMILIES[name]


def find_prefix(state_dict: StateDict, family: CheckpointFamily, prefix: Optional[str],
                filename: str) -> str:
    """``prefix`` if given (it must hold keys), else ``''`` or ``'backbone.'``, wherever the
    family's stem key is; an error naming the file when it is nowhere (another model's file)."""
    if prefix:
        if not any(k.startswith(prefix) for k in state_dict):
            raise CheckpointError(f'{filename}: no keys under prefix {prefix!r} (keys e.g. '
                                  f'{sorted(state_dict)[:5]})')
        return prefix
    if family.stem_key in state_dict:
        return ''
    if 'backbone.' + family.stem_key in state_dict:
        return 'backbone.'
    raise CheckpointError(
        f'{filename} holds no {family.name} weights (no {family.stem_key}'
        f'{"" if prefix is None else " under prefix " + repr(prefix)}); keys e.g. '
        f'{sorted(state_dict)[:5]}')


def filter_checkpoint(checkpoint: Any, family: Union[str, CheckpointFamily],
                      prefix: Optional[str] = None, model: Optional[nn.Module] = None,
                      filename: str = '<checkpoint>') -> Tuple[StateDict, str, List[str]]:
    """A loaded file -> ``(model state_dict, prefix used, keys of the file not passed on)``."""
    family = get_family(family) if isinstance(family, str) else family
    sd = unwrap_state_dict(checkpoint, filename)
    prefix = find_prefix(sd, family, prefix, filename)
    out = family.filter_fn(sd, prefix, model)
    if not out:
        raise CheckpointError(f'{filename}: no {family.name} weights under prefix {prefix!r}')
    kept = {id(v) for v in out.values()}  # a key the filter renamed keeps its tensor object
    dropped = [prefix + k for k, v in strip_prefix(sd, prefix, filename).items()
               if k not in out and id(v) not in kept]
    return out, prefix, dropped


# --------------------------------------------------------------------------------------- loading
@dataclass
class LoadReport:
    """What :func:`match_state_dict` found: keys loaded, missing (optional ones), unexpected,
    shape-mismatched, and file keys the filter dropped."""
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    optional_missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        def few(keys: Sequence[str], n: int = 8) -> str:
            return ', '.join(keys[:n]) + (f', ... ({len(keys)} in all)' if len(keys) > n else '')
        parts = [f'missing keys: {few(self.missing)}' if self.missing else '',
                 f'unexpected keys: {few(self.unexpected)}' if self.unexpected else '',
                 f'shape mismatches: {few(self.mismatched, 4)}' if self.mismatched else '']
        return '; '.join(p for p in parts if p)


def match_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                     optional: Optional[Pattern] = None,
                     derived: Optional[Pattern] = None) -> LoadReport:
    """Compare a state_dict to ``model``'s; keys matching ``optional`` may be missing, model keys
    matching ``derived`` are ignored."""
    own = model.state_dict()
    if derived is not None:
        own = {k: v for k, v in own.items() if not derived.search(k)}
    report = LoadReport()
    for k in own:
        if k not in state_dict:
            (report.optional_missing if optional is not None and optional.match(k)
             else report.missing).append(k)
    for k, v in state_dict.items():
        if k not in own:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(own[k].shape):
            report.mismatched.append(f'{k}: checkpoint {tuple(v.shape)} vs model '
                                     f'{tuple(own[k].shape)}')
        else:
            report.loaded.append(k)
    return report


def load_checkpoint(model: nn.Module, filename: str, family: Union[str, CheckpointFamily],
                    prefix: Optional[str] = None, map_location='cpu') -> LoadReport:
    """Read ``filename`` safely, filter it with the family's filter, load it into ``model``.

    Every model key must come from the file except the family's optional ones (output norms,
    logged); an unexpected, missing or mis-shaped key raises :class:`CheckpointError` naming the
    file and the keys. Returns the report (also logged).
    """
    from mmengine.logging import print_log
    family = get_family(family) if isinstance(family, str) else family
    checkpoint = read_checkpoint(filename, map_location)
    state_dict, used_prefix, dropped = filter_checkpoint(checkpoint, family, prefix, model,
                                                         filename)
    report = match_state_dict(model, state_dict, family.optional, family.derived)
    report.dropped = dropped
    name = type(model).__name__
    if not report.ok:
        raise CheckpointError(f'{filename} does not fit this {name} (check arch and '
                              f'out_indices): {report.problems()}')
    model.load_state_dict(state_dict, strict=False)
    where = f' under {used_prefix!r}' if used_prefix else ''
    print_log(f'{name}: loaded {len(report.loaded)} tensors from {filename}{where}',
              logger='current')
    if dropped:
        print_log(f'{name}: not loaded from {filename}: {_few(dropped, 20)}', logger='current')
    if used_prefix:
        outside = [k for k in unwrap_state_dict(checkpoint, filename)
                   if not k.startswith(used_prefix)]
        if outside:
            print_log(f'{name}: ignored {len(outside)} keys outside {used_prefix!r} in {filename}: '
                      f'{_few(outside, 8)}', logger='current')
    if report.optional_missing:
        print_log(f'{name}: not in {filename}, keep their initialisation: '
                  f'{", ".join(report.optional_missing)}', logger='current',
                  level=logging.INFO if dropped else logging.WARNING)
    return report


def _few(keys: Sequence[str], n: int) -> str:
    return ', '.join(keys[:n]) + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def _is_pretrained(cfg: Mapping) -> bool:
    kind = cfg.get('type')
    return getattr(kind, '__name__', kind) in ('Pretrained', 'PretrainedInit')


def init_weights(model: nn.Module, family: str) -> None:
    """``BaseModule.init_weights`` for an mmattn model: the non-Pretrained ``init_cfg`` entries
    first (dict or list), then the one ``Pretrained`` entry through :func:`load_checkpoint`."""
    from mmengine.model import BaseModule
    cfgs = model.init_cfg if isinstance(model.init_cfg, list) else (
        [model.init_cfg] if model.init_cfg else [])
    pretrained = [c for c in cfgs if _is_pretrained(c)]
    if len(pretrained) > 1:
        raise CheckpointError(f'{type(model).__name__}: init_cfg holds {len(pretrained)} '
                              f'Pretrained entries, expected one: {pretrained}')
    others = [c for c in cfgs if not _is_pretrained(c)]
    saved = model.init_cfg
    model.init_cfg = others or None
    try:
        BaseModule.init_weights(model)
    finally:
        model.init_cfg = saved
    if pretrained:
        cfg = pretrained[0]
        if 'checkpoint' not in cfg:
            raise CheckpointError(f'{type(model).__name__}: Pretrained init_cfg needs '
                                  f'`checkpoint`, got {cfg}')
        load_checkpoint(model, cfg['checkpoint'], family, prefix=cfg.get('prefix'),
                        map_location=cfg.get('map_location', 'cpu'))
        model._is_init = True


# -------------------------------------------------------------------- whole-model check (tools)
def check_checkpoint(model: nn.Module, filename: str, min_match: float = 0.5) -> None:
    """Raise :class:`CheckpointError` naming the file and example keys unless at least
    ``min_match`` of the model's state_dict entries are in the checkpoint with the same shape.

    The one rule of ``tools/train.py`` (``load_from``, ``--resume``) and ``tools/test.py``.
    """
    from mmengine.model import is_model_wrapper
    if is_model_wrapper(model):
        model = model.module
    ckpt = unwrap_state_dict(read_checkpoint(filename), filename)
    report = match_state_dict(model, ckpt)
    matched = len(report.loaded)
    total = len(model.state_dict())
    if matched < min_match * total:
        detail = '; '.join(
            ([f'missing keys e.g. {report.missing[:5]}'] if report.missing else [])
            + ([f'shape mismatches e.g. {report.mismatched[:3]}'] if report.mismatched else []))
        raise CheckpointError(f'{filename} does not hold this model ({type(model).__name__}): '
                              f'only {matched}/{total} entries match; {detail}')


# ------------------------------------------------------------------------------------ conversion
def convert_checkpoint(family_name: str, src: str, prefix: Optional[str] = None) -> dict:
    """An official checkpoint converted to mmattn's layout: ``{'state_dict', 'meta'}`` with the
    family filter applied to the backbone (under ``prefix``, found when ``None``) and the rest of
    a detector / segmentor kept, classifier heads dropped; ``meta`` names the source, family,
    prefix, the arch read from the file and the dropped keys. Raises :class:`CheckpointError`
    when ``src`` is not a checkpoint of ``family_name``. Used by
    ``tools/model_converters/convert.py`` and :mod:`mmattn.apis`."""
    family = get_family(family_name)
    checkpoint = read_checkpoint(src)
    backbone, used, dropped = filter_checkpoint(checkpoint, family, prefix, None, src)
    arch = ''
    if family.model_from_state_dict is not None:
        try:
            model = family.model_from_state_dict(backbone)
        except (CheckpointError, KeyError, ValueError) as e:
            raise CheckpointError(f'{src} is not a checkpoint of {family.name}: {e}') from None
        report = match_state_dict(model, backbone, family.optional, family.derived)
        if not report.ok:
            raise CheckpointError(f'{src} does not fit {type(model).__name__} (the arch read from '
                                  f'the file): {report.problems()}')
        arch = type(model).__name__
    if used:
        whole = unwrap_state_dict(checkpoint, src)
        state_dict = {k: v for k, v in whole.items()
                      if not k.startswith(used) and not k.startswith('head.')}
        dropped += [k for k in whole if not k.startswith(used) and k.startswith('head.')]
        state_dict.update({used + k: v for k, v in backbone.items()})
    else:
        state_dict = dict(backbone)
    meta = dict(converted_from=osp.basename(src), model=family.name, prefix=used, arch=arch,
                dropped=dropped)
    return {'state_dict': state_dict, 'meta': meta}


__all__ = ['CheckpointError', 'CheckpointFamily', 'FAMILIES', 'FAMILY_MODULES', 'LoadReport',
           'UNSAFE_ENV', 'allow_unsafe_load', 'check_checkpoint', 'convert_checkpoint',
           'filter_checkpoint',
           'find_prefix', 'get_family', 'init_weights', 'load_checkpoint', 'load_file',
           'load_url', 'match_state_dict', 'read_checkpoint', 'register_family',
           'state_dict_of', 'strip_prefix', 'unsafe_load_allowed', 'unwrap_state_dict',
           'use_safe_loader']
