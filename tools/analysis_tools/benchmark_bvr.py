"""Training cost of BVR-RetinaNet vs plain RetinaNet (same R-50 / GN / L1 settings) on the CPU.

    python tools/analysis_tools/benchmark_bvr.py [--sizes 272x352 800x1333] [--iters 2]
        [--warmup 1] [--threads 2] [--batch 1]

For each input size, both detectors (``configs/bvr/retinanet-bvr_r50_fpn_1x_coco.py`` and its
baseline ``retinanet_r50_fpn_gn-head-neck_l1_1x_coco.py``, random weights) run ``--warmup``
untimed training steps, then ``--iters`` steps each, **interleaved** (plain, BVR, plain, BVR, ...)
so that both see the same machine load. A step is forward + losses + backward + SGD update on a
synthetic batch with three boxes per image. Reported per model: median step time, peak
resident-memory growth during a step (RSS sampled every 2 ms, after returning freed memory to the
OS), and for BVR the forward time of the keypoint head and of key sampling + transformers. Then
the BVR attention alone at the size's level shapes, plain vs SDPA (``attn_backend``). The load
average (1 min) before and after is printed next to the numbers: on a shared machine they are
only comparable within one run.
"""
import argparse
import ctypes
import os
import os.path as osp
import statistics
import sys
import threading
import time
from typing import Dict, List, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

CONFIGS = {'retinanet': 'configs/bvr/retinanet_r50_fpn_gn-head-neck_l1_1x_coco.py',
           'bvr-retinanet': 'configs/bvr/retinanet-bvr_r50_fpn_1x_coco.py'}


def rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def trim() -> None:
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except OSError:  # not glibc: the growth is then a lower bound
        pass


class PeakRSS:
    """Peak RSS above the level at entry, sampled by a thread."""

    def __enter__(self):
        trim()
        self.base = self.peak = rss_bytes()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.growth = self.peak - self.base


def build(config: str):
    import mmattn  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train()


def batch(h: int, w: int, n: int):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=gen))
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1, 1)))
        g = InstanceData()
        g.bboxes = torch.tensor([[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h],
                                 [0.4 * w, 0.3 * h, 0.9 * w, 0.9 * h],
                                 [0.05 * w, 0.7 * h, 0.2 * w, 0.95 * h]])
        g.labels = torch.tensor([0, 5, 17])
        s.gt_instances = g
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def step(model, optim, data) -> Tuple[float, int]:
    with PeakRSS() as mem:
        t = time.perf_counter()
        d = model.data_preprocessor(data, True)
        loss, _ = model.parse_losses(model(**d, mode='loss'))
        optim.zero_grad()
        loss.backward()
        optim.step()
        elapsed = time.perf_counter() - t
    return elapsed, mem.growth


def hook_times(model) -> Dict[str, List[float]]:
    """Forward times of the keypoint head and of the two relation branches (key sampling and
    transformer) of a BVR head."""
    times = {'keypoint_head': [], 'relation': []}
    head = model.bbox_head
    t0 = {}

    def pre(name):
        return lambda *a: t0.__setitem__(name, time.perf_counter())

    def post(name):
        return lambda *a: times[name].append(time.perf_counter() - t0[name])

    head.keypoint_head.register_forward_pre_hook(pre('keypoint_head'))
    head.keypoint_head.register_forward_hook(post('keypoint_head'))
    orig = head._relation

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = orig(*args, **kwargs)
        times['relation'].append(time.perf_counter() - t)
        return out

    head._relation = timed
    return times


def attention_only(h: int, w: int, n: int, reps: int = 3) -> Dict[str, float]:
    """Forward + backward of the BVR reg transformer (2 key groups, 50 keys, 5 levels at the
    size's P3-P7 shapes), plain vs SDPA: median seconds."""
    from mmattn.models.heads.bvr import BVRTransformer
    torch.manual_seed(0)
    shapes = [((h + s - 1) // s, (w + s - 1) // s) for s in (8, 16, 32, 64, 128)]
    q = [torch.randn(n, a, b, 256, requires_grad=True) for a, b in shapes]
    qp = [torch.rand(n, a, b, 2) * w for a, b in shapes]
    kf = [[torch.randn(n, 50, 256) for _ in range(2)]] * 5
    kp = [[torch.rand(n, 50, 2) * w for _ in range(2)]] * 5
    models = {}
    for backend in ('torch', 'sdpa'):
        models[backend] = BVRTransformer(256, 8, 2, positional_cfg=dict(base_size=(400, 400)),
                                         attn_backend=backend)
    models['torch'].init_weights()
    models['sdpa'].load_state_dict(models['torch'].state_dict())
    times = {backend: [] for backend in models}
    for _ in range(reps):  # interleaved, like the detectors
        for backend, m in models.items():
            t = time.perf_counter()
            sum(o.sum() for o in m(q, qp, kf, kp, [8.] * 5)).backward()
            times[backend].append(time.perf_counter() - t)
    return {backend: statistics.median(ts) for backend, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', default=['272x352', '800x1333'],
                        help='H x W of the (padded) input images')
    parser.add_argument('--iters', type=int, default=2, help='timed steps per model and size')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps per model first')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--batch', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    models = {name: build(cfg) for name, cfg in CONFIGS.items()}
    optims = {name: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
              for name, m in models.items()}
    parts = hook_times(models['bvr-retinanet'])
    print(f'torch {torch.__version__}, {args.threads} threads, batch {args.batch}; load average '
          f'(1 min) at start {load0:.2f}')
    for size in args.sizes:
        h, w = (int(v) for v in size.split('x'))
        data = batch(h, w, args.batch)
        res = {name: [] for name in models}
        for _ in range(args.warmup):
            for name in models:
                step(models[name], optims[name], data)
        for v in parts.values():
            v.clear()
        for _ in range(args.iters):
            for name in models:
                res[name].append(step(models[name], optims[name], data))
        base_t = statistics.median(t for t, _ in res['retinanet'])
        for name, r in res.items():
            t = statistics.median(v for v, _ in r)
            mem = max(m for _, m in r) / 2**20
            print(f'{size} {name:14s} step {t:7.2f} s ({t / base_t:4.2f}x)  peak RSS growth '
                  f'{mem:7.0f} MiB')
        kp = statistics.median(parts['keypoint_head'])
        rel = statistics.median(parts['relation']) * 2  # cls + reg branch per forward
        print(f'{size} bvr forward parts: keypoint head {kp:.2f} s, key sampling + transformers '
              f'{rel:.2f} s')
        att = attention_only(h, w, args.batch)
        print(f'{size} reg transformer fwd+bwd alone: plain {att["torch"]:.3f} s, sdpa '
              f'{att["sdpa"]:.3f} s')
        print(f'{size} load average (1 min) now {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
    main()
