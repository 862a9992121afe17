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
import glob
import os.path as osp
import sys
from typing import List, Optional


ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmattn.utils.checkpoint import (CheckpointError, match_state_dict,  # noqa: E402
                                     read_checkpoint, unwrap_state_dict)
from mmattn.utils.convert_cli import build_on_meta, converter_main  # noqa: E402


def config_for(arch: str) -> str:
    found = glob.glob(osp.join(ROOT, 'configs', 'bevanet',
                               f'bevanet-{arch}_*_cityscapes-1024x1024.py'))
    if len(found) != 1:
        raise CheckpointError(f'expected one Cityscapes config for BEVANet arch {arch!r}, found '
                              f'{found}')
    return found[0]


def build_segmentor(config: str, num_classes: Optional[int]):
    def edit(model: dict) -> None:
        if num_classes is not None:
            model.decode_head.num_classes = num_classes
    return build_on_meta(config, 'mmseg', edit)


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


def report(src: str, dst: str, out: dict) -> List[str]:
    meta = out['meta']
    return [f'{src} -> {dst}: {len(out["state_dict"])} tensors, BEVANet arch {meta["arch"]!r} '
            f'(checked against {meta["config"]}); dropped: '
            f'{", ".join(meta["dropped"]) or "nothing"}']


def main(argv: Optional[List[str]] = None) -> None:
    converter_main(__doc__.split('\n\n')[0], 'official checkpoint (path or URL)',
                   'segmentor config to check against (default: the Cityscapes config of the '
                   'arch read from SRC)', convert, report, argv)


if __name__ == '__main__':
    main()
