"""The main job's config really learns: its training loss falls on the sample data."""
import numpy as np
import pytest

import mmattn  # noqa: F401
from mmattn.utils.runner import build_runner

from ._utils import DET_CONFIG, iter_config

pytestmark = pytest.mark.slow


def test_main_job_training_lowers_the_loss(tmp_path):
    cfg = iter_config(DET_CONFIG, str(tmp_path), 60, num_train=240, batch_size=4)
    cfg.optim_wrapper.optimizer.lr = 2e-3
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1000)
    runner = build_runner(cfg)
    runner.train()
    losses = np.array(runner.message_hub.get_scalar('train/loss').data[0])
    assert len(losses) == 60
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert np.isfinite(losses).all()
    assert last < 0.8 * first, f'loss went from {first:.3f} to {last:.3f}'
