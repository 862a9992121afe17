"""Evaluate a checkpoint on a config's test split, optionally drawing predictions to PNGs.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out FILE.pkl]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [args...]
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

import mmattn  # noqa: F401  (applies mmattn's compatibility patches before any config is read)
from mmattn.datasets.check import check_datasets
from mmattn.utils.checkpoint import check_checkpoint
from mmattn.utils.dist import close_process_group
from mmattn.utils.runner import (build_runner, check_data_paths, enable_visualization,
                                 load_config)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--out', help='dump raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='draw predictions (and ground truth) as PNGs here')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds per shown image')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='lowest score of a drawn detection')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. test_dataloader.batch_size=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg: Config = load_config(args.config, args.cfg_options, args.launcher)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show_dir, args.show, args.wait_time, args.score_thr)

    check_data_paths(cfg, ('test_dataloader', ))
    check_datasets(cfg, ('test_dataloader', ))
    runner = build_runner(cfg)
    check_checkpoint(runner.model, args.checkpoint)
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file, got {args.out}')
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()
    close_process_group()


if __name__ == '__main__':
    main()
