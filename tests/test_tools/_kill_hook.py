"""A hook that kills its own training process right after a given epoch's checkpoint is written:
a crash at a known point, whatever the speed of the machine (imported through the config's
``custom_imports`` by tests/test_tools/test_train_resume.py)."""
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterEpochHook(Hook):
    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) has saved the epoch's checkpoint

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:  # runner.epoch counts from 0 until the epoch ends
            os.kill(os.getpid(), signal.SIGKILL)
