"""mmattn.BEVVisualizationHook draws each test frame over the model's own range: the voxel
encoder's (mmdet3d slots) and, for a points-in backbone, its VFE's; +-80 m only without either."""
import os.path as osp
from types import SimpleNamespace

import pytest
import torch

import mmattn.visualization as vis
from mmattn.engine.hooks.visualization import BEVVisualizationHook

PCR = [-25.6, -25.6, -2.0, 25.6, 25.6, 4.0]


def _frame():
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData
    boxes = LiDARInstance3DBoxes(torch.tensor([[5.0, 3.0, 0.0, 4.5, 2.0, 1.6, 0.3]]))
    sample = Det3DDataSample(lidar_path='velodyne/1000000.bin')
    sample.pred_instances_3d = InstanceData(bboxes_3d=boxes, scores_3d=torch.tensor([0.9]),
                                            labels_3d=torch.tensor([0]))
    sample.eval_ann_info = dict(gt_bboxes_3d=boxes)
    points = torch.rand(200, 5, generator=torch.Generator().manual_seed(0)) * 40 - 20
    return {'inputs': {'points': [points]}}, [sample]


@pytest.mark.parametrize('layout', ['voxel_encoder', 'backbone_vfe', 'none'])
def test_view_extent_is_the_models_range(tmp_path, monkeypatch, layout):
    drawn = []
    real = vis.draw_bev
    monkeypatch.setattr(vis, 'draw_bev', lambda *a, **k: drawn.append(k) or real(*a, **k))
    vfe = SimpleNamespace(point_cloud_range=PCR)
    meta = {'classes': ('Car', 'Pedestrian', 'Cyclist')}
    model = {'voxel_encoder': SimpleNamespace(voxel_encoder=vfe, dataset_meta=meta),
             'backbone_vfe': SimpleNamespace(backbone=SimpleNamespace(vfe=vfe), dataset_meta=meta),
             'none': SimpleNamespace(dataset_meta=meta)}[layout]
    runner = SimpleNamespace(model=model, work_dir=str(tmp_path), timestamp='ts')
    hook = BEVVisualizationHook(draw=True, test_out_dir='bev')
    data_batch, outputs = _frame()
    hook.after_test_iter(runner, 0, data_batch, outputs)
    assert drawn[0]['point_cloud_range'] == (PCR if layout != 'none' else [-80, -80, -5, 80, 80, 5])
    assert osp.isfile(tmp_path / 'ts' / 'bev' / '1000000.png')
