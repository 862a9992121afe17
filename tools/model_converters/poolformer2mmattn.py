"""Convert an official PoolFormer checkpoint to the state_dict of ``mmattn.PoolFormer``.

Accepts the sail-sg classifier releases (``poolformer_s12.pth.tar`` ...), sail-sg mmdet/mmseg
checkpoints, mmpretrain classifiers and mmseg segmentors built on ``mmpretrain.PoolFormer`` (local
path or URL). Writes the backbone's state_dict (classifier-only keys dropped), checked against the
architecture read from the file.

    python tools/model_converters/poolformer2mmattn.py \
        poolformer_s12.pth.tar poolformer_s12_mmattn.pth
    python tools/model_converters/poolformer2mmattn.py \
        mask_rcnn_poolformer_s12.pth s12_backbone.pth --prefix backbone.

Not needed for training: ``init_cfg=dict(type='Pretrained', checkpoint=...)`` converts on the fly.
"""
import argparse
import os
import os.path as osp
import re
from typing import List, Optional

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from mmattn.models.backbones.poolformer import (PoolFormer, check_poolformer_state_dict,
                                                convert_poolformer_checkpoint)


def infer_arch(state_dict: dict) -> dict:
    """``layers``, ``embed_dims`` and ``mlp_ratios`` read from a converted state_dict."""
    blocks = {}
    for k in state_dict:
        m = re.match(r'network\.(\d+)\.(\d+)\.', k)
        if m and int(m.group(1)) % 2 == 0:
            stage = int(m.group(1)) // 2
            blocks[stage] = max(blocks.get(stage, 0), int(m.group(2)) + 1)
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise ValueError(f'no PoolFormer stages found (first keys: {list(state_dict)[:5]})')
    dims = [state_dict[f'network.{2 * i}.0.norm1.weight'].shape[0] for i in range(len(blocks))]
    ratios = [
        state_dict[f'network.{2 * i}.0.mlp.fc1.weight'].shape[0] // dims[i]
        for i in range(len(blocks))
    ]
    return dict(layers=[blocks[i] for i in range(len(blocks))], embed_dims=dims, mlp_ratios=ratios)


def arch_name(arch: dict) -> Optional[str]:
    for name, s in PoolFormer.arch_settings.items():
        if s['layers'] == arch['layers'] and s['embed_dims'] == arch['embed_dims'] and set(
                arch['mlp_ratios']) == {4}:
            return name
    return None


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint (path or URL)')
    parser.add_argument('dst', help='output file: the mmattn PoolFormer state_dict')
    parser.add_argument(
        '--prefix',
        default=None,
        help="backbone prefix in detector/segmentor checkpoints ('backbone.'); inferred if omitted")
    args = parser.parse_args(argv)

    checkpoint = CheckpointLoader.load_checkpoint(args.src, map_location='cpu')
    try:
        state_dict, dropped, ignored = convert_poolformer_checkpoint(checkpoint, args.prefix,
                                                                     args.src)
        arch = infer_arch(state_dict)
        name = arch_name(arch)
        outs = [i for i in range(len(arch['layers'])) if f'norm{2 * i}.weight' in state_dict]
        model = PoolFormer(arch=name or arch, out_indices=outs or (0, 1, 2, 3))
        state_dict, _, _ = check_poolformer_state_dict(model, state_dict, args.src)
    except (ValueError, KeyError, RuntimeError) as e:
        raise SystemExit(f'{args.src}: cannot convert: {e}')

    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(state_dict, args.dst)
    print(
        f'{args.src}: PoolFormer arch {name or arch}, output norms '
        f'{[f"norm{2 * i}" for i in outs] or "none"}; '
        f'wrote {len(state_dict)} tensors to {args.dst}')
    if dropped:
        print(f'dropped classifier-only keys: {", ".join(dropped)}')
    if ignored:
        print(f'ignored {ignored} keys outside the backbone')


if __name__ == '__main__':
    main()
