"""Check a config's COCO-format datasets for annotation problems, without training.

    python tools/analysis_tools/check_dataset.py CONFIG [--cfg-options k=v ...]

Reports, per dataloader and annotation file, with the annotation / image ids: unknown
categories, zero-size boxes, boxes outside their image, images listed but missing on disk, and
how many images have no valid annotation (training drops them with ``filter_empty_gt``). Exits 1
when a training set would be empty. ``tools/train.py`` and ``tools/test.py`` run the same check
at start-up (see ``mmattn.datasets.check``).
"""
import argparse
import sys

from mmengine.config import DictAction

import mmattn  # noqa: F401
from mmattn.datasets.check import check_datasets
from mmattn.utils.runner import check_data_paths, load_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    cfg = load_config(args.config, args.cfg_options)
    check_data_paths(cfg)
    try:
        reports = check_datasets(cfg)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if not reports:
        print(f'{args.config}: no COCO-format dataset to check')
    for report in reports:
        print('\n'.join(report.lines()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
