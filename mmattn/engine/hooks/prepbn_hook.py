"""Runner hook that drives SLAB's progressive re-parameterised BatchNorm (PRepBN) schedule."""
from typing import Optional, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmattn.models.layers.prepbn import LinearNorm
from mmattn.registry import HOOKS

__all__ = ['PRepBNHook']


@HOOKS.register_module()
class PRepBNHook(Hook):
    """Set every :class:`LinearNorm`'s LayerNorm -> RepBN blend from the runner's iteration.

    Before training step ``t`` (``runner.iter``, 0-based) each PRepBN gets the counters that
    ``t`` self-advancing training forwards would have left (the official schedule): LayerNorm
    only while ``t < warmup_iters``, then ``lam = r0 * max(0, 1 - (t - warmup_iters) /
    total_iters)``. The modules stop advancing their own counters, so the schedule follows the
    optimiser steps whatever the number of forwards per step (gradient checkpointing, gradient
    accumulation) and survives resuming.

    Args:
        total_iters: decay length in iterations; a float in (0, 1] is a fraction of
            ``runner.max_iters`` (the SLAB authors suggest ~0.8 for short schedules); None
            keeps each module's own ``total_step``.
        warmup_iters: LayerNorm-only iterations before the decay.
        r0: LayerNorm weight at the start of the decay; None keeps each module's own.

    Usage: ``custom_hooks = [dict(type='mmattn.PRepBNHook', total_iters=0.8)]``.
    """

    priority = 'NORMAL'

    def __init__(self, total_iters: Optional[Union[int, float]] = None, warmup_iters: int = 0,
                 r0: Optional[float] = None) -> None:
        if total_iters is not None and total_iters <= 0:
            raise ValueError(f'PRepBNHook: total_iters must be positive, got {total_iters}')
        if isinstance(total_iters, float) and total_iters > 1:
            raise ValueError(f'PRepBNHook: a float total_iters is a fraction of max_iters in '
                             f'(0, 1], got {total_iters}')
        if warmup_iters < 0:
            raise ValueError(f'PRepBNHook: warmup_iters must be >= 0, got {warmup_iters}')
        self.total_iters = total_iters
        self.warmup_iters = int(warmup_iters)
        self.r0 = r0
        self._norms = []
        self._total: Optional[int] = None

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._norms = [m for m in model.modules() if isinstance(m, LinearNorm)]
        if not self._norms:
            raise RuntimeError('PRepBNHook: the model has no PRepBN (LinearNorm) module')
        if isinstance(self.total_iters, float):
            self._total = max(1, int(round(self.total_iters * runner.max_iters)))
        else:
            self._total = self.total_iters
        for m in self._norms:
            m.self_step = False
            if self.r0 is not None:
                m.r0 = float(self.r0)
        runner.logger.info(
            f'PRepBNHook: {len(self._norms)} PRepBN modules, warm-up {self.warmup_iters} iters, '
            f'decay over {self._total if self._total is not None else "each module own"} iters')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        step = runner.iter
        for m in self._norms:
            m.set_step(step, self.warmup_iters, self._total)

    def after_train(self, runner) -> None:
        for m in self._norms:
            m.self_step = True
