"""Convert an official BiFormer checkpoint to the state_dict of ``mmattn.BiFormer``.

Accepts the rayleizhu/BiFormer ImageNet releases (``{'model': sd}``, ``biformer_{tiny,small,base}``)
and its mmdet/mmseg checkpoints (``{'state_dict': sd}``, backbone under ``backbone.``), from a local
path or URL. Writes the backbone's state_dict (classifier-only ``norm.*`` / ``head.*`` dropped,
official key names kept), checked by loading it into the matching ``mmattn.BiFormer``.

    python tools/model_converters/biformer2mmattn.py biformer_small_in1k.pth biformer-s_mmattn.pth
    python tools/model_converters/biformer2mmattn.py retinanet_biformer_s.pth biformer-s_det.pth \
        --prefix backbone.

Not needed for training: ``init_cfg=dict(type='Pretrained', checkpoint=...)`` converts on the fly.
"""
import argparse
import os
import os.path as osp
import re
from typing import List, Optional

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from mmattn.models.backbones.biformer import (ARCH_SETTINGS, BiFormer,
                                              convert_biformer_checkpoint)


def infer_arch(state_dict: dict) -> dict:
    """``depth``, ``embed_dim`` and ``topks`` read from a converted state_dict."""
    blocks = {}
    for k in state_dict:
        m = re.match(r'stages\.(\d)\.(\d+)\.', k)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    if sorted(blocks) != [0, 1, 2, 3]:
        raise ValueError(f'expected 4 BiFormer stages, found {sorted(blocks)}')
    dims = [state_dict[f'stages.{i}.0.norm1.weight'].shape[0] for i in range(4)]
    arch = dict(depth=tuple(blocks[i] for i in range(4)), embed_dim=tuple(dims))
    for name, setting in ARCH_SETTINGS.items():
        if setting == arch:
            return dict(arch=name)
    return dict(arch=arch)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint (path or URL)')
    parser.add_argument('dst', help='output file: the mmattn BiFormer state_dict')
    parser.add_argument('--prefix', default=None,
                        help="backbone prefix in detector/segmentor checkpoints ('backbone.'); "
                        'inferred if omitted')
    args = parser.parse_args(argv)

    checkpoint = CheckpointLoader.load_checkpoint(args.src, map_location='cpu')
    try:
        state_dict = convert_biformer_checkpoint(checkpoint, args.prefix, args.src)
        arch = infer_arch(state_dict)
        outs = tuple(i for i in range(4) if f'extra_norms.{i}.weight' in state_dict)
        model = BiFormer(**arch, out_indices=outs or (0, 1, 2, 3))
        model.load_official_state_dict(state_dict, args.src)
    except (ValueError, KeyError) as e:
        raise SystemExit(f'{args.src}: cannot convert: {e}')

    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(state_dict, args.dst)
    print(f'{args.src}: BiFormer {arch["arch"]}, extra norms {list(outs) or "none"}; wrote '
          f'{len(state_dict)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
