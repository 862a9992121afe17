"""SLAB-Swin (ICML 2024): parity with the official code and checkpoints (shared tests in
``swin_family_common.py``), PRepBN (schedule, hook, re-parameterisation, deploy), the simplified
linear attention against its quadratic form, and a sample-config training run."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmattn.models.backbones.swin_family import SLABSwinTransformer, convert_slab_swin
from mmattn.models.layers.linear_attention import SimplifiedLinearAttention
from mmattn.models.layers.prepbn import LinearNorm, RepBN, TokenBatchNorm, switch_to_deploy
from mmattn.testing import cpu_threads, max_rel_error, state_dict_from_fixture
from mmattn.testing.runs import short_run_config

from swin_family_common import (  # noqa: F401  (shared tests, run for this family)
    _threads, test_official_layout_derivation_matches_fixture, test_dense_parity,
    test_classifier_trunk_parity, test_small_base_official_layout_loads_and_runs,
    test_small_base_use_only_tiny_block_kinds, test_init_cfg_loads_official_checkpoints,
    test_converter_script, test_converter_refuses_empty_and_other_models)
from swin_family_common import REPO, _fx, with_cp_step_equals_plain


@pytest.fixture
def family():
    return 'slab_swin'


def test_slab_mixers_per_arch():
    slab = SLABSwinTransformer('small')
    assert [[b.mixer for b in st.blocks][0] for st in slab.layers] == ['linear', 'linear',
                                                                       'window', 'window']
    assert [st.blocks[1].shift_size for st in slab.layers] == [28, 14, 3, 3]


def test_slab_detection_checkpoint_gets_warm_counters():
    sd = state_dict_from_fixture(_fx('slab_swin_t.dense'))
    out = convert_slab_swin(sd)
    assert 'patch_embed.norm.warm' not in sd and int(out['patch_embed.norm.warm']) == 0
    assert all(k[:-4] + 'iter' in out for k in out if k.endswith('.warm'))


# --------------------------------------------------------------------------------------------
# PRepBN
# --------------------------------------------------------------------------------------------
def _calibrated_slab_tiny():
    """SLAB-Swin-T with the fixture weights and BN statistics re-estimated on one batch (as the
    official recipe's final BN-statistics epochs do), so that eval-mode RepBN normalises."""
    fx = _fx('slab_swin_t.dense')
    model = SLABSwinTransformer('tiny', norm_eval=False)
    model.load_state_dict(convert_slab_swin(state_dict_from_fixture(fx)))
    for m in model.modules():
        if isinstance(m, LinearNorm):
            m.set_step(m.total_step)  # lam = 0: RepBN only
        if isinstance(m, nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        model(torch.randn(2, 3, 224, 224))
    return model.eval()


def test_slab_switch_to_deploy_is_exact():
    model = _calibrated_slab_tiny()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        before = model(x)
        model.switch_to_deploy()
        after = model(x)
    assert not any(isinstance(m, (LinearNorm, RepBN)) for m in model.modules())
    assert sum(isinstance(m, TokenBatchNorm) for m in model.modules()) == 1 + 2 * 12 + 3
    err = max_rel_error(after, before)
    print(f'SLAB-Swin-T deploy vs RepBN: max rel err {err:.2e}')
    assert err <= 1e-5


def test_repbn_fuse_matches_formula():
    torch.manual_seed(0)
    m = RepBN(8).eval()
    m.bn.running_mean.normal_()
    m.bn.running_var.uniform_(0.5, 2)
    m.bn.weight.data.normal_()
    m.bn.bias.data.normal_()
    m.alpha.data.fill_(0.7)
    x = torch.randn(2, 5, 8)
    ref = (x - m.bn.running_mean) / torch.sqrt(m.bn.running_var + m.bn.eps) * m.bn.weight \
        + m.bn.bias + 0.7 * x
    assert torch.allclose(m(x), ref, atol=1e-6)
    assert torch.allclose(m.fuse()(x), ref, atol=1e-5)  # fused module keeps eval mode
    seq = switch_to_deploy(nn.Sequential(m, nn.Sequential(LinearNorm(8).eval())))
    assert isinstance(seq[0], TokenBatchNorm) and isinstance(seq[1][0], TokenBatchNorm)
    assert not seq[0].training and torch.allclose(seq[0](x), ref, atol=1e-5)


def _self_stepping_lams(warm, total, r0, steps):
    m = LinearNorm(4, step=total, warm=warm, r0=r0).train()
    lams = []
    for _ in range(steps):
        lams.append(m.lam)
        m(torch.randn(2, 3, 4))
    return lams


def test_linear_norm_schedule_and_blend():
    # official: warm LN-only forwards, then lam = r0 * iter / total, iter counting down to 0
    lams = _self_stepping_lams(warm=2, total=4, r0=1.0, steps=9)
    assert lams == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]
    # set_step(t) reproduces the counters of t self-advancing forwards
    for t in range(9):
        m = LinearNorm(4, step=4, warm=2)
        m.set_step(t, warmup=2, total=4)
        assert m.lam == lams[t], t
    torch.manual_seed(0)
    m = LinearNorm(6, step=10)
    m.set_step(4, total=10)
    m.train()
    m.self_step = False
    x = torch.randn(3, 7, 6)
    ln = F.layer_norm(x, (6,), m.norm1.weight, m.norm1.bias, 1e-5)
    bn = F.batch_norm(x.reshape(-1, 6), None, None, m.norm2.bn.weight, m.norm2.bn.bias, True,
                      0.0, 1e-5).reshape(3, 7, 6) + m.norm2.alpha * x
    assert torch.allclose(m(x), 0.6 * ln + 0.4 * bn, atol=1e-5)
    assert int(m.iter) == 6  # not advanced when driven externally
    m.eval()
    assert torch.allclose(m(x), m.norm2(x))


def test_prepbn_hook_drives_schedule():
    from mmattn.engine import PRepBNHook
    from mmattn.registry import HOOKS

    class _Runner:
        max_iters = 10
        iter = 0

        def __init__(self, model):
            import logging
            self.model = model
            self.logger = logging.getLogger('test')

    model = nn.Sequential(LinearNorm(4, step=300000), nn.Sequential(LinearNorm(4)))
    hook = HOOKS.build(dict(type='mmattn.PRepBNHook', total_iters=0.4, warmup_iters=2))
    assert isinstance(hook, PRepBNHook)
    runner = _Runner(model)
    hook.before_train(runner)
    seen = []
    for it in range(9):
        runner.iter = it
        hook.before_train_iter(runner, it)
        model.train()
        for _ in range(3):  # several forwards per step (checkpointing, accumulation)
            model(torch.randn(2, 3, 4))
        seen.append(model[0].lam)
        assert model[1][0].lam == model[0].lam
    assert seen == _self_stepping_lams(warm=2, total=4, r0=1.0, steps=9)
    with pytest.raises(RuntimeError, match='no PRepBN'):
        hook.before_train(_Runner(nn.Linear(2, 2)))


def test_slab_norm_eval_and_frozen_stages():
    model = SLABSwinTransformer('tiny', frozen_stages=2)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns and not any(m.training for m in bns)
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[1].blocks.parameters())
    assert not any(p.requires_grad for p in model.layers[0].downsample.parameters())
    assert not model.layers[1].blocks.training and not model.norm1.training
    # the merging after stage 1 feeds stage 2: it trains (mmdet's Swin would freeze it)
    assert all(p.requires_grad for p in model.layers[1].downsample.parameters())
    assert all(p.requires_grad for p in model.layers[2].parameters())
    assert model.layers[2].training and model.norm2.training
    model = SLABSwinTransformer('tiny', norm_eval=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm1d))


