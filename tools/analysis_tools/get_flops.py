"""FLOPs and parameters of a config's model, attention included, on a synthetic input.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W] [--backbone-only] [--device D]
    python tools/analysis_tools/get_flops.py --backbone "dict(type='mmattn.BiFormer', arch='tiny')"

Builds the model of CONFIG (an mmdet detector, an mmseg segmentor, or with ``--backbone-only`` /
``--backbone DICT`` only a backbone); no dataset, no checkpoint. The input is one synthetic image
``(1, 3, H, W)`` (default: 800 x 1280 for detectors, 512 x 1024 for segmentors, 224 x 224 for
backbones), fed after the data preprocessor (no padding is added: pass a multiple of 32). Counted is
the inference forward (mmdet / mmseg ``mode='tensor'``: backbone, neck, heads' raw outputs; no
auxiliary heads, no post-processing) under ``torch.utils.flop_counter.FlopCounterMode``, which
counts every matmul, convolution and attention at the aten level (inside custom autograd Functions
too), and mmattn's Triton kernels through their custom ops' FLOP formulas
(:mod:`mmattn.ops.flops`). Elementwise ops, norms, softmax and pooling are not counted (as fvcore).

Printed: GMACs and GFLOPs (= 2 x MACs; most papers call MACs "FLOPs"), parameters, and the split
over the model's top-level modules (backbone / neck / heads).

The model runs on the ``meta`` device by default (no memory, no arithmetic: seconds even for
full-size models). If the forward fails there (data-dependent ops such as NMS in a two-stage
detector's RPN), it is rebuilt and run on the CPU with random weights (seed 0) and the reason is
printed. A two-stage detector's RoI-head count depends on how many proposals survive the RPN's NMS
(at most ``test_cfg.rpn.max_per_img``), so it varies with the weights and the image, as in mmdet's
own get_flops; with the fixed seed it is reproducible.
3D detectors (mmdet3d) are not supported yet: they need point clouds / voxel batches, not images.
"""
import argparse
import sys
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from torch.utils.flop_counter import FlopCounterMode

DEFAULT_SHAPES = {'detector': (800, 1280), 'segmentor': (512, 1024), 'backbone': (224, 224)}


class UnsupportedModel(RuntimeError):
    """The model kind cannot be counted by this tool."""


def _build(cfg_model: dict, default_scope: str, device: str) -> nn.Module:
    import mmattn.models  # noqa: F401  registers mmattn's models
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(default_scope)
    torch.manual_seed(0)  # on the CPU: the same random weights, hence the same proposals, each run
    with torch.device(device):
        model = MODELS.build(cfg_model)
    return model.eval()


def model_kind(cls: type) -> str:
    """'detector' | 'segmentor' | 'backbone' for a model class; raises
    :class:`UnsupportedModel` for 3D models."""
    mods = [c.__module__ for c in cls.__mro__]
    if any(m.startswith('mmdet3d') for m in mods):
        raise UnsupportedModel(
            f'{cls.__name__} is a 3D (mmdet3d) model: get_flops does not support 3D '
            'detectors yet (they take point clouds / voxels, not an image)')
    if any(m.startswith('mmdet.models.detectors') for m in mods):
        return 'detector'
    if any(m.startswith('mmseg.models.segmentors') for m in mods):
        return 'segmentor'
    return 'backbone'


def _model_class(cfg_model: dict, default_scope: str) -> type:
    import mmattn.models  # noqa: F401  registers mmattn's models
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(default_scope)
    cls = cfg_model['type']
    if isinstance(cls, str):
        with MODELS.switch_scope_and_registry(default_scope) as registry:
            cls = registry.get(cls)
        if cls is None:
            raise KeyError(f"model type {cfg_model['type']!r} is not registered "
                           f'(default scope {default_scope!r})')
    return cls


def _forward(model: nn.Module, kind: str, x: torch.Tensor) -> None:
    """One inference forward through ``__call__`` (module hooks name the modules)."""
    if kind == 'backbone':
        model(x)
    elif kind == 'segmentor':
        model(x, None, mode='tensor')
    else:
        from mmdet.structures import DetDataSample
        h, w = x.shape[-2:]
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1., 1.),
                    batch_input_shape=(h, w))
        model(x, [DetDataSample(metainfo=meta)], mode='tensor')


def _top_level(counts: Dict[str, Dict], root: str) -> Dict[str, int]:
    """FLOPs per direct child of the root module, from FlopCounterMode's per-module counts.

    Only modules that ran are recorded (a ModuleList is not, its items are); a module's count
    includes its descendants', so each child sums its outermost recorded descendants."""
    names = [n for n in counts if n.startswith(root + '.')]
    out: Dict[str, int] = {}
    for name in names:
        parts = name.split('.')
        if any('.'.join(parts[:i]) in counts for i in range(2, len(parts))):
            continue  # inside an outer recorded module
        out[parts[1]] = out.get(parts[1], 0) + sum(counts[name].values())
    return out


