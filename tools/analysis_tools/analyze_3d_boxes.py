"""Where a 3D detector's AP goes, on one split of its dataset.

    python tools/analysis_tools/analyze_3d_boxes.py CONFIG CHECKPOINT [--split val] \
        [--alphas 0 0.3 0.68 1] [--max-frames N] [--cfg-options k=v ...]

Runs the checkpoint over the split (the config's ``test_dataloader`` with
``waymo_infos_{split}.pkl``) and prints, per class, with the config's evaluator (e.g.
``mmattn.WaymoMetric``):

* **AP as scored** — what ``tools/test.py`` reports;
* **AP with oracle ranking** — the same boxes, each scored by its 3D IoU with the best
  ground-truth box of its class: how much AP the boxes hold and the scores lose;
* **AP with the IoU rectifier swept** (heads with ``test_cfg.iou_rectifier``, e.g.
  ``mmattn.CenterHeadIoU``): ``alpha`` of every class set to each ``--alphas`` value
  (score ``heatmap^(1 - alpha) * iou^alpha``);
* **nearest-box errors** — for each ground-truth box with more than 5 points, the prediction of
  its class with the nearest BEV centre: median heading error, median 3D IoU, the share with
  IoU >= 0.7, and the same two IoU numbers with one component (centre xy, z, length, width,
  height, heading) replaced by the ground truth's: the component whose fix gains most limits the
  boxes most.
"""
import argparse
import copy
import math
import os.path as osp
import sys
from typing import Dict, List, Sequence

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

COMPONENTS = {'xy': [0, 1], 'z': [2], 'l': [3], 'w': [4], 'h': [5], 'yaw': [6]}


def _iou3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N, 7] x [M, 7]`` bottom-centre LiDAR boxes -> ``[N, M]`` 3D IoU."""
    from mmdet3d.structures import LiDARInstance3DBoxes
    if len(a) == 0 or len(b) == 0:
        return a.new_zeros(len(a), len(b))
    return LiDARInstance3DBoxes.overlaps(LiDARInstance3DBoxes(a[:, :7].float()),
                                         LiDARInstance3DBoxes(b[:, :7].float()))


def oracle_scores(boxes: torch.Tensor, labels: torch.Tensor, gt_boxes: torch.Tensor,
                  gt_labels: torch.Tensor) -> torch.Tensor:
    """Each predicted box's 3D IoU with the best ground-truth box of its class (0 if none)."""
    scores = boxes.new_zeros(len(boxes))
    for c in labels.unique().tolist():
        p, g = labels == c, gt_labels == c
        if g.any():
            scores[p] = _iou3d(boxes[p], gt_boxes[g]).max(1).values
    return scores


def nearest_box_errors(boxes: torch.Tensor, labels: torch.Tensor, gt_boxes: torch.Tensor,
                       gt_labels: torch.Tensor) -> List[tuple]:
    """Per ground-truth box: ``(label, |heading error| deg, IoU, {component: IoU with it fixed})``
    of the same-class prediction with the nearest BEV centre (boxes without one are skipped)."""
    rows = []
    for g, gl in zip(gt_boxes, gt_labels.tolist()):
        cand = boxes[labels == gl]
        if len(cand) == 0:
            continue
        p = cand[(cand[:, :2] - g[:2]).norm(dim=1).argmin()][:7]
        dyaw = (float(p[6] - g[6]) + math.pi) % (2 * math.pi) - math.pi
        fixed = {}
        for name, idx in COMPONENTS.items():
            q = p.clone()
            q[idx] = g[idx]
            fixed[name] = float(_iou3d(q[None], g[None, :7])[0, 0])
        rows.append((gl, abs(math.degrees(dyaw)), float(_iou3d(p[None], g[None, :7])[0, 0]),
                     fixed))
    return rows


def _evaluate(runner, frames: Sequence[tuple], score_fn=None) -> Dict[str, float]:
    evaluator = runner.build_evaluator(runner.cfg.test_evaluator)
    evaluator.dataset_meta = runner.test_dataloader.dataset.metainfo
    for data, outputs in frames:
        outputs = copy.deepcopy(outputs)
        if score_fn is not None:
            for out in outputs:
                inst = out.pred_instances_3d
                inst.scores_3d = score_fn(out)
        evaluator.process(data_samples=outputs, data_batch=data)
    return evaluator.evaluate(len(frames))


