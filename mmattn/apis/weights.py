"""Models by name: the model index, and published weights downloaded, checked, converted, cached.

A model-index name (``retinanet_poolformer-s12_fpn_1x_coco``, the ``Name`` of a metafile entry) or
a config path resolves to the config and the checkpoint to load (:func:`resolve`). A metafile entry
may carry, besides ``Config`` and ``Weights`` (the URL):

* ``SHA256``: the SHA-256 of the file at the URL (``unknown`` or absent: not checked; the digest
  of the file is then logged so that it can be filled in);
* ``Converter``: the checkpoint family (``tools/model_converters/convert.py --model``) whose
  official layout the file is in; absent or ``none``: the file already fits the mmattn model.

Files go to ``$MMATTN_CACHE/checkpoints/`` (``MMATTN_CACHE`` defaults to ``~/.cache/mmattn``, as
for ``tools/setup_env.sh``): ``<Name>.pth`` as published, ``<Name>.mmattn.pth`` converted. A file
found there is used without a request, so a machine without internet access can be given the file
by hand. A download that does not match ``SHA256`` is deleted, never cached.
"""
import hashlib
import os
import os.path as osp
import re
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from mmattn.utils.checkpoint import CheckpointError, convert_checkpoint, load_file

CACHE_ENV = 'MMATTN_CACHE'
INDEX_ENV = 'MMATTN_MODEL_INDEX'
UNKNOWN = ('', 'unknown', 'none', 'null')
_PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
_REPO_DIR = osp.dirname(_PACKAGE_DIR)
_GDRIVE = re.compile(r'^https?://(drive|docs)\.google\.com/')


class WeightsUnavailableError(CheckpointError):
    """Published weights that cannot be fetched here; the message names the URL and the path in
    the cache where the file can be put by hand."""


@dataclass
class ModelEntry:
    """One metafile entry of the model index.

    Attributes:
        name: ``Name`` (unique in the index).
        config: absolute path of ``Config``.
        weights: ``Weights`` URL, or ``None`` when no weights are published.
        sha256: expected SHA-256 of the published file (lower case), or ``None`` if unknown.
        converter: checkpoint family whose official layout the file is in, or ``None``.
        metafile: the metafile the entry comes from.
    """
    name: str
    config: str
    weights: Optional[str] = None
    sha256: Optional[str] = None
    converter: Optional[str] = None
    metafile: str = ''
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class ResolvedModel:
    """What :func:`resolve` returns: the config file and the checkpoint (``None``: random init)."""
    config: str
    checkpoint: Optional[str]
    entry: Optional[ModelEntry] = None


# ------------------------------------------------------------------------------------ model index
def cache_dir() -> str:
    """``$MMATTN_CACHE/checkpoints`` (``~/.cache/mmattn/checkpoints`` by default)."""
    root = os.environ.get(CACHE_ENV) or osp.join('~', '.cache', 'mmattn')
    return osp.join(osp.abspath(osp.expanduser(root)), 'checkpoints')


def model_index_path() -> str:
    """``$MMATTN_MODEL_INDEX``, else the repository's ``model-index.yml``, else the package data
    of the openmim convention (``mmattn/.mim/model-index.yml``)."""
    env = os.environ.get(INDEX_ENV)
    if env:
        return osp.abspath(osp.expanduser(env))
    for path in (osp.join(_REPO_DIR, 'model-index.yml'),
                 osp.join(_PACKAGE_DIR, '.mim', 'model-index.yml')):
        if osp.isfile(path):
            return path
    raise FileNotFoundError(f'no model-index.yml next to the mmattn package ({_REPO_DIR}) or in '
                            f'{osp.join(_PACKAGE_DIR, ".mim")}; set {INDEX_ENV}')


def _read_yaml(path: str) -> Any:
    import yaml
    if not osp.isfile(path):
        raise FileNotFoundError(f'model index: file not found: {path}')
    with open(path) as f:
        return yaml.safe_load(f) or {}


def _optional(value: Any) -> Optional[str]:
    if value is None or str(value).strip().lower() in UNKNOWN:
        return None
    return str(value).strip()


