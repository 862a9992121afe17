"""WaymoMetric on the bundled val split with the ground truth as predictions: AP = APH = 1 when
the 0-point boxes (dropped from the ground truth, as OpenPCDet does) are left out; each of them
predicted is a false positive at the top score."""
import pytest
import torch
from mmengine.registry import init_default_scope

from mmattn.datasets import WaymoDataset
from mmattn.evaluation import WaymoMetric


def _run(keep_empty: bool) -> dict:
    init_default_scope('mmdet3d')
    ds = WaymoDataset(data_root='data/waymo_sample/kitti_format/', ann_file='waymo_infos_val.pkl',
                      test_mode=True, pipeline=[])
    metric = WaymoMetric()
    metric.dataset_meta = ds.metainfo
    samples = []
    for i in range(len(ds)):
        ann = ds.get_data_info(i)['eval_ann_info']
        keep = torch.ones(len(ann['gt_labels_3d']), dtype=torch.bool) if keep_empty else \
            torch.as_tensor(ann['num_lidar_pts']) > 0
        pred = dict(bboxes_3d=ann['gt_bboxes_3d'][keep], scores_3d=torch.ones(int(keep.sum())),
                    labels_3d=torch.as_tensor(ann['gt_labels_3d'])[keep])
        samples.append(dict(pred_instances_3d=pred, eval_ann_info=ann))
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_ground_truth_as_predictions_scores_one():
    res = _run(keep_empty=False)
    for key in ('mAP L1', 'mAPH L1', 'mAP L2', 'mAPH L2', 'Car/L2 APH', 'Cyclist/L1 AP'):
        assert res[key] == pytest.approx(1.0), (key, res[key])


def test_predicted_empty_boxes_are_false_positives():
    # val: 105 cars (5 with 0 points), 81 pedestrians (2), 43 cyclists (2); all predictions score
    # 1, so precision is TP / all = 100/105, 79/81, 41/43 at every recall and AP equals it
    res = _run(keep_empty=True)
    assert res['Car/L1 AP'] == pytest.approx(100 / 105, abs=1e-6)
    assert res['Pedestrian/L1 AP'] == pytest.approx(79 / 81, abs=1e-6)
    assert res['Cyclist/L1 AP'] == pytest.approx(41 / 43, abs=1e-6)
