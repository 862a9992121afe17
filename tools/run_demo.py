"""The main job: train a detector on the bundled sample COCO data, evaluate COCO bbox mAP on the
held-out val split and draw its predictions on the val images to PNGs.

    python tools/run_demo.py [--config CONFIG] [--work-dir DIR]     (what `make demo` runs)
"""
import argparse
import glob
import json
import os.path as osp
import time

import mmattn  # noqa: F401  (compatibility patches)
from mmattn.utils.checkpoint import check_checkpoint
from mmattn.utils.runner import build_runner, check_data_paths, enable_visualization, load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default='configs/sample/fcos_r18_fpn_sample-coco.py')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--score-thr', type=float, default=0.3)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    t0 = time.time()
    cfg = load_config(args.config)
    cfg.work_dir = args.work_dir
    check_data_paths(cfg)
    runner = build_runner(cfg)
    runner.train()
    t_train = time.time() - t0

    with open(osp.join(args.work_dir, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    vis_dir = osp.abspath(osp.join(args.work_dir, 'vis'))
    cfg = load_config(args.config)
    cfg.work_dir = args.work_dir
    cfg.load_from = ckpt
    enable_visualization(cfg, show_dir=vis_dir, score_thr=args.score_thr)
    runner = build_runner(cfg)
    check_checkpoint(runner.model, ckpt)
    metrics = runner.test()
    pngs = sorted(glob.glob(osp.join(vis_dir, '*.png')))
    summary = dict(config=args.config, checkpoint=ckpt, train_seconds=round(t_train, 1),
                   total_seconds=round(time.time() - t0, 1), visualizations=vis_dir,
                   num_pngs=len(pngs), **{k: float(v) for k, v in metrics.items()})
    with open(osp.join(args.work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print('\n==== mmattn demo ====')
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        if key in summary:
            print(f'{key:>18}: {summary[key]:.3f}')
    print(f'train time: {t_train / 60:.1f} min; total {summary["total_seconds"] / 60:.1f} min')
    print(f'{len(pngs)} PNGs with predictions in {vis_dir}')
    print(f'summary: {osp.join(args.work_dir, "demo_summary.json")}')


if __name__ == '__main__':
    main()
