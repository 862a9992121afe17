"""Forward latency of BEVANet segmentors, train-mode layout (BatchNorm) vs deploy (conv-BN folded).

    python tools/analysis_tools/benchmark_bevanet.py --archs s base \
        --sizes 512x1024 1024x2048 --device cpu --threads 2 --iters 10 --warmup 2 [--flops] \
        [--out bench.json]

For each arch and input size (batch 1, fp32, random weights, eval mode, ``torch.inference_mode``)
it times the segmentor's eval forward ``model(x, mode='tensor')`` (backbone + main head: the
official deploy model, ``seg_augment=False``) before and after ``fold_conv_bn`` (every BatchNorm
that directly follows a conv folded into it, what the official speed script does by hand). Both
models run in every iteration, in alternating order (``mmattn.utils.benchmark.interleaved_ms``);
the median milliseconds are reported, with FPS = 1000 / median, the parameter count of the
deploy model (BatchNorms counted, as the official count) and, with ``--flops``, its GMACs
(``torch.utils.flop_counter``, MACs = FLOPs / 2; the official README reports MACs as "FLOPs").
On CUDA each timed forward is synchronised on its own (median latency), and the official
``calculate_FPS`` protocol is run as well: 10 warm-up forwards, then ``--loop-iters`` forwards back to
back between two synchronisations (``fps_loop_*``; cuDNN autotuning off, as there). The outputs of
the two models are compared too (max relative difference).
"""
import argparse
import copy
import json
import os.path as osp
import sys
from typing import List, Optional

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def build(arch: str, num_classes: int = 19):
    import mmattn  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    from mmattn.models.backbones.bevanet import BEVANet
    c = BEVANet.arch_settings[arch]['channels']
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor'),
        backbone=dict(type='mmattn.BEVANet', arch=arch),
        decode_head=dict(type='mmattn.BEVANetHead', in_channels=4 * c,
                         channels=BEVANet.head_channels[arch], num_classes=num_classes,
                         loss_decode=dict(type='CrossEntropyLoss')))
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def deploy_params(model) -> int:
    head = model.decode_head
    used = [model.backbone, head.i_head, head.conv_seg]
    return sum(p.numel() for m in used for p in m.parameters())


def gmacs(model, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x, mode='tensor')
    return counter.get_total_flops() / 2e9


def loop_fps(fn, iters: int) -> float:
    """The official ``calculate_FPS`` timing on CUDA: 10 warm-up calls, then ``iters`` calls back
    to back between two synchronisations; returns calls per second."""
    import time
    with torch.inference_mode():
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    return iters / (time.perf_counter() - start)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=['s', 'base'])
    parser.add_argument('--sizes', nargs='+', default=['512x1024', '1024x2048'],
                        help='HxW input sizes')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads (torch)')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--loop-iters', type=int, default=200,
                        help='CUDA only: forwards in the official back-to-back FPS loop')
    parser.add_argument('--flops', action='store_true', help='also count GMACs (slow on CPU)')
    parser.add_argument('--out', default=None, help='write the results as JSON')
    args = parser.parse_args(argv)

    from mmattn.models.backbones.bevanet import fold_conv_bn
    from mmattn.testing.parity import max_rel_error
    from mmattn.utils.benchmark import interleaved_ms
    torch.set_num_threads(args.threads)
    results = []
    for arch in args.archs:
        model = build(arch).to(args.device)
        deployed = copy.deepcopy(model)
        folded = fold_conv_bn(deployed)
        for size in args.sizes:
            h, w = (int(v) for v in size.lower().split('x'))
            x = torch.randn(1, 3, h, w, device=args.device)
            with torch.inference_mode():
                diff = max_rel_error(deployed(x, mode='tensor'), model(x, mode='tensor'))

                def run(m=model):
                    return m(x, mode='tensor')

                def run_deploy(m=deployed):
                    return m(x, mode='tensor')

                ms = interleaved_ms({'train': run, 'deploy': run_deploy}, args.device,
                                    args.iters, args.warmup)
            row = dict(arch=arch, size=size, device=args.device,
                       threads=args.threads if args.device == 'cpu' else None,
                       ms_train=round(ms['train'], 2), ms_deploy=round(ms['deploy'], 2),
                       fps_train=round(1e3 / ms['train'], 2),
                       fps_deploy=round(1e3 / ms['deploy'], 2),
                       folded_bn=folded, params_M=round(deploy_params(model) / 1e6, 3),
                       max_rel_diff=diff, iters=args.iters, warmup=args.warmup)
            if args.device == 'cuda':
                for name, fn in (('train', run), ('deploy', run_deploy)):
                    row[f'fps_loop_{name}'] = round(loop_fps(fn, args.loop_iters), 2)
            if args.flops:
                row['gmacs'] = round(gmacs(deployed, x), 2)
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.device == 'cuda':
        results.append(dict(gpu=torch.cuda.get_device_name()))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == '__main__':
    main()
