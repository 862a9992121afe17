"""Short real training runs: train + resume (in-process and after a kill), DDP on gloo."""
import glob
import json
import os
import os.path as osp
import signal
import socket

import pytest
import torch

import mmattn  # noqa: F401
from mmattn.utils.checkpoint import load_file
from mmattn.utils.runner import build_runner

from ._utils import (DET_CONFIG, LIDAR_CONFIG, ROOT, SEG_CONFIG, data_options, iter_config,
                     run_tool)

pytestmark = pytest.mark.slow


def _weights(path):
    """A Runner checkpoint, read as every checkpoint is: weights_only=True + mmengine's classes."""
    return load_file(path, map_location='cpu')


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


def _scalars(work: str) -> dict:
    """{iteration: logged training loss} of a work dir (mmengine's vis_data/scalars.json)."""
    losses = {}
    for path in glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')):
        for line in open(path):
            row = json.loads(line)
            if 'loss' in row:
                losses[row['iter']] = row['loss']
    return losses


def test_training_killed_midway_resumes(tmp_path):
    """A real `tools/train.py` process dies right after its epoch-1 checkpoint (a hook SIGKILLs it:
    the same point on any machine), is resumed, and continues exactly as an uninterrupted run:
    the same losses at every later iteration and bit-identical final weights."""
    opts = data_options(num_train=8, num_val=2) + [
        'train_cfg.max_epochs=3', 'train_cfg.val_interval=100', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5']
    killing = tmp_path / 'killed_after_epoch_1.py'
    killing.write_text(f'_base_ = [{DET_CONFIG!r}]\n'
                       "custom_imports = dict(imports=['mmattn.models', 'test_tools._kill_hook'], "
                       'allow_failed_imports=False)\n'
                       "custom_hooks = [dict(type='KillAfterEpochHook', epoch=1)]\n")
    env = dict(PYTHONPATH=os.pathsep.join(filter(None, [osp.join(ROOT, 'tests'),
                                                       os.environ.get('PYTHONPATH')])))
    straight, killed = str(tmp_path / 'straight'), str(tmp_path / 'killed')

    res = run_tool(['tools/train.py', DET_CONFIG, '--work-dir', straight, '--cfg-options', *opts])
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_tool(['tools/train.py', str(killing), '--work-dir', killed, '--cfg-options', *opts],
                   env=env)
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stderr[-3000:])
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(killed, '*.pth'))) == ['epoch_1.pth']

    res = run_tool(['tools/train.py', DET_CONFIG, '--work-dir', killed, '--resume',
                    '--cfg-options', *opts])
    assert res.returncode == 0, res.stderr[-3000:]
    logs = ''.join(open(f).read() for f in glob.glob(osp.join(killed, '*', '*.log')))
    assert 'resumed epoch: 1, iter: 4' in logs
    assert "restored the random generators' states" in logs

    expected, got = _scalars(straight), _scalars(killed)
    assert sorted(expected) == list(range(1, 13)), sorted(expected)
    assert sorted(got) == list(range(1, 13)), sorted(got)  # 1-4 before the kill, 5-12 resumed
    assert [got[i] for i in range(5, 13)] == [expected[i] for i in range(5, 13)]
    a = _weights(osp.join(straight, 'epoch_3.pth'))['state_dict']
    b = _weights(osp.join(killed, 'epoch_3.pth'))['state_dict']
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def _free_port() -> int:
    """A TCP port nobody listens on now (torchrun's store must not meet another run's)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_ddp_two_processes_gloo(tmp_path):
    work = str(tmp_path)
    opts = data_options(num_train=8, num_val=4) + ['train_cfg.max_epochs=1']
    res = run_tool(['bash', 'tools/dist_train.sh', DET_CONFIG, '2', '--work-dir', work,
                    '--cfg-options', *opts], env=dict(PORT=str(_free_port())))
    assert res.returncode == 0, res.stderr[-3000:]
    # every rank ended cleanly (tools/train.py closes the process group after training)
    assert 'terminate called' not in res.stderr and 'SIGABRT' not in res.stderr, res.stderr[-3000:]
    logs = ''.join(open(f).read() for f in glob.glob(osp.join(work, '*', '*.log')))
    assert 'Distributed training: True' in logs and 'GPU number: 2' in logs  # = world size
    assert "dist_cfg: {'backend': 'gloo'}" in logs
    assert 'Epoch(train) [1][2/2]' in logs  # 8 images over 2 processes, batch 2 each
    assert 'Epoch(val) [1][1/1]' in logs  # distributed val: 4 images over 2 processes
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
