"""Time ScatterFormer's sparse convs on every backend that can run here.

    python tools/analysis_tools/benchmark_sparse_conv.py [--voxels 20000] [--channels 128]
        [--device cpu] [--iters 5] [--grad]

Sites: ``--voxels`` random active sites of one sample on a ``33 x 160 x 160`` grid (the sample
config's), the stem's SubM 3x3x3 (C -> C) and the down-sampling conv 3/2/1. Prints one row per
(conv, backend): median milliseconds of forward (``--grad``: forward + backward) over ``--iters``.
Every backend's output is checked against the rule book's before timing.
"""
import argparse
import os.path as osp
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmattn.ops.sparse_conv import (SparseConv3d, SparseVoxels, SubMConv3d,  # noqa: E402
                                    sparse_backend_checks)


def sites(n: int, shape, channels: int, device: str) -> SparseVoxels:
    g = torch.Generator().manual_seed(0)
    z, y, x = shape
    keys = torch.randperm(z * y * x, generator=g)[:n]
    coords = torch.stack([torch.zeros_like(keys), keys // (y * x), keys // x % y, keys % x], 1)
    return SparseVoxels(torch.randn(n, channels, generator=g).to(device), coords.to(device),
                        shape, 1)


def time_ms(fn, iters: int, device: str) -> float:
    out = []
    for _ in range(iters + 1):
        t = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--voxels', type=int, default=20000)
    parser.add_argument('--channels', type=int, default=128)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--grad', action='store_true')
    args = parser.parse_args()
    x = sites(args.voxels, (33, 160, 160), args.channels, args.device)
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}, {args.voxels} sites, '
          f'C={args.channels}, {args.device}, {"fwd+bwd" if args.grad else "fwd"}')
    for name, make in (('subm 3x3x3', lambda b: SubMConv3d(args.channels, args.channels, 3,
                                                             backend=b)),
                       ('sparse 3/2/1', lambda b: SparseConv3d(args.channels, args.channels, 3,
                                                               2, 1, backend=b))):
        ref = make('rulebook').to(args.device)
        with torch.no_grad():
            expected = ref(x)
        for backend, check in sparse_backend_checks(x.features, args.grad):
            reason = check()
            if reason is not None:
                print(f'{name:13s} {backend:9s} skipped: {reason}')
                continue
            conv = make(backend).to(args.device)
            conv.load_state_dict(ref.state_dict())

            def step():
                with torch.set_grad_enabled(args.grad):
                    out = conv(x)
                    if args.grad:
                        out.features.sum().backward()
                return out

            with torch.no_grad():
                out = conv(x)
            err = (out.features - expected.features).abs().max().item()
            assert torch.equal(out.coords, expected.coords) and err < 1e-3, (backend, err)
            print(f'{name:13s} {backend:9s} {time_ms(step, args.iters, args.device):9.1f} ms  '
                  f'(max |diff| to rulebook {err:.1e})')


if __name__ == '__main__':
    main()
