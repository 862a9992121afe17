"""Command-line mistakes a new user makes get a message instead of silence."""
import pytest

from mmattn.utils.runner import load_config, warn_unknown_options

from ._utils import DET_CONFIG, data_options, run_tool


def test_cfg_options_typo_warns_with_the_closest_key():
    with pytest.warns(UserWarning, match=r"trian_cfg\.max_epochs: there is no such key .* did "
                      r"you mean 'train_cfg\.max_epochs'\?"):
        cfg = load_config(DET_CONFIG, {'trian_cfg.max_epochs': 1})
    assert cfg.train_cfg.max_epochs == 12  # the typo did not change the schedule


def test_cfg_options_existing_keys_do_not_warn(recwarn):
    cfg = load_config(DET_CONFIG)
    assert warn_unknown_options(cfg, {'train_cfg.max_epochs': 1,
                                      'model.backbone.depth': 18,
                                      'train_dataloader.dataset.pipeline.3.prob': 0.1}) == []
    assert not [w for w in recwarn if 'no such key' in str(w.message)]
    with pytest.warns(UserWarning, match=r"model\.backbon\.depth: .*did you mean "
                      r"'model\.backbone\.depth'"):
        assert warn_unknown_options(cfg, {'model.backbon.depth': 18}) == ['model.backbon.depth']
    with pytest.warns(UserWarning, match=r"zzz\.qqq: there is no such key .*\(nor is 'zzz'\)"):
        assert warn_unknown_options(cfg, {'zzz.qqq': 1}) == ['zzz.qqq']


@pytest.mark.slow
def test_resume_without_checkpoint_says_it_starts_from_scratch(tmp_path):
    res = run_tool(['tools/train.py', DET_CONFIG, '--work-dir', str(tmp_path), '--resume',
                    '--cfg-options', *data_options(num_train=2, num_val=2),
                    'train_cfg.max_epochs=1'])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f'--resume: no checkpoint in {tmp_path}; training starts from scratch' in res.stderr
    assert 'resumed from None' not in res.stderr + res.stdout
