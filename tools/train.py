"""Train a model from an mmattn (or any mmdet / mmseg / mmdet3d) config with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG NUM_PROCS [args...]          # torchrun; gloo on CPU
"""
import argparse
import os
import os.path as osp
import warnings

from mmengine.config import Config, DictAction
from mmengine.runner import find_latest_checkpoint

import mmattn  # noqa: F401  (applies mmattn's compatibility patches before any config is read)
from mmattn.datasets.check import check_datasets
from mmattn.utils.checkpoint import check_checkpoint
from mmattn.utils.dist import close_process_group
from mmattn.utils.runner import build_runner, check_data_paths, load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model with mmengine Runner')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir '
                        'when no path is given')
    parser.add_argument('--amp', action='store_true', help='mixed precision (CUDA only)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual total batch size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    cfg: Config = load_config(args.config, args.cfg_options, args.launcher)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError(f'{args.config}: --auto-scale-lr needs `auto_scale_lr.base_batch_size` '
                           'in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
        if find_latest_checkpoint(cfg.work_dir) is None:
            warnings.warn(f'--resume: no checkpoint in {cfg.work_dir}; training starts from '
                          'scratch')
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume

    check_data_paths(cfg, ('train_dataloader', 'val_dataloader'))
    check_datasets(cfg, ('train_dataloader', 'val_dataloader'))
    runner = build_runner(cfg)
    if cfg.get('load_from'):  # tools/test.py's rule: a checkpoint of another model is rejected
        check_checkpoint(runner.model, cfg.load_from)
    runner.train()
    close_process_group()


if __name__ == '__main__':
    main()