def test_training_step_runs_with_checkpointing():
    slab = with_cp_step_equals_plain(
        SLABSwinTransformer, dict(embed_dims=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8)))
    assert slab.layers[1].blocks[1].attn.positional_encoding.grad is not None


def test_simplified_linear_attention_module():
    torch.manual_seed(0)
    m = SimplifiedLinearAttention(24, 3, window_size=(4, 5), kernel_size=5).eval()
    with torch.no_grad():
        m.positional_encoding.normal_()
    x = torch.randn(3, 20, 24)
    with torch.no_grad():
        out = m(x)
        q, k, v = m.qkv(x).chunk(3, -1)
        q, k = F.relu(q), F.relu(k + m.positional_encoding)
        heads = [slice(8 * i, 8 * (i + 1)) for i in range(3)]
        ref = []
        for sl in heads:
            qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]
            sim = qh @ kh.transpose(1, 2)  # quadratic form of the same attention
            o = sim @ vh / (sim.sum(-1, keepdim=True) + 1e-6)
            vm = vh.transpose(1, 2).reshape(3, 8, 4, 5)
            ref.append(o + m.dwc(vm).flatten(2).transpose(1, 2))
        ref = m.proj(torch.cat(ref, -1))
    assert out.shape == x.shape
    assert max_rel_error(out, ref) <= 1e-5
    with pytest.raises(ValueError, match='window'):
        m(torch.randn(1, 16, 24))


# --------------------------------------------------------------------------------------------
# configs: two training iterations on the bundled sample data
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'configs/slab_swin/mask-rcnn_slab-swin-t_fpn_prepbn_sample-coco.py'])
def test_sample_config_trains_two_iterations(config, tmp_path):
    import mmattn  # noqa: F401  (config compatibility patches)
    from mmattn.utils.runner import build_runner
    torch.set_num_threads(cpu_threads())
    cfg = short_run_config(osp.join(REPO, config), tmp_path, num_val=1)
    runner = build_runner(cfg)
    backbone = runner.model.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    runner.train()
    after = backbone.state_dict()
    assert osp.isfile(tmp_path / 'iter_2.pth')
    changed = [k for k, v in after.items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, 'no backbone weight moved in two iterations'
    if 'prepbn' in config:
        norms = [m for m in backbone.modules() if isinstance(m, LinearNorm)]
        # PRepBNHook drove the schedule: step 1 of round(0.8 * 2) = 2 decay steps
        assert norms and all(m.self_step for m in norms)  # handed back after training
        assert all(int(m.total_step) == 2 and int(m.iter) == 1 for m in norms)
        # norm_eval=False: the BatchNorm statistics trained
        assert any(not torch.equal(after[k], before[k])
                   for k in after if k.endswith('running_mean'))
