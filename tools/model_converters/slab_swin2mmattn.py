"""Convert an official SLAB-Swin (xinghaochen/SLAB) checkpoint for mmattn.

Classifier checkpoints (`{'model': sd}`) become the backbone state_dict; detector/segmentor
checkpoints (`{'state_dict': sd}`) keep every entry, with the `backbone.*` ones converted.
The converted file loads with `init_cfg=dict(type='Pretrained', checkpoint=DST)` (add
`prefix='backbone.'` for a detector) or with `load_from=DST`.

    python tools/model_converters/slab_swin2mmattn.py SRC DST
"""
import argparse

import torch

from mmattn.models.backbones.swin_family import convert_slab_swin, convert_official_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output path')
    args = parser.parse_args()
    ckpt = torch.load(args.src, map_location='cpu', weights_only=False)
    if not isinstance(ckpt, dict):
        raise SystemExit(f'{args.src}: expected a dict checkpoint, got {type(ckpt).__name__}')
    out = convert_official_checkpoint(ckpt, convert_slab_swin)
    torch.save(out, args.dst)
    print(f'{args.src} -> {args.dst}: {len(out["state_dict"])} tensors')


if __name__ == '__main__':
    main()
