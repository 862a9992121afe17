"""Whole-detector speed of ScatterFormer: inference (and optionally a training step) per frame.

    python tools/analysis_tools/benchmark_scatterformer.py \
        [CONFIG] [--device cuda] [--sla-backend auto] [--sparse-conv-backend auto] [--amp bf16] \
        [--batch 1] [--num-points 160000] [--points a.bin b.bin] [--train] [--iters 20] \
        [--warmup 5] [--out bench.json] [--cfg-options model.middle_encoder.dim=64 ...]

CONFIG defaults to the official Waymo config. The detector is built from it (random weights,
``init_weights``), and each timed call is one batch through the whole detector as the runner calls
it: ``data_preprocessor`` (dynamic voxelisation) -> ``predict`` (voxel encoder, middle encoder,
DED, head decoding and NMS) under ``torch.inference_mode``; with ``--train`` also the training step
without the optimizer update: data preprocessor -> ``loss`` -> ``backward``. Inputs are the given
``--points`` files (float32, ``--load-dim`` columns; the first ``voxel_encoder.in_channels`` are
used, ``tanh`` on columns 3.. as the Waymo configs' ``norm_intensity`` / ``norm_elongation``) or,
without them, seeded synthetic frames of ``--num-points`` points: azimuth uniform, radius
log-uniform in [2 m, 98 % of the range's half-width] (LiDAR-like: denser near the sensor), z
uniform over the lower 4 m of the range, intensity / elongation uniform then ``tanh``; every frame
gets 20 random boxes (for ``--train``).

Timings are medians over ``--iters`` calls after ``--warmup`` (CUDA: synchronised before and
after each call); peak memory is the most allocated at once during one more call, above what was
allocated before (CUDA allocator / CPU profiler, ``mmattn.utils.benchmark.peak_bytes``). The
backends printed are the ones the SLA and sparse-conv dispatchers returned during the timed calls
(CWI's depthwise convs always use the rule book).
"""
import argparse
import json
import math
import os.path as osp
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, Iterator, List, Optional, Set

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

