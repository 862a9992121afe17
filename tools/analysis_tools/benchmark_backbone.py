"""Forward latency and peak memory of a registered backbone against a reference module, in one run.

    python tools/analysis_tools/benchmark_backbone.py \
        --backbone "dict(type='mmattn.PoolFormer', arch='s12')" \
        --reference timm:poolformer_s12 --shape 1 3 224 224 --iters 50 --warmup 10

``--backbone`` is a config dict (any registered type; ``mmattn.`` types need no import), or
``--config`` takes ``model.backbone`` from a config file. ``--reference`` is ``timm:NAME``
(``timm.create_model(NAME, features_only=True)``: the stage feature maps, what a backbone returns),
another config dict, or ``py:module:callable``. Unless ``--no-sync``, the reference gets the
backbone's weights: parameters are paired by kind (conv, linear, norm, other) in registration order
and must agree in shape; the run stops if a reference parameter is left without a partner.

Timing is interleaved: each iteration runs both models, alternating which goes first, under
``torch.inference_mode``; reported are median and min-max milliseconds per forward, and the ratio of
the medians (backbone / reference). Peak memory is the most memory allocated at once *during* one
forward, above what was allocated before it (weights, input): on CUDA from
``torch.cuda.max_memory_allocated``, on CPU from the running sum of the allocations and frees of
PyTorch's CPU allocator that ``torch.profiler`` records (``profile_memory=True``); scratch memory a
library allocates itself, bypassing PyTorch's allocator, is not counted.
"""
import argparse
import importlib
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn


def build_backbone(spec: str, config: str = None) -> nn.Module:
    import mmattn.models  # noqa: F401  registers mmattn's models
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    if config:
        cfg = Config.fromfile(config)
        init_default_scope(cfg.get('default_scope', 'mmattn'))
        return MODELS.build(cfg.model.backbone)
    init_default_scope('mmattn')
    return MODELS.build(eval(spec, {'dict': dict}))


def build_reference(spec: str) -> Tuple[nn.Module, str]:
    if spec.startswith('timm:'):
        import timm
        return timm.create_model(spec[5:], pretrained=False, features_only=True), \
            f'timm.create_model({spec[5:]!r}, features_only=True)'
    if spec.startswith('py:'):
        module, fn = spec[3:].rsplit(':', 1)
        return getattr(importlib.import_module(module), fn)(), spec
    return build_backbone(spec), spec


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return 'conv'
    if isinstance(module, nn.Linear):
        return 'linear'
    if isinstance(module, (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._NormBase)):
        return 'norm'
    return 'other'


def _params_by_kind(model: nn.Module) -> Dict[str, List[Tuple[str, nn.Parameter]]]:
    groups: Dict[str, List[Tuple[str, nn.Parameter]]] = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            groups.setdefault(_kind(module), []).append((f'{mname}.{pname}'.lstrip('.'), p))
    return groups


@torch.no_grad()
def sync_weights(src: nn.Module, dst: nn.Module) -> Tuple[int, List[str]]:
    """Copy ``src``'s parameters into ``dst``; return (copied, names of src parameters left out).

    Within each kind (conv, linear, norm, other), every ``dst`` parameter in registration order
    takes the next ``src`` parameter of its shape; ``src`` parameters skipped on the way
    (backbone-only ones, such as extra output norms) are left out. A ``dst`` parameter that finds
    no partner stops the run.
    """
    a, b = _params_by_kind(src), _params_by_kind(dst)
    copied, leftover = 0, []
    for kind, targets in b.items():
        sources = iter(a.get(kind, []))
        for qname, q in targets:
            for name, p in sources:
                if p.shape == q.shape:
                    q.copy_(p)
                    copied += 1
                    break
                leftover.append(name)
            else:
                raise SystemExit(
                    f'weight sync: reference {kind} parameter {qname} {tuple(q.shape)} has no '
                    f'partner in the backbone; use --no-sync')
        leftover += [name for name, _ in sources]
    leftover += [name for kind in a if kind not in b for name, _ in a[kind]]
    return copied, leftover


def _run(model: nn.Module, x: torch.Tensor) -> None:
    model(x)
    if x.is_cuda:
        torch.cuda.synchronize()


def peak_memory(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes allocated at most at once during one forward, above the level before it."""
    with torch.inference_mode():
        if x.is_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            _run(model, x)
            return torch.cuda.max_memory_allocated() - base
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            _run(model, x)
    # every allocation and free of PyTorch's CPU allocator, in time order
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'),
                    key=lambda e: e.start_ns())
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak


def interleaved_times(models: List[Callable], x: torch.Tensor, iters: int,
                      warmup: int) -> List[List[float]]:
    times: List[List[float]] = [[] for _ in models]
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models:
                _run(m, x)
        for it in range(iters):
            order = range(len(models)) if it % 2 == 0 else reversed(range(len(models)))
            for i in order:
                t0 = time.perf_counter()
                _run(models[i], x)
                times[i].append((time.perf_counter() - t0) * 1e3)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--backbone',
                     help="config dict, e.g. \"dict(type='mmattn.PoolFormer', arch='s12')\"")
    src.add_argument('--config', help='config file: its model.backbone is measured')
    parser.add_argument('--reference', help='timm:NAME, a config dict, or py:module:callable')
    parser.add_argument('--shape',
                        type=int,
                        nargs=4,
                        default=[1, 3, 224, 224],
                        metavar=('B', 'C', 'H', 'W'))
    parser.add_argument('--iters', type=int, default=50)
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    parser.add_argument('--no-sync', action='store_true', help='keep the reference at its own init')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    backbone = build_backbone(args.backbone, args.config).to(args.device)
    backbone.eval()  # not chained: some train() overrides (mmdet's SwinTransformer) return None
    x = torch.randn(*args.shape, device=args.device)
    models, names = [backbone], [args.config or args.backbone]
    print(
        f'device {args.device}, input {tuple(args.shape)}, threads {torch.get_num_threads()}, '
        f'torch {torch.__version__}, {args.iters} iterations (interleaved) after '
        f'{args.warmup} warm-up'
    )
    if args.reference:
        reference, ref_name = build_reference(args.reference)
        reference = reference.to(args.device)
        reference.eval()
        if not args.no_sync:
            copied, leftover = sync_weights(backbone, reference)
            print(f'weights: {copied} backbone tensors copied into the reference' +
                  (f'; backbone-only: {", ".join(leftover)}' if leftover else ''))
        models.append(reference)
        names.append(ref_name)

    times = interleaved_times(models, x, args.iters, args.warmup)
    medians = []
    for name, model, ts in zip(names, models, times):
        med = statistics.median(ts)
        medians.append(med)
        mem = peak_memory(model, x)
        n = sum(p.numel() for p in model.parameters())
        print(f'{name}\n  params {n / 1e6:.2f} M | forward median {med:.2f} ms (min {min(ts):.2f}, '
              f'max {max(ts):.2f}) | peak memory {mem / 2**20:.1f} MiB')
    if len(medians) == 2:
        print(f'ratio backbone / reference (medians): {medians[0] / medians[1]:.3f}')


if __name__ == '__main__':
    main()
