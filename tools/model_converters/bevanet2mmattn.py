"""Convert an official BEVANet checkpoint into an mmattn segmentor checkpoint.

    python tools/model_converters/bevanet2mmattn.py SRC DST [--config CONFIG]

SRC: a fine-tuned ``BEVANet_SEG`` file of the official repository (Cityscapes / CamVid / ADE20K
``.pt``: every key ``model.``-prefixed, plus the loss's ``sem_loss.criterion.weight``, dropped);
a bare ``BEVANet_SEG`` state_dict or ``module.`` / ``state_dict`` wrappers work too. DST:
``{'state_dict', 'meta'}`` with ``backbone.*`` (``mmattn.BEVANet``) and ``decode_head.*``
(``mmattn.BEVANetHead``) keys; it loads strictly into the config's segmentor
(``load_checkpoint(model, DST)``, ``tools/test.py CONFIG DST``).

The result is checked against the segmentor of CONFIG (default: the
``configs/bevanet/bevanet-<arch>_*_cityscapes-1024x1024.py`` of the arch read from SRC, with the
number of classes of SRC): a missing, unexpected or mis-shaped key exits with an error naming the
file, the arch SRC looks like and the arch of CONFIG; nothing is written then. An ImageNet
classifier (``BEVANet_CLS_32``) has no segment heads: load it with the backbone's
``init_cfg=dict(type='Pretrained', checkpoint=SRC)`` instead.
"""
import argparse
import glob
import os
import os.path as osp
import sys
from typing import List, Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmattn.utils.checkpoint import (CheckpointError, match_state_dict,  # noqa: E402
                                     read_checkpoint, unwrap_state_dict)


def config_for(arch: str) -> str:
    found = glob.glob(osp.join(ROOT, 'configs', 'bevanet',
                               f'bevanet-{arch}_*_cityscapes-1024x1024.py'))
    if len(found) != 1:
        raise CheckpointError(f'expected one Cityscapes config for BEVANet arch {arch!r}, found '
                              f'{found}')
    return found[0]


def build_segmentor(config: str, num_classes: Optional[int]):
    import mmattn  # noqa: F401  (config patches)
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config)
    if num_classes is not None:
        cfg.model.decode_head.num_classes = num_classes
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
        with torch.device('meta'):
            return MODELS.build(cfg.model)


def convert(src: str, config: Optional[str] = None) -> dict:
    """The converted checkpoint of ``src``; raises :class:`CheckpointError` if it does not fit."""
    from mmattn.models.backbones.bevanet import (convert_bevanet_official,
                                                 describe_bevanet_layout, guess_bevanet_arch)
    official = unwrap_state_dict(read_checkpoint(src), src)
    state_dict, dropped = convert_bevanet_official(official)
    if 'backbone.conv1.0.conv.weight' not in state_dict:
        raise CheckpointError(f'{src} holds no BEVANet weights (no conv1.0.weight, with or without '
                              f'"model."); keys e.g. {sorted(official)[:5]}')
    if not any(k.startswith('decode_head.') for k in state_dict):
        raise CheckpointError(f'{src} has no segment heads (an ImageNet classifier?): load it '
                              "with the backbone's init_cfg=dict(type='Pretrained', "
                              'checkpoint=...) instead')
    arch = guess_bevanet_arch(state_dict)
    if config is None:
        if arch is None:
            raise CheckpointError(f'{src} holds {describe_bevanet_layout(state_dict)}: pass '
                                  '--config')
        config = config_for(arch)
    cls = state_dict.get('decode_head.conv_seg.weight')
    model = build_segmentor(config, None if cls is None else cls.shape[0])
    report = match_state_dict(model, state_dict)
    if not report.ok:
        raise CheckpointError(
            f'{src} holds {describe_bevanet_layout(state_dict)} but {osp.basename(config)} builds '
            f'{describe_bevanet_layout(model.state_dict())}: {report.problems()}')
    meta = dict(converted_from=osp.basename(src), model='bevanet', arch=arch or '',
                config=osp.relpath(config, ROOT), dropped=dropped)
    return {'state_dict': state_dict, 'meta': meta}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint (path or URL)')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--config', default=None,
                        help='segmentor config to check against (default: the Cityscapes config '
                        'of the arch read from SRC)')
    args = parser.parse_args(argv)
    try:
        out = convert(args.src, args.config)
    except (CheckpointError, FileNotFoundError, KeyError) as e:
        raise SystemExit(f'{args.src}: cannot convert: {e}')
    dst = osp.abspath(args.dst)
    os.makedirs(osp.dirname(dst), exist_ok=True)
    torch.save(out, dst)
    meta = out['meta']
    print(f'{args.src} -> {dst}: {len(out["state_dict"])} tensors, BEVANet arch '
          f'{meta["arch"]!r} (checked against {meta["config"]}); dropped: '
          f'{", ".join(meta["dropped"]) or "nothing"}')


if __name__ == '__main__':
    main()
