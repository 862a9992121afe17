"""Inference demo: images in, predictions (boxes / masks / segmentation) drawn to PNG files.

    python tools/demo.py IMAGE_OR_DIR CONFIG [--weights CKPT] [--out-dir outputs] [--device cpu]

The task follows the config's ``default_scope``: ``mmdet`` configs run mmdet's ``DetInferencer``
(boxes, and masks for instance-segmentation models), ``mmseg`` configs run ``MMSegInferencer``.
Each input ``name.ext`` gives ``OUT_DIR/name.png``.
"""
import argparse
import glob
import os
import os.path as osp
from typing import List

import mmcv

import mmattn  # noqa: F401  (compatibility patches)
from mmattn.utils.checkpoint import check_checkpoint

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw a model\'s predictions to PNG files')
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config', help='config file')
    parser.add_argument('--weights', help='checkpoint (without it the model is randomly initialised)')
    parser.add_argument('--out-dir', default='outputs', help='where the PNGs go')
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1, ...')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='lowest score of a drawn detection')
    parser.add_argument('--batch-size', type=int, default=1)
    return parser.parse_args()


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
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    if weights and not osp.isfile(weights):
        raise FileNotFoundError(f'checkpoint not found: {weights}')
    scope = Config.fromfile(config).get('default_scope', 'mmdet')
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=config, weights=weights, device=device,
                                   show_progress=True)
    elif scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=config, weights=weights, device=device)
    else:
        raise ValueError(f'{config}: default_scope {scope!r} is not supported by this demo '
                         "(use an 'mmdet' or 'mmseg' config)")
    if weights:
        check_checkpoint(inferencer.model, weights)
    return inferencer, scope


def main() -> None:
    args = parse_args()
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
