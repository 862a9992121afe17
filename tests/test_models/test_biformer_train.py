"""BiFormer sample-data configs train two iterations with the real mmdet / mmseg runners."""
import os.path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def two_iteration_cfg(path: str, work_dir: str):
    from mmattn.utils.runner import load_config
    cfg = load_config(path)
    cfg.work_dir = work_dir
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.indices = 4
    # the loop validates after the last iteration: one batch of two images (predict + metric)
    cfg.val_dataloader.batch_size = 2
    cfg.val_dataloader.dataset.indices = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=10)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=2)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)
    cfg.log_processor = dict(by_epoch=False)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'configs/biformer/retinanet_biformer-s_fpn_sample-coco.py',
    'configs/biformer/mask-rcnn_biformer-s_fpn_sample-coco.py',
    'configs/biformer/upernet_biformer-s_sample-cityscapes.py',
    'configs/biformer/fpn_biformer-s_sample-cityscapes.py'])
def test_sample_config_trains_two_iterations(config, tmp_path):
    import mmattn  # noqa: F401  (config compatibility patches)
    from mmattn.utils.runner import build_runner
    torch.set_num_threads(2)
    runner = build_runner(two_iteration_cfg(osp.join(REPO, config), str(tmp_path)))
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
