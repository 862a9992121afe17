"""BiFormer sample-data configs train two iterations with the real mmdet / mmseg runners."""
import os.path as osp

import pytest
import torch

from mmattn.testing.runs import short_run_config
from mmattn.testing.threads import cpu_threads

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'configs/biformer/retinanet_biformer-s_fpn_sample-coco.py',
    'configs/biformer/mask-rcnn_biformer-s_fpn_sample-coco.py',
    'configs/biformer/upernet_biformer-s_sample-cityscapes.py',
    'configs/biformer/fpn_biformer-s_sample-cityscapes.py'])
def test_sample_config_trains_two_iterations(config, tmp_path):
    import mmattn  # noqa: F401  (config compatibility patches)
    from mmattn.utils.runner import build_runner
    torch.set_num_threads(cpu_threads())
    runner = build_runner(short_run_config(osp.join(REPO, config), str(tmp_path), val_batch_size=2,
                                           validate=False))
    backbone = runner.model.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    runner.train()
    assert osp.isfile(tmp_path / 'iter_2.pth')
    after = backbone.state_dict()
    moved = [k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, before[k])]
    # the routing-attention projections learn (gradients flow through the BRA backend)
    assert any('attn.qkv.qkv' in k for k in moved) and any('attn.wo' in k for k in moved)
    if 'coco' in config:  # detection: norm_eval=True keeps BatchNorm statistics frozen
        assert all(torch.equal(after[k], before[k]) for k in after if k.endswith('running_mean'))
    else:
        assert any(not torch.equal(after[k], before[k]) for k in after
                   if k.endswith('running_mean'))
