"""Short real training runs of a config on the bundled sample data (tests)."""
from mmengine.config import Config


def short_run_config(path: str, work_dir: str, iters: int = 2, num_train: int = 4,
                     num_val: int = 2, batch_size: int = 2, val_batch_size: int = 1,
                     validate: bool = True, checkpoint_interval: int = 0,
                     options: dict = None) -> Config:
    """``path`` cut to ``iters`` training iterations on ``num_train`` images (in-process loaders,
    constant lr, a log line per iteration), validating on ``num_val`` images after the last one
    when ``validate``; a checkpoint every ``checkpoint_interval`` iterations (0: at the end)."""
    from mmattn.utils.runner import load_config
    cfg = load_config(path, options)
    cfg.work_dir = str(work_dir)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.dataset.indices = num_train
    for key in ('val_dataloader', 'test_dataloader'):
        cfg[key].batch_size = val_batch_size
        cfg[key].dataset.indices = num_val
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters,
                         val_interval=iters if validate else iters + 1)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False,
                                        interval=checkpoint_interval or iters)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)
    cfg.log_processor = dict(by_epoch=False)
    return cfg


def one_cycle_schedule(lr: float, iters: int) -> list:
    """OpenPCDet's ``adam_onecycle`` (the ScatterFormer configs' schedule) over ``iters``
    iterations: lr cosine up from lr / 100 for 10 %, then down; beta1 0.95 -> 0.85 -> 0.95."""
    warm = max(1, iters // 10)
    return [
        dict(type='OneCycleLR', eta_max=lr, pct_start=0.1, anneal_strategy='cos',
             div_factor=100., final_div_factor=1e4, by_epoch=False, begin=0, end=iters),
        dict(type='CosineAnnealingMomentum', T_max=warm, eta_min=0.85, by_epoch=False,
             begin=0, end=warm),
        dict(type='CosineAnnealingMomentum', T_max=iters - warm, eta_min=0.95, by_epoch=False,
             begin=warm, end=iters)]
