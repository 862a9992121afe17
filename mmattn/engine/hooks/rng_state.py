"""Runner hook that saves the random number generators' states in checkpoints and restores them on
resume, so that a run killed after a checkpoint continues exactly as the uninterrupted run would.

mmengine seeds the generators once at start-up and re-creates the sampler's order from
``seed + epoch``, but the global generators that data augmentation draws from in the main process
(``random``, ``numpy.random``, ``torch``) restart from the seed after a resume, so e.g. the flips
of the epochs after the checkpoint differ from the uninterrupted run's. Dataloader workers are
re-seeded by mmengine from the seed at each epoch and need nothing.

The states are stored in ``checkpoint['meta']['rng_state']`` as tensors and plain Python values, so
the checkpoint still loads with ``torch.load(weights_only=True)``. In distributed runs the master's
states (saved by rank 0) are restored on every rank, which is right when the ranks share one seed
(mmengine's default, ``diff_rank_seed=False``).
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook

from mmattn.registry import HOOKS

__all__ = ['RNGStateHook', 'get_rng_state', 'set_rng_state']


def get_rng_state() -> dict:
    """The states of ``random``, ``numpy.random``, torch's CPU and CUDA generators."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(python=(version, torch.tensor(mt, dtype=torch.int64), gauss),
                 numpy=(name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                        float(cached)),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, mt, gauss = state['python']
    random.setstate((version, tuple(int(v) for v in mt.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the generators' states with every checkpoint; restore them when resuming.

    :class:`mmattn.utils.runner.MMAttnRunner` registers it (``tools/train.py`` uses that runner), so
    configs need not list it. A checkpoint without the states (an older or foreign one) resumes
    as before, with the generators as mmengine left them.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['rng_state'] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # ``load_from`` without ``resume`` only loads weights: the generators stay as seeded
        if getattr(runner, '_resume', False):
            self._pending = (checkpoint.get('meta') or {}).get('rng_state')

    def before_train(self, runner) -> None:
        # applied here, not on load: ``Runner.resume`` may re-seed after loading the checkpoint
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None
            runner.logger.info("restored the random generators' states from the checkpoint")
