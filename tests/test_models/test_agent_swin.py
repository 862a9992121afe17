"""Agent-Swin (ECCV 2024): parity with the official code and checkpoints (shared tests in
``swin_family_common.py``), arch settings, the window blocks against mmdet's Swin, the agent
attention module against the paper's math, and a sample-config training run."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from mmattn.models.backbones.swin_family import AgentSwinTransformer, SwinBlock
from mmattn.models.layers.agent_attention import AgentAttention
from mmattn.testing import cpu_threads, max_rel_error
from mmattn.testing.runs import short_run_config

from swin_family_common import (  # noqa: F401  (shared tests, run for this family)
    _threads, test_official_layout_derivation_matches_fixture, test_dense_parity,
    test_classifier_trunk_parity, test_small_base_official_layout_loads_and_runs,
    test_small_base_use_only_tiny_block_kinds, test_init_cfg_loads_official_checkpoints,
    test_converter_script, test_converter_refuses_empty_and_other_models)
from swin_family_common import REPO, with_cp_step_equals_plain


@pytest.fixture
def family():
    return 'agent_swin'


def test_attn_types_per_arch():
    assert AgentSwinTransformer('tiny').attn_type == 'AAAB'
    assert AgentSwinTransformer('small').attn_type == 'AABB'
    base = AgentSwinTransformer('base')
    assert base.attn_type == 'AAMB2'
    mixers = [[b.mixer for b in st.blocks] for st in base.layers]
    assert mixers[2][:2] == ['agent', 'agent'] and set(mixers[2][2:]) == {'window'}
    assert [len(m) for m in mixers] == [2, 2, 18, 2]
    # shift counted from the stage start, 'A' blocks included: block 3 shifted, 2 not
    assert [b.shift_size for b in base.layers[2].blocks[:5]] == [0, 0, 0, 3, 0]
    assert [st.blocks[0].attn.num_heads for st in base.layers] == [4, 8, 16, 32]
    with pytest.raises(ValueError, match='attn_type'):
        AgentSwinTransformer('tiny', attn_type='AAXB')


# --------------------------------------------------------------------------------------------
# oracle for the Swin skeleton and the 'B' / 'S' blocks: mmdet's SwinTransformer
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', [
    dict(embed_dims=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24)),
    dict(embed_dims=128, depths=(2, 2, 3, 2), num_heads=(4, 8, 16, 32))])
def test_window_blocks_match_mmdet_swin(arch):
    mmdet_swin = pytest.importorskip('mmdet.models.backbones.swin')
    torch.manual_seed(0)
    ours = AgentSwinTransformer(arch, attn_type='BBBB').eval()
    with torch.no_grad():  # non-trivial norms
        for name, p in ours.named_parameters():
            if 'norm' in name:
                p.add_(0.1 * torch.randn_like(p))
    ref = mmdet_swin.SwinTransformer(embed_dims=arch['embed_dims'], depths=arch['depths'],
                                     num_heads=arch['num_heads'], window_size=7)
    ref.eval()  # mmdet's train() returns None
    sd = {k[len('backbone.'):]: v for k, v in mmdet_swin.swin_converter(ours.state_dict()).items()}
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith('relative_position_index') for k in missing)
    with torch.no_grad():
        for hw in ((224, 224), (97, 131)):
            x = torch.randn(2, 3, *hw)
            err = max_rel_error(ours(x), ref(x))
            print(f'window blocks vs mmdet Swin {arch["embed_dims"]} {hw}: {err:.2e}')
            assert err <= 1e-5, (hw, err)


def test_training_step_runs_with_checkpointing():
    model = with_cp_step_equals_plain(
        AgentSwinTransformer, dict(embed_dims=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8)),
        attn_type='AAAB')
    assert model.layers[0].blocks[0].attn.an_bias.grad is not None


# --------------------------------------------------------------------------------------------
# the two attentions as plain modules, against literal transcriptions of the papers' math
# --------------------------------------------------------------------------------------------
def _agent_attention_naive(m: AgentAttention, x, hw):
    """Spec section 3 step by step: separate interpolations per bias term, explicit softmax."""
    b, n, c = x.shape
    h, w = hw
    nh, d, p = m.num_heads, m.head_dim, m.pool_size
    a1, a2 = m.agent_shape
    q, k, v = m.qkv(x).chunk(3, dim=-1)
    agents = F.adaptive_avg_pool2d(q.permute(0, 2, 1).reshape(b, c, h, w), (a1, a2))
    agents = agents.reshape(b, c, -1).permute(0, 2, 1)

    def heads(t):
        return t.reshape(b, t.shape[1], nh, d).permute(0, 2, 1, 3)

    q, k, v, agents = heads(q), heads(k), heads(v), heads(agents)

    def resize(t, size):
        return F.interpolate(t, size=size, mode='bilinear', align_corners=False)

    def grid(t):  # (H, p*p, h, w) -> (H, h*w, a1*a2)
        t = t.reshape(nh, p, p, h * w).permute(0, 3, 1, 2)
        return resize(t, (a1, a2)).reshape(nh, h * w, a1 * a2)

    pb = grid(resize(m.an_bias, (h, w))) + grid(resize((m.ah_bias + m.aw_bias)[0], (h, w)))
    ab = grid(resize(m.na_bias, (h, w))) + grid(
        resize((m.ha_bias + m.wa_bias)[0].permute(0, 3, 1, 2), (h, w)))
    attn = torch.softmax(agents * m.scale @ k.transpose(-2, -1) + pb.transpose(1, 2), -1)
    agent_v = attn @ v
    attn = torch.softmax(q * m.scale @ agents.transpose(-2, -1) + ab, -1)
    out = (attn @ agent_v).transpose(1, 2).reshape(b, n, c)
    out = out + m.dwc(v.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)).flatten(2).mT
    return m.proj(out)


@pytest.mark.parametrize('hw,agent_shape', [((14, 14), None), ((9, 13), (5, 5)),
                                            ((20, 11), (4, 6))])
def test_agent_attention_module(hw, agent_shape):
    torch.manual_seed(0)
    m = AgentAttention(24, 3, agent_num=9, bias_resolution=14, agent_shape=agent_shape).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, hw[0] * hw[1], 24)
    with torch.no_grad():
        out = m(x, hw)
        assert out.shape == x.shape
        assert max_rel_error(out, _agent_attention_naive(m, x, hw)) <= 1e-5
    with pytest.raises(ValueError, match='hw_shape'):
        m(x, (hw[0] + 1, hw[1]))


def test_agent_attention_fused_and_plain_paths_agree():
    from mmattn.models.layers.agent_attention import _attention
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 81, 41), torch.randn(2, 3, 300, 41), torch.randn(2, 3, 300, 32)
    a = _attention(q * 41 ** -0.5, k, v, 0.0, fused=True)
    b = _attention(q * 41 ** -0.5, k, v, 0.0, fused=False)
    assert max_rel_error(a, b) <= 1e-5


def test_swin_block_rejects_bad_config():
    with pytest.raises(ValueError, match='mixer'):
        SwinBlock(8, 2, mixer='conv')
    with pytest.raises(ValueError, match='shift'):
        SwinBlock(8, 2, mixer='window', window_size=7, shift_size=7)


# --------------------------------------------------------------------------------------------
# configs: two training iterations on the bundled sample data
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'configs/agent_swin/mask-rcnn_agent-swin-t_fpn_sample-coco.py',
    'configs/agent_swin/upernet_agent-swin-t_sample-cityscapes.py'])
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