def main(argv: Sequence[str] = None) -> Dict[str, dict]:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--split', default='val', help='waymo_infos_{split}.pkl')
    parser.add_argument('--alphas', type=float, nargs='*', default=[0.0, 0.3, 0.68, 1.0])
    parser.add_argument('--max-frames', type=int, default=None)
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)

    import mmattn  # noqa: F401
    from mmattn.utils.runner import build_runner, load_config
    cfg = load_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or osp.join(ROOT, 'work_dirs', 'analyze_3d_boxes')
    cfg.load_from = args.checkpoint
    cfg.test_dataloader.dataset.ann_file = f'waymo_infos_{args.split}.pkl'
    if args.max_frames is not None:
        cfg.test_dataloader.dataset.indices = args.max_frames
    runner = build_runner(cfg)
    runner.load_checkpoint(args.checkpoint, map_location='cpu')
    model = runner.model.eval()
    head = model.bbox_head
    classes = runner.test_dataloader.dataset.metainfo['classes']

    def run_all() -> List[tuple]:
        frames = []
        for data in runner.test_dataloader:
            with torch.no_grad():
                frames.append((data, model.test_step(data)))
        return frames

    def gt_of(out):
        ann = out.eval_ann_info
        return ann['gt_bboxes_3d'].tensor, torch.as_tensor(ann['gt_labels_3d']).long()

    def oracle(out):
        inst = out.pred_instances_3d
        return oracle_scores(inst.bboxes_3d.tensor, inst.labels_3d.long(), *gt_of(out))

    frames = run_all()
    results = {'as scored': _evaluate(runner, frames), 'oracle ranking': _evaluate(runner, frames,
                                                                                     oracle)}
    test_cfg = getattr(head, 'test_cfg', None) or {}
    if test_cfg.get('iou_rectifier') is not None:
        base = copy.deepcopy(head.test_cfg)
        for a in args.alphas:
            head.test_cfg = {**base, 'iou_rectifier': [a] * len(classes)}
            results[f'rectifier alpha {a:g}'] = _evaluate(runner, run_all())
        head.test_cfg = base

    ap_keys = [k for k in next(iter(results.values())) if k.endswith('/L1 AP')] or \
        sorted(next(iter(results.values())))
    print(f'\n{len(frames)} frames of {args.split}; {", ".join(ap_keys)}')
    for name, res in results.items():
        print(f'{name:>22}: ' + '  '.join(f'{res[k]:.3f}' for k in ap_keys))

    rows = []
    for _, outputs in frames:
        for out in outputs:
            inst = out.pred_instances_3d
            gt, gl = gt_of(out)
            keep = torch.as_tensor(out.eval_ann_info.get('num_lidar_pts', [6] * len(gl))) > 5
            rows += nearest_box_errors(inst.bboxes_3d.tensor, inst.labels_3d.long(), gt[keep],
                                       gl[keep])
    errors = {}
    print('\nnearest prediction per ground-truth box (> 5 points): median |heading error|, '
          'median IoU, share IoU >= 0.7; then the two IoU numbers with one component fixed')
    for c, name in enumerate(classes):
        sel = [r for r in rows if r[0] == c]
        if not sel:
            continue
        yaw = np.median([r[1] for r in sel])
        iou = np.array([r[2] for r in sel])
        fixed = {k: np.array([r[3][k] for r in sel]) for k in COMPONENTS}
        errors[name] = dict(n=len(sel), heading_deg=float(yaw), iou=float(np.median(iou)),
                            iou07=float((iou >= 0.7).mean()),
                            fixed={k: (float(np.median(v)), float((v >= 0.7).mean()))
                                   for k, v in fixed.items()})
        print(f'{name}: n {len(sel)}  heading {yaw:.1f} deg  IoU {np.median(iou):.2f}  '
              f'>=0.7 {(iou >= 0.7).mean():.2f}  | ' + '  '.join(
                  f'{k} {np.median(v):.2f}/{(v >= 0.7).mean():.2f}' for k, v in fixed.items()))
    return dict(ap=results, errors=errors)


if __name__ == '__main__':
    main()
