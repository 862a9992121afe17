"""The contract every 2D backbone follows (see ``README.md`` in this folder).

Small pieces shared by :class:`BiFormer`, :class:`PoolFormer`, :class:`AgentSwinTransformer` and
:class:`SLABSwinTransformer`: arch parsing, argument checks, ``frozen_stages`` / ``norm_eval``
handling in ``train()``, and activation checkpointing that leaves module state untouched.
"""
from contextlib import contextmanager
from typing import Iterator, List, Mapping, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['BackboneMixin', 'parse_arch', 'reject_kwargs', 'parse_out_indices',
           'drop_path_rates', 'checkpoint_call', 'maybe_checkpoint']


def parse_arch(arch: Union[str, dict], zoo: Mapping[str, dict], required: Sequence[str],
               optional: Sequence[str], name: str) -> dict:
    """``arch`` (a name from ``zoo`` or a dict) as a new dict; unknown or missing keys raise."""
    if isinstance(arch, str):
        if arch.lower() not in zoo:
            raise ValueError(f'unknown {name} arch {arch!r}; choose from {sorted(zoo)} or pass '
                             f'a dict with {sorted(required)}')
        return dict(zoo[arch.lower()])
    if not isinstance(arch, Mapping):
        raise TypeError(f'{name}: arch must be a str or a dict, got {type(arch).__name__}')
    missing = sorted(set(required) - set(arch))
    unknown = sorted(set(arch) - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(f'{name}: arch dict ' + (f'lacks {missing}' if missing else '')
                         + ('; ' if missing and unknown else '')
                         + (f'has unknown keys {unknown}' if unknown else '')
                         + f' (required {sorted(required)}, optional {sorted(optional)})')
    return dict(arch)


def reject_kwargs(name: str, kwargs: Mapping[str, object], hints: Mapping[str, str]) -> None:
    """Raise one TypeError for every argument the constructor does not take.

    ``hints`` maps old / official argument names to what to pass instead.
    """
    if not kwargs:
        return
    lines = [f'  {k}: {hints[k]}' if k in hints else f'  {k}: unknown argument' for k in kwargs]
    raise TypeError(f'{name} got unsupported arguments:\n' + '\n'.join(lines))


def parse_out_indices(out_indices: Union[int, Sequence[int]], num_stages: int,
                      name: str) -> Tuple[int, ...]:
    """Stage indices (negative allowed) -> sorted unique tuple in ``[0, num_stages)``."""
    if isinstance(out_indices, int):
        out_indices = (out_indices, )
    out = sorted({int(i) + num_stages if int(i) < 0 else int(i) for i in out_indices})
    if not out or out[0] < 0 or out[-1] >= num_stages:
        raise ValueError(f'{name}: out_indices {tuple(out_indices)} must be non-empty stage '
                         f'indices in [-{num_stages}, {num_stages})')
    return tuple(out)


def drop_path_rates(rate: float, num_blocks: int) -> List[float]:
    """Stochastic depth per block, linear from 0 to ``rate`` (no tensor: fine on ``meta``)."""
    return [rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]


class BackboneMixin:
    """``frozen_stages`` and ``norm_eval`` for a :class:`~mmengine.model.BaseModule` backbone.

    A subclass sets ``self.frozen_stages`` and ``self.norm_eval`` and implements
    :meth:`_stage_modules` (``-1``: the stem; ``i``: what stage ``i``'s output needs beyond
    stage ``i - 1``'s, its output norm included).
    """
    frozen_stages: int
    norm_eval: bool
    num_stages: int

    def _stage_modules(self, i: int) -> List[nn.Module]:
        raise NotImplementedError

    def _check_frozen_stages(self, frozen_stages: int, num_stages: int) -> int:
        if not -1 <= int(frozen_stages) <= num_stages:
            raise ValueError(f'{type(self).__name__}: frozen_stages={frozen_stages} must be in '
                             f'[-1, {num_stages}] (-1 nothing, 0 the stem, k the stem and stages '
                             f'0..k-1)')
        return int(frozen_stages)

    def _freeze_stages(self) -> None:
        """Stem (``frozen_stages >= 0``) and stages ``0..frozen_stages-1``: eval, no grad."""
        for i in range(-1, self.frozen_stages):
            for m in self._stage_modules(i):
                m.eval()
                m.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():  # type: ignore[attr-defined]
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


def _state_slots(module: nn.Module) -> List[Tuple[nn.Module, str, bool]]:
    """(module, name, is_buffer) of the state a forward may change: persistent buffers
    (BatchNorm statistics) and plain Python numbers (PRepBN's schedule counters)."""
    out = []
    for m in module.modules():
        out += [(m, n, True) for n, b in m._buffers.items()
                if b is not None and n not in m._non_persistent_buffers_set]
        out += [(m, n, False) for n, v in vars(m).items()
                if type(v) in (int, float) and n != 'training']
    return out


def _get(m: nn.Module, name: str, is_buffer: bool):
    return m._buffers[name] if is_buffer else vars(m)[name]


def _set(m: nn.Module, name: str, is_buffer: bool, value) -> None:
    if is_buffer:
        m._buffers[name] = value
    else:
        vars(m)[name] = value


def checkpoint_call(module: nn.Module, *args):
    """``module(*args)`` under activation checkpointing, with the recomputation stateless.

    The backward recomputation sees the module state (persistent buffers such as BatchNorm
    statistics, Python-number attributes such as PRepBN's counters) as it was in the forward
    pass, and its own updates to that state are discarded: outputs, gradients and module state
    equal those without checkpointing. (Plain ``torch.utils.checkpoint`` runs a self-stepping
    PRepBN twice per step, with a different blend weight in the recomputation.)
    """
    slots = _state_slots(module)
    before: list = []

    @contextmanager
    def forward_ctx() -> Iterator[None]:
        before[:] = [v.clone() if isinstance(v, torch.Tensor) else v
                     for v in (_get(*s) for s in slots)]
        yield

    @contextmanager
    def recompute_ctx() -> Iterator[None]:
        # swap tensors rather than copying in place: the recomputed graph may save them
        after = [_get(*s) for s in slots]
        for s, v in zip(slots, before):
            _set(*s, v)
        try:
            yield
        finally:
            for s, v in zip(slots, after):
                _set(*s, v)

    return cp.checkpoint(module, *args, use_reentrant=False,
                         context_fn=lambda: (forward_ctx(), recompute_ctx()))


def maybe_checkpoint(module: nn.Module, with_cp: bool, training: bool, *args):
    """``module(*args)``, through :func:`checkpoint_call` when ``with_cp``, ``training`` (the
    block's mode: frozen blocks are in eval) and gradients are being recorded."""
    if with_cp and training and torch.is_grad_enabled():
        return checkpoint_call(module, *args)
    return module(*args)
