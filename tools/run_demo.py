"""The main job: train a detector on the bundled sample COCO data, evaluate COCO bbox mAP on the
held-out val split, draw its predictions on the val images to PNGs, then run the inference path a
user runs on their own images (``tools/demo.py CONFIG --weights CKPT``) on three val images.

    python tools/run_demo.py [--config CONFIG] [--work-dir DIR]     (what `make demo` runs)

It prints (and writes to ``demo_summary.json``) which mmattn backbone and arch the detector has and
which backends of mmattn's custom ops (BRA, SLA, sparse conv) ran during the evaluation.
"""
import argparse
import contextlib
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Set

import torch.nn as nn

import mmattn  # noqa: F401  (compatibility patches)
from mmattn.utils.checkpoint import check_checkpoint
from mmattn.utils.runner import build_runner, check_data_paths, enable_visualization, load_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = 'configs/sample/fcos_poolformer-s12-half_fpn_sample-coco.py'
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--num-inference', type=int, default=3,
                        help='val images sent through tools/demo.py after training')
    return parser.parse_args()


def describe_backbone(model: nn.Module, backbone_cfg: dict) -> dict:
    """Type, arch, stage depths / widths and parameter counts of ``model.backbone``."""
    backbone = model.backbone
    arch = backbone_cfg.get('arch')
    info = dict(type=str(backbone_cfg.get('type', type(backbone).__name__)),
                mmattn=type(backbone).__module__.startswith('mmattn.'),
                arch=arch.to_dict() if hasattr(arch, 'to_dict') else arch,
                backbone_params_m=round(sum(p.numel() for p in backbone.parameters()) / 1e6, 2),
                detector_params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))
    for key in ('depths', 'embed_dims'):
        if hasattr(backbone, key):
            info[key] = [int(v) for v in getattr(backbone, key)]
    return info


@contextlib.contextmanager
def record_op_backends() -> Iterator[Dict[str, Set[str]]]:
    """``{op: {backend, ...}}`` of every mmattn custom-op call (BRA, SLA, sparse conv) made inside
    the block, as chosen by :func:`mmattn.ops.dispatch.choose_backend`."""
    from mmattn.ops import dispatch, sparse_conv
    used: Dict[str, Set[str]] = {}
    original = dispatch.choose_backend

    def recording(op: str, backend: str, checks) -> str:
        chosen = original(op, backend, checks)
        used.setdefault(op, set()).add(chosen)
        return chosen

    # sparse_conv imported the function by name; bra / sla look it up on the module
    dispatch.choose_backend = sparse_conv.choose_backend = recording
    try:
        yield used
    finally:
        dispatch.choose_backend = sparse_conv.choose_backend = original


def val_images(cfg, num: int) -> List[str]:
    """The first ``num`` images (sorted by name) of the test split's image folder."""
    ds = cfg.test_dataloader.dataset
    folder = osp.join(ds.get('data_root', ''), ds.get('data_prefix', {}).get('img', ''))
    images = sorted(f for f in glob.glob(osp.join(folder, '*')) if f.lower().endswith(IMAGE_EXTS))
    if len(images) < num:
        raise FileNotFoundError(f'{folder}: {len(images)} images, {num} needed for the inference '
                                'step')
    return images[:num]


def run_inference(config: str, checkpoint: str, images: List[str], out_dir: str,
                  score_thr: float = 0.3) -> List[str]:
    """Run ``tools/demo.py`` (the inference API, :func:`mmattn.apis.init_model`) with ``config``
    and ``checkpoint`` on ``images`` (copied to ``out_dir/inputs``); returns the PNGs it wrote to
    ``out_dir``, one per image."""
    inputs = osp.join(out_dir, 'inputs')
    shutil.rmtree(inputs, ignore_errors=True)
    os.makedirs(inputs)
    for image in images:
        shutil.copy(image, inputs)
    cmd = [sys.executable, osp.join(ROOT, 'tools/demo.py'), inputs, osp.abspath(config),
           '--weights', osp.abspath(checkpoint), '--out-dir', out_dir,
           '--pred-score-thr', str(score_thr)]
    print('inference: python', ' '.join(cmd[1:]))
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f'tools/demo.py failed (exit {res.returncode}):\n{res.stderr[-3000:]}')
    pngs = [line.strip() for line in res.stdout.splitlines() if line.strip().endswith('.png')]
    expected = [osp.join(out_dir, osp.splitext(osp.basename(i))[0] + '.png') for i in images]
    missing = [p for p in expected if not osp.isfile(p)]
    if missing or len(pngs) != len(images):
        raise RuntimeError(f'tools/demo.py wrote {pngs}, expected {expected} (missing: {missing})')
    return expected


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
    backbone = describe_backbone(runner.model, cfg.model.backbone)
    with record_op_backends() as used:
        metrics = runner.test()
    op_backends = {op: sorted(backends) for op, backends in sorted(used.items())}
    pngs = sorted(glob.glob(osp.join(vis_dir, '*.png')))

    t_inf = time.time()
    inference_dir = osp.abspath(osp.join(args.work_dir, 'inference'))
    inference_pngs = run_inference(args.config, ckpt, val_images(cfg, args.num_inference),
                                   inference_dir, args.score_thr) if args.num_inference else []
    t_inf = time.time() - t_inf

    summary = dict(config=args.config, checkpoint=ckpt, backbone=backbone,
                   op_backends=op_backends, train_seconds=round(t_train, 1),
                   inference_seconds=round(t_inf, 1), total_seconds=round(time.time() - t0, 1),
                   visualizations=vis_dir, num_pngs=len(pngs), inference_pngs=inference_pngs,
                   **{k: float(v) for k, v in metrics.items()})
    with open(osp.join(args.work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print('\n==== mmattn demo ====')
    arch = backbone['arch'] if backbone['arch'] is not None else 'default'
    origin = 'an mmattn model' if backbone['mmattn'] else 'not an mmattn model'
    print(f'model: {cfg.model.type} with backbone {backbone["type"]} ({origin}), arch {arch}, '
          f'{backbone["backbone_params_m"]} M backbone / {backbone["detector_params_m"]} M '
          'detector parameters')
    if op_backends:
        print('mmattn ops in evaluation: ' + '; '.join(
            f'{op}: backend {", ".join(b)}' for op, b in op_backends.items()))
    else:
        print('mmattn ops in evaluation: none (no custom op in this model: plain PyTorch / mmcv '
              'layers only)')
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        if key in summary:
            print(f'{key:>18}: {summary[key]:.3f}')
    print(f'train time: {t_train / 60:.1f} min; total {summary["total_seconds"] / 60:.1f} min')
    print(f'{len(pngs)} PNGs with predictions in {vis_dir}')
    if inference_pngs:
        print(f'{len(inference_pngs)} PNGs from tools/demo.py (inference API):')
        for png in inference_pngs:
            print(f'  {png}')
    print(f'summary: {osp.join(args.work_dir, "demo_summary.json")}')


if __name__ == '__main__':
    main()
