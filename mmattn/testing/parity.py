"""Deterministic weights for parity fixtures.

A fixture (``*.pt`` beside this file) records an official model's state_dict
*layout* (names, shapes, dtypes, roles), the few buffers that cannot be
regenerated, fixed inputs, and the outputs the official implementation produced
when loaded with the weights that ``state_dict_from_fixture`` generates.

A faithful re-implementation, loaded with the same generated weights (through its
checkpoint converter, if its key names differ), must reproduce those outputs.

    fx = torch.load('biformer_tiny.cls.pt', weights_only=True)
    official_sd = state_dict_from_fixture(fx)     # official key names
    model.load_state_dict(convert(official_sd))   # your converter
    model.eval(); out = model(fx['inputs']['224x224'])
    compare(out, fx['outputs']['224x224'])

Roles: 'param' (learned), 'running_mean' / 'running_var' / 'num_batches_tracked'
(BatchNorm statistics), 'buffer' (stored verbatim in fx['buffers']) and 'derived'
(a buffer the model computes from its config, e.g. attn_mask or
relative_position_index: not generated; a converter drops it).
"""
import zlib
from collections import OrderedDict

import os.path as osp

import torch

FIXTURE_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tests', 'data',
                       'parity')


def _generator(seed: int, key: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))


def generate(key: str, shape, dtype: str, role: str, seed: int = 0) -> torch.Tensor:
    """The value of one state_dict entry, a pure function of (key, shape, role, seed)."""
    g = _generator(seed, key)
    shape = tuple(shape)
    if role == 'num_batches_tracked':
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    if role == 'running_mean':
        return 0.1 * torch.randn(shape, generator=g)
    if role == 'running_var':
        return 0.5 + torch.rand(shape, generator=g)
    if role != 'param':
        raise ValueError(f'{key}: role {role!r} is not generated')
    if len(shape) <= 1:
        base = 1.0 if key.endswith('weight') else 0.0
        return base + 0.1 * torch.randn(shape, generator=g)
    fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
    return torch.randn(shape, generator=g) * fan_in ** -0.5


def state_dict_from_fixture(fx: dict) -> 'OrderedDict[str, torch.Tensor]':
    """The official-layout state_dict of a fixture: generated entries plus stored buffers."""
    sd = OrderedDict()
    for key, shape, dtype, role in fx['spec']:
        if role == 'derived':
            continue
        if role == 'buffer':
            sd[key] = fx['buffers'][key]
        else:
            sd[key] = generate(key, shape, dtype, role, fx['seed'])
    return sd


def max_rel_error(got, expected) -> float:
    """Worst |got - expected| over max|expected|, across a tensor or a sequence of tensors; NaN
    when any compared value is NaN (so that ``err <= tol`` fails)."""
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    if len(got) != len(expected):
        raise AssertionError(f'{len(got)} outputs, expected {len(expected)}')
    worst = 0.0
    for g, e in zip(got, expected):
        if tuple(g.shape) != tuple(e.shape):
            raise AssertionError(f'shape {tuple(g.shape)}, expected {tuple(e.shape)}')
        err = float((g.detach().double() - e.double()).abs().max())
        rel = err / (float(e.abs().max()) + 1e-12)
        if rel != rel:  # NaN: max() would drop it
            return float('nan')
        worst = max(worst, rel)
    return worst


def load_fixture(name: str) -> dict:
    """Load ``tests/data/parity/<name>.pt`` (e.g. ``'poolformer_s12.dense'``)."""
    path = name if osp.isfile(name) else osp.join(FIXTURE_DIR, f'{name}.pt')
    if not osp.isfile(path):
        raise FileNotFoundError(f'parity fixture not found: {path}')
    return torch.load(path, weights_only=True)
