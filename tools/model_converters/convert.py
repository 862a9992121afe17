"""Convert an official checkpoint of a model family into mmattn's layout.

    python tools/model_converters/convert.py --model FAMILY SRC DST [--prefix P]

FAMILY is a checkpoint family of ``mmattn.utils.checkpoint`` (``poolformer``, ``biformer``,
``agent_swin``, ``slab_swin``, ...). SRC is a local path or URL, read with
``weights_only=True``. The family's filter (next to the model) maps the backbone's official keys
to mmattn's; the result is checked by loading it into the model of the arch read from the file.

DST is an mmengine checkpoint ``{'state_dict': ..., 'meta': ...}``:

* a classifier or a bare backbone: the backbone state_dict (classifier-only keys dropped); load it
  with ``init_cfg=dict(type='Pretrained', checkpoint=DST)``;
* a detector / segmentor (backbone under ``--prefix``, found as ``backbone.`` when not given):
  every entry, the backbone's converted under the same prefix; load it with ``load_from=DST`` or
  ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.

An empty checkpoint, another model's checkpoint or another arch's exits with an error naming the
file and keys, and writes nothing. ``<family>2mmattn.py`` in this folder are aliases.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmattn.utils.checkpoint import (FAMILIES, FAMILY_MODULES, CheckpointError,  # noqa: E402
                                     convert_checkpoint)


def convert(family_name: str, src: str, prefix: Optional[str] = None) -> dict:
    """The converted checkpoint of ``src`` (:func:`mmattn.utils.checkpoint.convert_checkpoint`)."""
    return convert_checkpoint(family_name, src, prefix)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    families = ', '.join(sorted(set(FAMILIES) | set(FAMILY_MODULES)))
    parser.add_argument('--model', required=True, help=f'checkpoint family: {families}')
    parser.add_argument('src', help='official checkpoint (path or URL)')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--prefix', default=None,
                        help="where the backbone is in SRC ('backbone.' in detectors / "
                        'segmentors); found when omitted')
    args = parser.parse_args(argv)
    try:
        out = convert(args.model, args.src, args.prefix)
    except (CheckpointError, FileNotFoundError, KeyError) as e:
        raise SystemExit(f'{args.src}: cannot convert: {e}')
    dst = osp.abspath(args.dst)
    os.makedirs(osp.dirname(dst), exist_ok=True)
    tmp = dst + '.tmp'
    torch.save(out, tmp)
    os.replace(tmp, dst)
    meta = out['meta']
    print(f'{args.src}: {args.model} {meta["arch"]}'.rstrip()
          + (f', backbone under {meta["prefix"]!r}' if meta['prefix'] else '')
          + f'; wrote {len(out["state_dict"])} tensors to {args.dst}')
    if meta['dropped']:
        print(f'dropped: {", ".join(meta["dropped"])}')


if __name__ == '__main__':
    main()