def _entry(model: Dict[str, Any], root: str, metafile: str) -> ModelEntry:
    if 'Name' not in model or 'Config' not in model:
        raise ValueError(f'{metafile}: a model entry needs Name and Config, got {sorted(model)}')
    sha = _optional(model.get('SHA256'))
    if sha is not None and not re.fullmatch(r'[0-9a-fA-F]{64}', sha):
        raise ValueError(f'{metafile}: {model["Name"]}: SHA256 must be 64 hex digits or '
                         f'"unknown", got {sha!r}')
    return ModelEntry(name=str(model['Name']), config=osp.join(root, str(model['Config'])),
                      weights=_optional(model.get('Weights')),
                      sha256=sha.lower() if sha else None,
                      converter=_optional(model.get('Converter')), metafile=metafile, raw=model)


def load_model_index(path: Optional[str] = None) -> Dict[str, ModelEntry]:
    """``{Name: entry}`` of every model of the index (its ``Models`` and the metafiles it
    ``Import``s; paths relative to the index's folder). Entries without ``SHA256`` /
    ``Converter`` are accepted (unknown hash, no conversion)."""
    path = path or model_index_path()
    root = osp.dirname(path)
    index = _read_yaml(path)
    files = [(path, index)] + [(osp.join(root, p), None) for p in index.get('Import', [])]
    entries: Dict[str, ModelEntry] = {}
    for file, data in files:
        data = _read_yaml(file) if data is None else data
        for model in data.get('Models') or []:
            entry = _entry(model, root, file)
            if entry.name in entries:
                raise ValueError(f'model index: {entry.name!r} is in both '
                                 f'{entries[entry.name].metafile} and {file}')
            entries[entry.name] = entry
    return entries


def list_models(with_weights: bool = False) -> List[str]:
    """The names of the model index (only those with published weights if ``with_weights``)."""
    return sorted(n for n, e in load_model_index().items() if e.weights or not with_weights)


def find_model(name_or_config: str, index: Optional[Dict[str, ModelEntry]] = None
               ) -> Optional[ModelEntry]:
    """The entry named ``name_or_config``, or whose ``Config`` is that file; ``None`` for a config
    that is not in the index; ``KeyError`` (with close names) for an unknown name."""
    index = load_model_index() if index is None else index
    if name_or_config in index:
        return index[name_or_config]
    if osp.isfile(name_or_config):
        real = osp.realpath(name_or_config)
        for entry in index.values():
            if osp.realpath(entry.config) == real:
                return entry
        return None
    import difflib
    close = difflib.get_close_matches(name_or_config, list(index), n=5, cutoff=0.5)
    raise KeyError(f'{name_or_config!r} is neither a config file nor a model-index name'
                   + (f'; close names: {", ".join(close)}' if close else
                      ' (names: python -c "import mmattn.apis as a; print(a.list_models())")'))


# --------------------------------------------------------------------------------------- download
def sha256_of(path: str) -> str:
    """The SHA-256 (hex) of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _drop_hint(dst: str, sha256: Optional[str]) -> str:
    check = f' (SHA-256 {sha256})' if sha256 else ''
    return (f'download it by hand{check} and put it at {dst}, or pass a local file as weights= '
            '(--weights)')


class _RichBar:
    """A download bar with ``rich`` (mmengine's dependency) where tqdm is not installed."""

    def __init__(self, total: Optional[int], desc: str) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TransferSpeedColumn)
        self.bar = Progress(TextColumn(desc), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn())
        self.bar.start()
        self.task = self.bar.add_task(desc, total=total)

    def update(self, n: int) -> None:
        self.bar.advance(self.task, n)

    def close(self) -> None:
        self.bar.stop()


