"""tools/analysis_tools/analyze_3d_boxes.py on hand-made boxes: oracle scores are the 3D IoU with
the best same-class ground-truth box, and each nearest-box error is attributed to its component.
(The CLI runs on a trained checkpoint in test_scatterformer_e2e.py.)"""
import importlib.util
import math
import os.path as osp

import pytest
import torch

import mmattn  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location(
        'analyze_3d_boxes', osp.join(ROOT, 'tools/analysis_tools/analyze_3d_boxes.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GT = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],     # car
                   [10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.5],    # car
                   [0.0, 10.0, 0.0, 0.8, 0.8, 1.8, 0.0]])   # pedestrian
GT_LABELS = torch.tensor([0, 0, 1])


def test_oracle_scores_are_the_best_same_class_iou(tool):
    preds = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],    # = car 0
                          [11.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.5],   # car 1 shifted 1 m (along x)
                          [0.0, 10.0, 0.0, 0.8, 0.8, 1.8, 0.0],   # on the pedestrian, as a cyclist
                          [0.0, 10.0, 0.0, 0.8, 0.8, 1.8, 0.0]])  # the pedestrian
    scores = tool.oracle_scores(preds, torch.tensor([0, 0, 2, 1]), GT, GT_LABELS)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert 0.4 < scores[1] < 0.8
    assert scores[1] == pytest.approx(float(tool._iou3d(preds[1:2], GT[1:2])[0, 0]), abs=1e-6)
    assert scores[2] == 0.0      # no cyclist in the ground truth
    assert scores[3] == pytest.approx(1.0, abs=1e-5)


def test_nearest_box_errors_fix_the_wrong_component(tool):
    turned = GT[0].clone()
    turned[6] = math.radians(10)
    low = GT[1].clone()
    low[2] -= 0.3                # 0.3 m low: the 1.5 m tall boxes overlap over 1.2 m
    far = GT[0].clone()
    far[0] = 3.0                 # farther from both cars than the other predictions
    preds = torch.stack([turned, low, far])
    rows = tool.nearest_box_errors(preds, torch.tensor([0, 0, 0]), GT, GT_LABELS)
    assert len(rows) == 2        # the pedestrian has no prediction of its class
    (l0, yaw0, iou0, fix0), (l1, yaw1, iou1, fix1) = rows
    assert l0 == l1 == 0
    assert yaw0 == pytest.approx(10.0, abs=1e-4) and iou0 < 0.9
    assert fix0['yaw'] == pytest.approx(1.0, abs=1e-5) and fix0['z'] == pytest.approx(iou0)
    assert yaw1 == pytest.approx(0.0, abs=1e-4)
    assert iou1 == pytest.approx(1.2 / 1.8, abs=1e-4)   # intersection 1.2 / union (1.5 + 1.5 - 1.2)
    assert fix1['z'] == pytest.approx(1.0, abs=1e-5) and fix1['yaw'] == pytest.approx(iou1)