def count(model: nn.Module, kind: str, shape: Tuple[int, int],
          device: str) -> Tuple[int, Dict[str, int], Dict[str, int]]:
    """``(total FLOPs, FLOPs per top-level module, FLOPs per op)`` of one forward."""
    x = torch.randn(1, 3, *shape, device=device,
                    generator=torch.Generator().manual_seed(0) if device == 'cpu' else None)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _forward(model, kind, x)
    counts = counter.get_flop_counts()
    per_op = {str(op).replace('aten.', ''): n for op, n in counts['Global'].items()}
    root = type(model).__name__
    return counter.get_total_flops(), _top_level(counts, root), per_op


def params(model: nn.Module) -> Tuple[int, Dict[str, int]]:
    """Total parameters and per direct child."""
    per = {name: sum(p.numel() for p in child.parameters())
           for name, child in model.named_children()}
    return sum(p.numel() for p in model.parameters()), per


def analyse(cfg_model: dict, default_scope: str, kind_hint: Optional[str],
            shape: Optional[Tuple[int, int]], device: str = 'meta') -> dict:
    """Build, count (on ``device``, falling back to the CPU), and return the numbers."""
    kind = kind_hint or model_kind(_model_class(cfg_model, default_scope))
    model = _build(cfg_model, default_scope, device)
    shape = tuple(shape) if shape else DEFAULT_SHAPES[kind]
    fallback = None
    try:
        flops, per_module, per_op = count(model, kind, shape, device)
    except Exception as exc:  # noqa: BLE001  any op that cannot run on meta: retry on the CPU
        if device == 'cpu':
            raise
        fallback = f'{type(exc).__name__}: {str(exc).splitlines()[0][:200]}'
        device = 'cpu'
        model = _build(cfg_model, default_scope, device)
        flops, per_module, per_op = count(model, kind, shape, device)
    total_params, per_params = params(model)
    return dict(model=type(model).__name__, kind=kind, shape=shape, device=device,
                fallback=fallback, flops=flops, per_module=per_module, per_op=per_op,
                params=total_params, per_params=per_params)


def format_report(res: dict) -> str:
    h, w = res['shape']
    lines = [f"model: {res['model']} ({res['kind']}), input 1x3x{h}x{w}, counted on "
             f"{res['device']}"]
    if res['fallback']:
        lines.append(f"  (the meta-device run failed, counted on the CPU instead: "
                     f"{res['fallback']})")
    lines.append(f"{'module':<24}{'GMACs':>10}{'GFLOPs':>10}{'params (M)':>12}")
    names = [n for n in res['per_params']
             if res['per_params'][n] or res['per_module'].get(n)]  # skip e.g. data_preprocessor
    names += [n for n in res['per_module'] if n not in names]
    for name in names:
        f = res['per_module'].get(name, 0)
        lines.append(f"{name:<24}{f / 2e9:>10.3f}{f / 1e9:>10.3f}"
                     f"{res['per_params'].get(name, 0) / 1e6:>12.3f}")
    f = res['flops']
    lines.append(f"{'total':<24}{f / 2e9:>10.3f}{f / 1e9:>10.3f}{res['params'] / 1e6:>12.3f}")
    ops = sorted(res['per_op'].items(), key=lambda kv: -kv[1])
    lines.append('by op (GFLOPs): ' + ', '.join(f'{op} {n / 1e9:.3f}' for op, n in ops))
    lines.append('GFLOPs = 2 x GMACs; most papers report MACs as "FLOPs".')
    return '\n'.join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', help='config file (mmdet detector / mmseg segmentor)')
    p.add_argument('--backbone', help="backbone config dict instead of a config file, e.g. "
                   "\"dict(type='mmattn.PoolFormer', arch='s12')\"")
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help='input height and width (default: 800 1280 detector, 512 1024 '
                   'segmentor, 224 224 backbone)')
    p.add_argument('--backbone-only', action='store_true',
                   help="count only the config's model.backbone")
    p.add_argument('--device', default='meta', choices=('meta', 'cpu'),
                   help='where to run the model (default meta; falls back to cpu)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   metavar='KEY=VALUE', help='override config keys (mmengine DictAction syntax)')
    args = p.parse_args(argv)
    if bool(args.config) == bool(args.backbone):
        p.error('give either CONFIG or --backbone DICT')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.backbone:
        cfg_model, scope, kind = eval(args.backbone, {'dict': dict}), 'mmattn', 'backbone'
    else:
        cfg = Config.fromfile(args.config)
        cfg.merge_from_dict(args.cfg_options)
        scope = cfg.get('default_scope', 'mmattn')
        cfg_model = cfg.model.backbone if args.backbone_only else cfg.model
        kind = 'backbone' if args.backbone_only else None
        if not args.backbone_only and 'backbone' not in cfg.model:
            raise SystemExit(f'{args.config}: model has no backbone; not a detector/segmentor')
    try:
        res = analyse(cfg_model, scope, kind, args.shape, args.device)
    except UnsupportedModel as exc:
        print(f'get_flops: {exc}', file=sys.stderr)
        return 2
    print(format_report(res))
    return 0


if __name__ == '__main__':
    sys.exit(main())
