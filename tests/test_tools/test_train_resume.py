"""Short real training runs: train + resume (in-process and after a kill), DDP on gloo."""
import glob
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

import mmattn  # noqa: F401
from mmattn.utils.runner import build_runner

from ._utils import (DET_CONFIG, LIDAR_CONFIG, ROOT, SEG_CONFIG, data_options, iter_config,
                     run_tool)

pytestmark = pytest.mark.slow


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.mark.parametrize('config', [DET_CONFIG, SEG_CONFIG, LIDAR_CONFIG],
                         ids=['det', 'seg', 'lidar'])
def test_train_two_iterations_then_resume(tmp_path, config):
    work = str(tmp_path)
    runner = build_runner(iter_config(config, work, 2))
    runner.train()
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    ckpt2 = _weights(osp.join(work, 'iter_2.pth'))
    assert ckpt2['meta']['iter'] == 2

    cfg = iter_config(config, work, 3)
    cfg.resume = True  # load_from=None: the latest checkpoint in the work dir
    runner = build_runner(cfg)
    runner.train()
    ckpt3 = _weights(osp.join(work, 'iter_3.pth'))
    assert ckpt3['meta']['iter'] == 3
    # the optimizer state came back: AdamW's step counter continued from 2
    steps = [s['step'] for s in ckpt3['optimizer']['state'].values()]
    assert steps and all(int(s) == 3 for s in steps)


def test_training_killed_midway_resumes(tmp_path):
    """A real `tools/train.py` process is killed after its first checkpoint and resumed."""
    work = str(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    opts = data_options(num_train=8, num_val=2) + [
        'train_cfg.max_epochs=100', 'train_cfg.val_interval=100',
        'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5']
    proc = subprocess.Popen([sys.executable, 'tools/train.py', DET_CONFIG, '--work-dir', work,
                             '--cfg-options', *opts], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not osp.isfile(osp.join(work, 'epoch_1.pth')) and time.time() < deadline:
            assert proc.poll() is None, 'training exited before its first checkpoint'
            time.sleep(0.5)
        time.sleep(1.0)  # let the checkpoint file be complete
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))

    res = run_tool(['tools/train.py', DET_CONFIG, '--work-dir', work, '--resume',
                    '--cfg-options', *[o.replace('max_epochs=100', 'max_epochs=2') for o in opts]])
    assert res.returncode == 0, res.stderr[-3000:]
    logs = ''.join(open(f).read() for f in glob.glob(osp.join(work, '*', '*.log')))
    assert 'resumed epoch: 1, iter: 4' in logs
    assert _weights(osp.join(work, 'epoch_2.pth'))['meta']['epoch'] == 2


def test_ddp_two_processes_gloo(tmp_path):
    work = str(tmp_path)
    opts = data_options(num_train=8, num_val=4) + ['train_cfg.max_epochs=1']
    res = run_tool(['bash', 'tools/dist_train.sh', DET_CONFIG, '2', '--work-dir', work,
                    '--cfg-options', *opts])
    assert res.returncode == 0, res.stderr[-3000:]
    logs = ''.join(open(f).read() for f in glob.glob(osp.join(work, '*', '*.log')))
    assert 'Distributed training: True' in logs and 'GPU number: 2' in logs  # = world size
    assert "dist_cfg: {'backend': 'gloo'}" in logs
    assert 'Epoch(train) [1][2/2]' in logs  # 8 images over 2 processes, batch 2 each
    assert 'Epoch(val) [1][1/1]' in logs  # distributed val: 4 images over 2 processes
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
