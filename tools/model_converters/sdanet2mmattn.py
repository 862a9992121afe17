"""Convert an official SDANet (mmdet 1.x Cascade Mask R-CNN + SDA) checkpoint to mmattn's config.

    python tools/model_converters/sdanet2mmattn.py SRC DST [--config CONFIG]

SRC: the released detector of bywang2018/security-dataset (mmdet 1.1 ``CascadeRCNN`` with the
top-level ``selective_attention_{0..4}.*`` modules), read with ``weights_only=True``; a checkpoint
holding only some of its modules (e.g. just the SDA modules, or no mask heads) converts too. DST:
``{'state_dict', 'meta'}`` for ``configs/sdanet/sdanet_cascade-mask-rcnn_r101_fpn_1x_pidray.py``
(or ``cascade-mask-rcnn_r101_fpn_1x_pidray.py`` when SRC has no SDA modules; ``--config`` for
another), to use with ``load_from=DST`` or ``tools/test.py CONFIG DST``:

* ``selective_attention_{i}.*`` -> ``neck.1.attentions.{i}.*`` (``channel_att.fc.0/1`` ->
  ``channel_att.squeeze.conv/bn``, ``spatial_att.conv`` -> ``spatial_att.convs``);
* ``neck.*`` (FPN) -> ``neck.0.*`` when the config's neck is ``[FPN, SDANeck]``;
* ``bbox_head.{i}.*`` / ``mask_head.{i}.*`` -> ``roi_head.bbox_head.{i}.*`` /
  ``roi_head.mask_head.{i}.*``; background moves from class 0 (mmdet 1.x) to the last class in every ``fc_cls`` and channel 0
  of every ``conv_logits`` is dropped;
* ``backbone.*`` and ``rpn_head.*`` keep their names.

Every converted key must exist in the config's detector with the same shape; a full checkpoint
must also cover every detector key. Otherwise the script exits with the file and keys named and
writes nothing. mmdet 1.x used the "+1" box-size convention, so detections can differ slightly.
"""
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmattn.utils.checkpoint import (CheckpointError, match_state_dict,  # noqa: E402
                                     read_checkpoint, unwrap_state_dict)
from mmattn.utils.convert_cli import build_on_meta, converter_main  # noqa: E402

SDA_CONFIG = osp.join(ROOT, 'configs', 'sdanet', 'sdanet_cascade-mask-rcnn_r101_fpn_1x_pidray.py')
BASE_CONFIG = osp.join(ROOT, 'configs', 'sdanet', 'cascade-mask-rcnn_r101_fpn_1x_pidray.py')
_STAGE = re.compile(r'^(bbox_head|mask_head)\.(\d+)\.(.+)$')


def convert_sdanet_official(state_dict: Dict[str, torch.Tensor], fpn_prefix: str = 'neck.0.'
                            ) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """Official mmdet 1.x SDANet keys -> mmattn detector keys, and the official keys not converted
    (mmdet 1.x bookkeeping such as ``*.num_batches_tracked`` is kept, anything unknown listed)."""
    from mmattn.models.necks.sda import convert_sda_official
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    unknown = []
    sda = convert_sda_official(state_dict)
    out.update(('neck.1.' + k, v) for k, v in sda.items())
    for key, value in state_dict.items():
        if key.startswith('selective_attention_'):
            continue
        if key.startswith(('backbone.', 'rpn_head.')):
            out[key] = value
        elif key.startswith('neck.'):
            out[fpn_prefix + key[len('neck.'):]] = value
        elif _STAGE.match(key):
            head, stage, rest = _STAGE.match(key).groups()
            if rest.startswith('fc_cls.'):   # background: first row (1.x) -> last (3.x)
                value = torch.cat([value[1:], value[:1]])
            elif rest.startswith('conv_logits.'):   # 1.x predicts a background mask channel
                value = value[1:]
            out[f'roi_head.{head}.{stage}.{rest}'] = value
        else:
            unknown.append(key)
    return out, unknown


def build_detector(config: str, num_classes: Optional[int]):
    def edit(model: dict) -> None:
        if num_classes is not None:
            for head in model.roi_head.bbox_head:
                head.num_classes = num_classes
            model.roi_head.mask_head.num_classes = num_classes
    return build_on_meta(config, 'mmdet', edit)


def convert(src: str, config: Optional[str] = None) -> dict:
    """The converted checkpoint of ``src``; raises :class:`CheckpointError` if it does not fit."""
    official = unwrap_state_dict(read_checkpoint(src), src)
    has_sda = any(k.startswith('selective_attention_') for k in official)
    config = config or (SDA_CONFIG if has_sda else BASE_CONFIG)
    cls = official.get('bbox_head.0.fc_cls.weight')
    model = build_detector(config, None if cls is None else cls.shape[0] - 1)
    own = model.state_dict()
    fpn = 'neck.0.' if 'neck.0.lateral_convs.0.conv.weight' in own else 'neck.'
    state_dict, unknown = convert_sdanet_official(official, fpn)
    if unknown:
        raise CheckpointError(f'{src}: keys of no SDANet / Cascade Mask R-CNN module: '
                              f'{", ".join(unknown[:8])}' + (f' ... ({len(unknown)} in all)'
                                                            if len(unknown) > 8 else ''))
    if not state_dict:
        raise CheckpointError(f'{src} holds no SDANet weights; keys e.g. {sorted(official)[:5]}')
    report = match_state_dict(model, state_dict)
    full = any(k.startswith('backbone.') for k in state_dict) and any(
        k.startswith('roi_head.') for k in state_dict)
    if report.unexpected or report.mismatched or (full and report.missing):
        raise CheckpointError(f'{src} does not fit {osp.basename(config)}: {report.problems()}')
    parts = sorted({k.split('.')[0] if not k.startswith(('neck.1.', 'roi_head.')) else
                    '.'.join(k.split('.')[:2]) for k in state_dict})
    meta = dict(converted_from=osp.basename(src), model='sdanet',
                config=osp.relpath(config, ROOT), modules=parts,
                missing=report.missing)
    return {'state_dict': state_dict, 'meta': meta}


def report(src: str, dst: str, out: dict) -> List[str]:
    meta = out['meta']
    lines = [f'{src} -> {dst}: {len(out["state_dict"])} tensors of {", ".join(meta["modules"])} '
             f'(checked against {meta["config"]})']
    if meta['missing']:
        lines.append(f'not in {src} (keep their initialisation): {len(meta["missing"])} keys, '
                     f'e.g. {", ".join(meta["missing"][:5])}')
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    converter_main(__doc__.split('\n\n')[0], 'official SDANet checkpoint (path or URL)',
                   'detector config to check against (default: the PIDray SDANet config, or the '
                   'Cascade Mask R-CNN one for SRC without SDA modules)', convert, report, argv)


if __name__ == '__main__':
    main()
