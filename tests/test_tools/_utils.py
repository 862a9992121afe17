"""Helpers for the tool tests: short runs of real configs on the sample data."""
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Optional

from mmengine.config import Config

from mmattn.testing.runs import short_run_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(ROOT, 'configs/sample/fcos_r18_fpn_sample-coco.py')
SEG_CONFIG = osp.join(ROOT, 'configs/sample/fpn_r18_sample-cityscapes.py')
LIDAR_CONFIG = osp.join(ROOT, 'configs/scatterformer/scatterformer_sample-waymo.py')


def data_options(num_train: int = 4, num_val: int = 2, batch_size: int = 2) -> List[str]:
    """``--cfg-options`` that shrink a sample config's data to a few images, in-process loaders."""
    opts = [f'train_dataloader.batch_size={batch_size}', f'train_dataloader.dataset.indices={num_train}',
            f'val_dataloader.dataset.indices={num_val}', f'test_dataloader.dataset.indices={num_val}']
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{key}.num_workers=0', f'{key}.persistent_workers=False']
    return opts


def iter_config(path: str, work_dir: str, iters: int, num_train: int = 4, num_val: int = 2,
                batch_size: int = 2) -> Config:
    """A sample config cut to ``iters`` training iterations, a checkpoint after each iteration."""
    return short_run_config(path, work_dir, iters, num_train=num_train, num_val=num_val,
                            batch_size=batch_size, checkpoint_interval=1)


def run_tool(args: List[str], timeout: float = 900, env: Optional[Dict[str, str]] = None,
             **popen) -> subprocess.CompletedProcess:
    """Run ``python tools/...`` (or a shell script) from the repository root with this Python;
    ``env`` adds to (or overrides) the inherited environment."""
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PATH=osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
               **(env or {}))
    cmd = args if args[0] == 'bash' else [sys.executable, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, **popen)