def _progress(total: Optional[int], desc: str, enabled: bool):
    """A progress bar on stderr (tqdm, else rich) with ``update(n)`` / ``close()``."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with mmdet, not with mmattn itself
        return _RichBar(total, desc)
    return tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024, desc=desc,
                file=sys.stderr)


def _download_http(url: str, tmp: str, desc: str, progress: bool, timeout: float) -> None:
    request = urllib.request.Request(url, headers={'User-Agent': 'mmattn'})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, 'wb') as out:
        length = response.headers.get('Content-Length')
        bar = _progress(int(length) if length else None, desc, progress)
        try:
            for chunk in iter(lambda: response.read(1 << 20), b''):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()


def _download_gdrive(url: str, tmp: str, dst: str, progress: bool, sha256: Optional[str]) -> None:
    try:
        import gdown
    except ImportError:
        raise WeightsUnavailableError(
            f'{url} is a Google Drive link: install gdown (pip install gdown) to fetch it, or '
            + _drop_hint(dst, sha256)) from None
    os.remove(tmp)  # gdown writes the file itself
    try:
        got = gdown.download(url, tmp, quiet=not progress, fuzzy=True)
    except Exception as e:  # noqa: BLE001 - gdown's own errors (quota, permission, network)
        raise OSError(f'gdown: {e}') from None
    if got is None:
        raise OSError('gdown could not fetch the file')


def download(url: str, dst: str, sha256: Optional[str] = None, progress: bool = True,
             timeout: float = 60.0) -> str:
    """Download ``url`` to ``dst`` (a progress bar on stderr; Google Drive links through
    ``gdown``); with ``sha256`` the file must have that digest, else it is deleted and
    :class:`CheckpointError` raised. Returns the digest. An unreachable URL raises
    :class:`WeightsUnavailableError` naming the URL and ``dst``."""
    os.makedirs(osp.dirname(dst), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=osp.basename(dst) + '.', suffix='.part',
                               dir=osp.dirname(dst))
    os.close(fd)
    try:
        try:
            if _GDRIVE.match(url):
                _download_gdrive(url, tmp, dst, progress, sha256)
            else:
                _download_http(url, tmp, osp.basename(dst), progress, timeout)
        except WeightsUnavailableError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) and not isinstance(
                e, urllib.error.HTTPError) else e
            raise WeightsUnavailableError(f'cannot download {url} ({reason}): '
                                          + _drop_hint(dst, sha256)) from None
        digest = sha256_of(tmp)
        if sha256 and digest != sha256:
            raise CheckpointError(f'{url}: the download has SHA-256 {digest}, expected {sha256} '
                                  '(corrupted or changed file; not cached). Try again, or '
                                  + _drop_hint(dst, sha256))
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    _write_stamp(dst, digest)
    return digest


# ------------------------------------------------------------------------------------------ cache
def _stamp_path(path: str) -> str:
    return path + '.sha256'


def _file_key(path: str) -> str:
    st = os.stat(path)
    return f'{st.st_size} {st.st_mtime_ns}'


def _write_stamp(path: str, digest: str) -> None:
    with open(_stamp_path(path), 'w') as f:
        f.write(f'{digest} {_file_key(path)}\n')


def verified_sha256(path: str, expected: Optional[str], origin: str) -> str:
    """The SHA-256 of a cached file, hashed once per file version (a ``.sha256`` stamp beside it
    remembers it); a file that does not match ``expected`` raises :class:`CheckpointError`."""
    digest = None
    if osp.isfile(_stamp_path(path)):
        with open(_stamp_path(path)) as f:
            parts = f.read().split(' ', 1)
        if len(parts) == 2 and parts[1].strip() == _file_key(path):
            digest = parts[0]
    if digest is None:
        digest = sha256_of(path)
        _write_stamp(path, digest)
    if expected and digest != expected:
        raise CheckpointError(f'{path} has SHA-256 {digest}, expected {expected} (the file of '
                              f'{origin}); delete it to download it again')
    return digest


def _url_name(url: str) -> str:
    from urllib.parse import urlparse
    base = osp.basename(urlparse(url).path)
    return base if '.' in base else hashlib.sha256(url.encode()).hexdigest()[:16] + '.pth'


def fetch(url: str, filename: Optional[str] = None, sha256: Optional[str] = None,
          progress: bool = True) -> str:
    """The cached file of ``url`` (``cache_dir()/filename``), downloaded if absent; its SHA-256
    checked against ``sha256`` (when given) once per file version."""
    from mmengine.logging import print_log
    dst = osp.join(cache_dir(), filename or _url_name(url))
    if osp.isfile(dst):
        digest = verified_sha256(dst, sha256, url)
    else:
        print_log(f'downloading {url} to {dst}', logger='current')
        digest = download(url, dst, sha256, progress)
    if not sha256:
        print_log(f'{dst}: SHA-256 {digest} (not checked: the model index does not give it)',
                  logger='current')
    return dst


# ------------------------------------------------------------------------------------- conversion
def convert_cached(src: str, family: str, dst: str, digest: str) -> str:
    """Convert the official file ``src`` with the ``family`` converter
    (:func:`mmattn.utils.checkpoint.convert_checkpoint`, as ``tools/model_converters/convert.py``)
    into ``dst`` once; the dataset meta (classes) of ``src`` is kept."""
    from mmengine.logging import print_log
    if osp.isfile(dst):
        meta = load_file(dst, map_location='meta').get('meta', {})
        if meta.get('source_sha256') == digest:
            return dst
    out = convert_checkpoint(family, src)
    meta = load_file(src, map_location='meta')
    old = meta.get('meta', {}) if isinstance(meta, dict) else {}
    for key in ('dataset_meta', 'CLASSES', 'PALETTE'):
        if key in old:
            out['meta'][key] = old[key]
    out['meta']['source_sha256'] = digest
    tmp = dst + '.part'
    torch.save(out, tmp)
    os.replace(tmp, dst)
    print_log(f'converted {src} ({family}, official layout) to {dst}', logger='current')
    return dst


def checkpoint_of(entry: ModelEntry, progress: bool = True) -> str:
    """The local checkpoint of a model-index entry, in mmattn's layout: fetched (or found in the
    cache), hash-checked, converted if the entry names a converter."""
    if not entry.weights:
        raise CheckpointError(f'{entry.name}: no published weights in {entry.metafile}')
    ext = osp.splitext(_url_name(entry.weights))[1]
    ext = ext if ext in ('.pth', '.pt', '.bin', '.ckpt', '.tar') else '.pth'
    raw = fetch(entry.weights, entry.name + ext, entry.sha256, progress)
    if not entry.converter:
        return raw
    digest = verified_sha256(raw, entry.sha256, entry.weights)
    return convert_cached(raw, entry.converter, osp.join(cache_dir(), entry.name + '.mmattn.pth'),
                          digest)


def resolve(model_name_or_config: str, weights: Optional[str] = None, progress: bool = True,
            index_weights: bool = True) -> ResolvedModel:
    """Config and checkpoint of a model-index name or a config path.

    ``weights`` (a path or an http(s) URL) overrides the index; without it a name (or a config
    listed in the index) gets its published weights (:func:`checkpoint_of`; a config only with
    ``index_weights``), and a config without published weights gets ``None`` (random
    initialisation).
    """
    entry = find_model(model_name_or_config)
    config = entry.config if entry is not None else model_name_or_config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    if weights:
        if re.match(r'^https?://', weights):
            weights = fetch(weights, progress=progress)
        elif not osp.isfile(weights):
            raise FileNotFoundError(f'checkpoint not found: {weights}')
        return ResolvedModel(config, weights, entry)
    by_name = entry is not None and model_name_or_config == entry.name
    if entry is None or not entry.weights or not (by_name or index_weights):
        return ResolvedModel(config, None, entry)
    return ResolvedModel(config, checkpoint_of(entry, progress), entry)


__all__ = ['CACHE_ENV', 'INDEX_ENV', 'ModelEntry', 'ResolvedModel', 'WeightsUnavailableError',
           'cache_dir', 'checkpoint_of', 'convert_cached', 'download', 'fetch', 'find_model',
           'list_models', 'load_model_index', 'model_index_path', 'resolve', 'sha256_of',
           'verified_sha256']
