"""Convert an official BVR (RelationNet++, mmdet 2.8) checkpoint into an mmattn detector checkpoint.

    python tools/model_converters/bvr2mmattn.py SRC DST [--config CONFIG]

SRC: an official BVR detector checkpoint (head keys under ``bbox_head.bbox_head.*``,
``bbox_head.keypoint_head.*``, ``bbox_head.{cls,reg}_transformer.*``), or one that holds only the
head (the same keys, or the ``BVRHead``'s own ``bbox_head.* / keypoint_head.* / *_transformer.*``).
The wrapped head's keys move to ``bbox_head.*`` (mmattn's BVR heads *are* the wrapped mmdet head);
the positional tables (``relative_positional_encoding.base_embedding``, 165 MB each at base 400)
are dropped: mmattn computes them from the config. Read with ``weights_only=True``.

DST: ``{'state_dict', 'meta'}``, checked against the detector of CONFIG (default: the configs/bvr
config of the head type and table size read from SRC): every head parameter must come from SRC
with its shape, and a whole-detector SRC must fit the whole detector; otherwise it exits with an
error naming the file and the keys and writes nothing. The depth of the positional MLP is read
from SRC (the released checkpoints: 2, the configs/bvr configs; the official configs' default: 1);
when it differs from CONFIG a note says which ``pos_cfg.num_layers`` to load DST with. Load DST
with ``load_from=DST``, ``tools/test.py CONFIG DST`` or ``mmengine.runner.load_checkpoint(model,
DST)``.
"""
import os.path as osp
import re
import sys
from typing import List, Optional


ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmattn.utils.checkpoint import (CheckpointError, match_state_dict,  # noqa: E402
                                     read_checkpoint, unwrap_state_dict)
from mmattn.utils.convert_cli import build_on_meta, converter_main  # noqa: E402

CONFIGS = {  # (wrapped head predictor, table size) -> config
    ('retina_cls', 400): 'configs/bvr/retinanet-bvr_r50_fpn_1x_coco.py',
    ('retina_cls', 300): 'configs/bvr/retinanet-bvr_x101-64x4d-dconv-c3-c5_fpn_ms-2x_coco.py',
    ('conv_cls', 300): 'configs/bvr/fcos-bvr_x101-64x4d-dconv-c3-c5_fpn_ms-2x_coco.py',
    ('atss_cls', 300): 'configs/bvr/atss-bvr_x101-64x4d-dconv-c3-c5_fpn_ms-2x_coco.py',
}


def guess_config(official: dict, src: str) -> str:
    """The configs/bvr config matching the head type and positional table size of ``official``."""
    kind = next((k for k in ('retina_cls', 'conv_cls', 'atss_cls')
                 if any(key.endswith(f'bbox_head.{k}.weight') or key == f'{k}.weight'
                        for key in official)), None)
    tables = [v for k, v in official.items() if k.endswith('base_embedding')]
    size = tables[0].shape[1] - 1 if tables else None
    if size is None:  # converted before, or a file without tables: R-50 is the only GN head
        size = 400 if any('keypoint_layers.center.0.gn.weight' in k for k in official) else 300
    if (kind, size) not in CONFIGS:
        raise CheckpointError(f'{src}: no configs/bvr config for a {kind} head with a '
                              f'{size}-table; pass --config')
    return osp.join(ROOT, CONFIGS[(kind, size)])


def positional_layers(state_dict: dict) -> Optional[int]:
    """Depth of the positional MLP in a converted state_dict (``embedding_transform.<i>``)."""
    found = [int(m.group(1)) for k in state_dict
             for m in [re.search(r'relative_positional_encoding\.embedding_transform\.(\d+)\.conv'
                                 r'\.weight$', k)] if m]
    return max(found) + 1 if found else None


def build_detector(config: str, num_layers: Optional[int] = None):
    def edit(model: dict) -> None:
        if num_layers is not None:
            model.bbox_head.pos_cfg.num_layers = num_layers
    return build_on_meta(config, 'mmdet', edit)


def convert(src: str, config: Optional[str] = None) -> dict:
    """The converted checkpoint of ``src``; raises :class:`CheckpointError` if it does not fit."""
    from mmattn.models.heads.bvr import convert_bvr_official
    official = unwrap_state_dict(read_checkpoint(src), src)
    state_dict, dropped = convert_bvr_official(official)
    if not any(k.startswith('bbox_head.keypoint_head.') for k in state_dict):
        raise CheckpointError(f'{src} holds no BVR head (no bbox_head.keypoint_head.* or '
                              f'keypoint_head.* keys); keys e.g. {sorted(official)[:5]}')
    config = config or guess_config(official, src)
    from mmengine.config import Config
    layers = positional_layers(state_dict)
    configured = Config.fromfile(config).model.bbox_head.get('pos_cfg', {}).get('num_layers', 1)
    model = build_detector(config, layers)
    whole = any(not k.startswith('bbox_head.') for k in state_dict)
    if whole:
        report = match_state_dict(model, state_dict)
    else:
        report = match_state_dict(model.bbox_head,
                                  {k[len('bbox_head.'):]: v for k, v in state_dict.items()})
    if not report.ok:
        raise CheckpointError(f'{src} does not fit the {"detector" if whole else "bbox_head"} '
                              f'of {osp.relpath(config, ROOT)}: {report.problems()}')
    meta = dict(converted_from=osp.basename(src), model='bvr', config=osp.relpath(config, ROOT),
                head_only=not whole, dropped=dropped, positional_layers=layers,
                config_positional_layers=configured)
    return {'state_dict': state_dict, 'meta': meta}


def report(src: str, dst: str, out: dict) -> List[str]:
    meta = out['meta']
    lines = [f'{src} -> {dst}: {len(out["state_dict"])} tensors '
             f'({"head only" if meta["head_only"] else "whole detector"}), checked against '
             f'{meta["config"]}; dropped: {", ".join(meta["dropped"]) or "nothing"}']
    if meta['positional_layers'] not in (None, meta['config_positional_layers']):
        lines.append(f'note: {src} has a {meta["positional_layers"]}-layer positional MLP, '
                     f'{meta["config"]} {meta["config_positional_layers"]}: load it with '
                     f'model.bbox_head.pos_cfg.num_layers={meta["positional_layers"]}')
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    converter_main(__doc__.split('\n\n')[0], 'official checkpoint (path or URL)',
                   'detector config to check against (default: the configs/bvr config of the '
                   'head type and table size read from SRC)', convert, report, argv)


if __name__ == '__main__':
    main()