DEFAULT_CONFIG = osp.join(ROOT, 'configs/scatterformer/scatterformer_8xb4-24e_waymo-3d-3class.py')
AMP = {'none': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def build_detector(config: str, sla_backend: str, sparse_conv_backend: str, device: str,
                   cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """The config's detector with the given backends, initialised, on ``device``."""
    import logging

    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    from mmdet3d.registry import MODELS
    cfg.model.middle_encoder.update(sla_backend=sla_backend,
                                    sparse_conv_backend=sparse_conv_backend)
    model = MODELS.build(cfg.model)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter
    model.init_weights()
    logger.setLevel(level)
    return model.to(device)


def synthetic_points(num: int, pcr: List[float], num_feats: int,
                     generator: torch.Generator) -> torch.Tensor:
    """``[num, num_feats]`` points as described in the module docstring (seeded)."""
    half = 0.98 * min(pcr[3] - pcr[0], pcr[4] - pcr[1]) / 2
    cx, cy = (pcr[0] + pcr[3]) / 2, (pcr[1] + pcr[4]) / 2
    u = torch.rand(num, 4 + max(num_feats - 3, 0), generator=generator)
    r = 2.0 * (half / 2.0) ** u[:, 0] if half > 2.0 else half * u[:, 0]
    phi = 2 * math.pi * u[:, 1]
    z = pcr[2] + min(4.0, pcr[5] - pcr[2]) * u[:, 2]
    xyz = torch.stack([cx + r * torch.cos(phi), cy + r * torch.sin(phi), z], 1)
    return torch.cat([xyz, torch.tanh(u[:, 4:4 + num_feats - 3])], 1)


def random_boxes(num: int, pcr: List[float], num_classes: int,
                 generator: torch.Generator):
    """``num`` LiDAR boxes (bottom centre) inside 80 % of the range, and their labels."""
    from mmdet3d.structures import LiDARInstance3DBoxes
    u = torch.rand(num, 5, generator=generator)
    lo, hi = torch.tensor(pcr[:2]), torch.tensor(pcr[3:5])
    centre = (lo + hi) / 2 + 0.8 * (hi - lo) / 2 * (2 * u[:, :2] - 1)
    dims = torch.tensor([4.5, 2.0, 1.6]) * (0.5 + u[:, 2:3])
    boxes = torch.cat([centre, torch.full((num, 1), pcr[2] + 0.5), dims,
                       (u[:, 3:4] * 2 - 1) * math.pi], 1)
    labels = (u[:, 4] * num_classes).long().clamp(max=num_classes - 1)
    return LiDARInstance3DBoxes(boxes), labels


def load_points(path: str, load_dim: int, use_dim: int, tanh: bool) -> torch.Tensor:
    """A ``.bin`` frame: float32 ``[N, load_dim]`` -> ``[N, use_dim]`` (tanh on columns 3..)."""
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % load_dim:
        raise ValueError(f'{path}: {raw.size} floats is not a multiple of --load-dim {load_dim}')
    pts = torch.from_numpy(raw.reshape(-1, load_dim)[:, :use_dim].copy())
    if tanh and use_dim > 3:
        pts[:, 3:] = torch.tanh(pts[:, 3:])
    return pts


def make_batch(clouds: List[torch.Tensor], pcr: List[float], num_classes: int,
               generator: torch.Generator, device: str) -> dict:
    """The runner's data dict: ``inputs.points`` and data samples with 20 random boxes each."""
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData
    samples = []
    for i in range(len(clouds)):
        s = Det3DDataSample(metainfo=dict(box_type_3d=LiDARInstance3DBoxes,
                                          lidar_path=f'frame{i}.bin'))
        gt = InstanceData()
        gt.bboxes_3d, gt.labels_3d = random_boxes(20, pcr, num_classes, generator)
        s.gt_instances_3d = gt
        samples.append(s)
    return dict(inputs=dict(points=[c.to(device) for c in clouds]), data_samples=samples)


@contextmanager
def record_backends() -> Iterator[Dict[str, Set[str]]]:
    """Collects the backends the SLA and sparse-conv dispatchers return while inside."""
    import mmattn.ops.sla as sla
    import mmattn.ops.sparse_conv as sparse_conv
    used: Dict[str, Set[str]] = dict(sla=set(), sparse_conv=set())
    choose_sla, choose_sparse = sla.choose_backend, sparse_conv.choose_sparse_backend

    def sla_wrapper(*args, **kwargs):
        out = choose_sla(*args, **kwargs)
        used['sla'].add(out)
        return out

    def sparse_wrapper(*args, **kwargs):
        out = choose_sparse(*args, **kwargs)
        used['sparse_conv'].add(out)
        return out

    sla.choose_backend, sparse_conv.choose_sparse_backend = sla_wrapper, sparse_wrapper
    try:
        yield used
    finally:
        sla.choose_backend, sparse_conv.choose_sparse_backend = choose_sla, choose_sparse


def median_ms(fn: Callable[[], object], device: str, iters: int, warmup: int) -> float:
    """Median milliseconds of ``fn()`` (CUDA-synchronised around every call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def parse_cfg_options(items: Optional[List[str]]) -> dict:
    """``key=value`` pairs; values parsed as Python literals when they are, else strings."""
    import ast
    out = {}
    for item in items or []:
        key, _, value = item.partition('=')
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--sla-backend', default='auto',
                        choices=['auto', 'reference', 'torch', 'triton'])
    parser.add_argument('--sparse-conv-backend', default='auto',
                        choices=['auto', 'spconv', 'mmcv', 'rulebook'])
    parser.add_argument('--amp', default='none', choices=list(AMP),
                        help='torch.autocast dtype around the forward')
    parser.add_argument('--batch', type=int, default=1, help='frames per call')
    parser.add_argument('--num-points', type=int, default=160000,
                        help='points per synthetic frame (ignored with --points)')
    parser.add_argument('--points', nargs='+', default=None,
                        help='.bin frames to use instead of synthetic ones (cycled)')
    parser.add_argument('--load-dim', type=int, default=6, help='float32 columns per point')
    parser.add_argument('--no-tanh', action='store_true',
                        help='do not apply tanh to columns 3.. of --points files')
    parser.add_argument('--train', action='store_true',
                        help='also time a training step (forward loss + backward)')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (torch)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory call (on CPU it runs under the profiler)')
    parser.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                        help='override config entries, e.g. model.middle_encoder.dim=64')
    parser.add_argument('--out', default=None, help='write the results as JSON')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device')

    from mmattn.utils.benchmark import peak_bytes
    torch.manual_seed(args.seed)
    model = build_detector(args.config, args.sla_backend, args.sparse_conv_backend, args.device,
                           parse_cfg_options(args.cfg_options))
    pcr = list(model.data_preprocessor.voxel_layer.point_cloud_range)
    num_feats = model.voxel_encoder.in_channels
    num_classes = sum(model.bbox_head.num_classes)  # CenterHead: classes per task
    gen = torch.Generator().manual_seed(args.seed)
    if args.points:
        clouds = [load_points(args.points[i % len(args.points)], args.load_dim, num_feats,
                              not args.no_tanh) for i in range(args.batch)]
    else:
        clouds = [synthetic_points(args.num_points, pcr, num_feats, gen)
                  for _ in range(args.batch)]
    data = make_batch(clouds, pcr, num_classes, gen, args.device)
    amp = AMP[args.amp]

    def autocast():
        return torch.autocast(args.device, dtype=amp) if amp is not None else nullcontext()

    def infer():
        model.eval()
        with torch.inference_mode(), autocast():
            batch = model.data_preprocessor(data, False)
            return model(**batch, mode='predict')

    def train_step():
        model.train()
        with autocast():
            batch = model.data_preprocessor(data, True)
            losses = model(**batch, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    with torch.no_grad():
        voxels = model.data_preprocessor(data, False)['inputs']['voxels']
        num_voxels = int(torch.unique(voxels['coors'][(voxels['coors'][:, 1:] >= 0).all(1)],
                                      dim=0).shape[0])
    modes = [('inference', infer)] + ([('train_step', train_step)] if args.train else [])
    rows = []
    for mode, fn in modes:
        with record_backends() as used:
            ms = median_ms(fn, args.device, args.iters, args.warmup)
        peak = None if args.no_memory else round(peak_bytes(fn, args.device) / 2**20, 1)
        rows.append(dict(
            mode=mode, ms_per_call=round(ms, 2), ms_per_frame=round(ms / args.batch, 2),
            fps=round(1e3 * args.batch / ms, 2), peak_mib=peak,
            sla_backends=sorted(used['sla']), sparse_conv_backends=sorted(used['sparse_conv'])))
    result = dict(
        config=osp.relpath(args.config, ROOT) if osp.isabs(args.config) else args.config,
        device=torch.cuda.get_device_name() if args.device == 'cuda' else
        f'cpu, {torch.get_num_threads()} threads',
        amp=args.amp, batch=args.batch,
        points_per_frame=[int(c.shape[0]) for c in clouds], voxels=num_voxels,
        inputs=('files: ' + ' '.join(args.points)) if args.points else
        f'synthetic, seed {args.seed}', point_cloud_range=pcr,
        requested=dict(sla=args.sla_backend, sparse_conv=args.sparse_conv_backend),
        iters=args.iters, warmup=args.warmup, torch=torch.__version__, rows=rows)
    print_table(result)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
    return result


def print_table(result: dict) -> None:
    print(f"{result['config']} on {result['device']}, amp {result['amp']}, batch "
          f"{result['batch']}, points/frame {result['points_per_frame']}, voxels "
          f"{result['voxels']} ({result['inputs']})")
    print(f"requested backends: sla={result['requested']['sla']} "
          f"sparse_conv={result['requested']['sparse_conv']}")
    header = ('mode', 'ms/frame', 'FPS', 'peak MiB', 'SLA backend', 'sparse-conv backend')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for r in result['rows']:
        peak = '-' if r['peak_mib'] is None else r['peak_mib']
        print(f"| {r['mode']} | {r['ms_per_frame']} | {r['fps']} | {peak} | "
              f"{','.join(r['sla_backends'])} | {','.join(r['sparse_conv_backends'])} |")


if __name__ == '__main__':
    main()
