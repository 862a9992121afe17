"""Inference demo: images or point clouds in, predictions drawn to PNG files.

    python tools/demo.py IMAGE_OR_DIR CONFIG [--weights CKPT] [--out-dir outputs] [--device cpu]
    python tools/demo.py IMAGE_OR_DIR --model NAME [--weights CKPT] [--out-dir outputs]
    python tools/demo.py POINTS.bin_OR_DIR CONFIG [--weights CKPT] [--ann-file INFOS.pkl]

``--model NAME`` is a name of ``model-index.yml``: its config, and its published weights fetched,
checked and converted by :mod:`mmattn.apis` (cached under ``~/.cache/mmattn/checkpoints/``).

The task follows the config's ``default_scope``: ``mmdet`` configs run mmdet's ``DetInferencer``
(boxes, and masks for instance-segmentation models), ``mmseg`` configs run ``MMSegInferencer``,
``mmdet3d`` configs run the LiDAR detector on ``.bin`` point files and draw a bird's-eye view:
points coloured by height, predicted boxes in red and, with ``--ann-file`` (the dataset's info
file), ground-truth boxes in green. Each input ``name.ext`` gives ``OUT_DIR/name.png``.
"""
import argparse
import glob
import os
import os.path as osp
import warnings
from typing import List

import mmcv

import mmattn  # noqa: F401  (compatibility patches)
from mmattn.apis import init_model, resolve
from mmattn.utils.checkpoint import CheckpointError, check_checkpoint

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw a model\'s predictions to PNG files')
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config', nargs='?', help='config file (or --model NAME)')
    parser.add_argument('--model', help='a model-index name instead of CONFIG: its published '
                        'weights are downloaded, checked and converted once (mmattn.apis)')
    parser.add_argument('--weights', help='checkpoint (without it a CONFIG is randomly '
                        "initialised and a --model NAME gets the index's weights)")
    parser.add_argument('--out-dir', default='outputs', help='where the PNGs go')
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1, ...')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='lowest score of a drawn detection')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--ann-file', help='3D only: info .pkl whose boxes are drawn as ground '
                        'truth for the inputs it lists (matched by point-file name)')
    args = parser.parse_args()
    if (args.config is None) == (args.model is None):
        parser.error('give either CONFIG or --model NAME')
    return args


def list_images(inputs: str) -> List[str]:
    """The image files named by ``inputs`` (a file or a folder), sorted."""
    if osp.isdir(inputs):
        files = sorted(f for f in glob.glob(osp.join(inputs, '*'))
                       if f.lower().endswith(IMAGE_EXTS))
        if not files:
            raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTS)}) in folder {inputs}')
        return files
    if not osp.isfile(inputs):
        raise FileNotFoundError(f'input image not found: {inputs}')
    return [inputs]


def build_inferencer(config: str, weights: str, device: str):
    """mmdet's / mmseg's Inferencer of a config file (``weights``: a checkpoint or ``None``)."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    if weights and not osp.isfile(weights):
        raise FileNotFoundError(f'checkpoint not found: {weights}')
    scope = Config.fromfile(config).get('default_scope', 'mmdet')
    if scope not in ('mmdet', 'mmseg'):
        raise ValueError(f'{config}: default_scope {scope!r} is not supported by this demo '
                         "(use an 'mmdet' or 'mmseg' config)")
    im = init_model(config, weights or None, device, resolve_weights=False)
    return im.inferencer, scope


def list_point_files(inputs: str) -> List[str]:
    """The ``.bin`` point files named by ``inputs`` (a file or a folder), sorted."""
    if osp.isdir(inputs):
        files = sorted(glob.glob(osp.join(inputs, '*.bin')))
        if not files:
            raise FileNotFoundError(f'no .bin point files in folder {inputs}')
        return files
    if not osp.isfile(inputs):
        raise FileNotFoundError(f'input point file not found: {inputs}')
    return [inputs]


def gt_boxes_by_file(ann_file: str) -> dict:
    """``{point-file name: [M, 7] bottom-centre LiDAR boxes}`` from an mmdet3d info file."""
    import numpy as np
    from mmengine.fileio import load
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'--ann-file not found: {ann_file}')
    infos = load(ann_file)
    if not isinstance(infos, dict) or 'data_list' not in infos:
        raise ValueError(f"{ann_file}: not an mmdet3d info file (no 'data_list')")
    boxes = {}
    for i, info in enumerate(infos['data_list']):
        try:
            name = osp.basename(info['lidar_points']['lidar_path'])
            rows = [inst['bbox_3d'] for inst in info.get('instances', [])]
        except KeyError as e:
            raise ValueError(f'{ann_file}: data_list[{i}] has no {e}') from None
        boxes[name] = np.asarray(rows, dtype=np.float32).reshape(-1, 7)
    return boxes


def run_3d(args: argparse.Namespace) -> None:
    """LiDAR detection on ``.bin`` files, drawn in bird's-eye view."""
    import numpy as np
    from mmdet3d.apis import inference_detector, init_model
    from mmengine.config import Config

    from mmattn.visualization import draw_bev
    files = list_point_files(args.inputs)
    if args.weights and not osp.isfile(args.weights):
        raise FileNotFoundError(f'checkpoint not found: {args.weights}')
    cfg = Config.fromfile(args.config)
    model = init_model(cfg, args.weights, device=args.device)
    if args.weights:
        check_checkpoint(model, args.weights)
    load = cfg.test_dataloader.dataset.pipeline[0]
    load_dim = load.get('load_dim', 6)
    vfe = getattr(model, 'voxel_encoder', None) or getattr(model.backbone, 'vfe', None)
    pcr = vfe.point_cloud_range if vfe is not None else cfg.get('point_cloud_range')
    classes = model.dataset_meta.get('classes') if getattr(model, 'dataset_meta', None) else \
        cfg.get('class_names')
    gt = gt_boxes_by_file(args.ann_file) if args.ann_file else {}
    os.makedirs(args.out_dir, exist_ok=True)
    for path in files:
        points = np.fromfile(path, dtype=np.float32)
        if points.size % load_dim:
            raise ValueError(f'{path}: {points.size} floats is not a multiple of '
                             f'load_dim={load_dim}')
        points = points.reshape(-1, load_dim)
        bad = int((~np.isfinite(points)).any(1).sum())
        if not len(points):
            warnings.warn(f'{path}: the point cloud is empty (0 points): nothing can be '
                          'detected, the drawing shows an empty scene')
        elif bad:
            warnings.warn(f'{path}: {bad} of {len(points)} points have NaN / inf values; the '
                          'detections are not reliable' + (' (every point is invalid)'
                                                           if bad == len(points) else ''))
        result, _ = inference_detector(model, path)
        pred = result.pred_instances_3d
        out = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + '.png')
        draw_bev(points, pred.bboxes_3d, gt.get(osp.basename(path)), out,
                 point_cloud_range=pcr, pred_scores=pred.scores_3d, pred_labels=pred.labels_3d,
                 class_names=classes, score_thr=args.pred_score_thr)
        print(out)


def main() -> None:
    args = parse_args()
    from mmengine.config import Config
    if args.model:  # config + published weights (fetched, checked, converted, cached)
        try:
            resolved = resolve(args.model, args.weights)
        except (CheckpointError, FileNotFoundError, KeyError) as e:
            raise SystemExit(f'--model {args.model}: {e.args[0] if e.args else e}')
        args.config, args.weights = resolved.config, resolved.checkpoint
    if osp.isfile(args.config) and \
            Config.fromfile(args.config).get('default_scope') == 'mmdet3d':
        run_3d(args)
        return
    images = list_images(args.inputs)
    inferencer, scope = build_inferencer(args.config, args.weights, args.device)
    kwargs = dict(return_vis=True, batch_size=args.batch_size)
    if scope == 'mmdet':
        kwargs.update(pred_score_thr=args.pred_score_thr, no_save_vis=True, no_save_pred=True)
    result = inferencer(images, **kwargs)
    visualizations = result['visualization']
    if not isinstance(visualizations, (list, tuple)):  # MMSegInferencer unwraps a single image
        visualizations = [visualizations]
    os.makedirs(args.out_dir, exist_ok=True)
    for path, vis in zip(images, visualizations, strict=True):
        out = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + '.png')
        mmcv.imwrite(vis[..., ::-1], out)  # visualisations are RGB
        print(out)


if __name__ == '__main__':
    main()
