"""tools/analysis_tools/benchmark_backbone.py: weight sync, memory measure, report (tiny runs)."""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

import mmattn  # noqa: F401
from mmattn.models.backbones.poolformer import PoolFormer
from mmattn.testing import max_rel_error

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = "dict(type='mmattn.PoolFormer', arch=dict(depths=[1, 1, 1, 1], embed_dims=[8, 16, 24, 32]))"


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location(
        'benchmark_backbone', osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_backbone.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sync_gives_timm_poolformer_the_same_weights(tool):
    """After the sync, timm's stage outputs + our output GroupNorms are our outputs."""
    import timm
    torch.manual_seed(0)
    ours = PoolFormer('s12').eval()
    for p in ours.parameters():  # make every tensor distinct, so a wrong pairing shows
        p.data.normal_(0, 0.1).add_(torch.rand(()))
    ref = timm.create_model('poolformer_s12', pretrained=False, features_only=True).eval()
    copied, leftover = tool.sync_weights(ours, ref)
    assert copied == sum(1 for _ in ref.parameters()) == 128
    assert leftover == [f'norm{i}.{n}' for i in (0, 2, 4, 6) for n in ('weight', 'bias')]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = ours(x)
        want = [
            F.group_norm(f, 1,
                         getattr(ours, f'norm{2 * i}').weight,
                         getattr(ours, f'norm{2 * i}').bias) for i, f in enumerate(ref(x))
        ]
    assert max_rel_error(got, want) <= 1e-5


def test_sync_refuses_a_reference_it_cannot_fill(tool):
    small = PoolFormer(arch=dict(depths=[1, 1, 1, 1], embed_dims=[8, 16, 24, 32]))
    wide = PoolFormer(arch=dict(depths=[1, 1, 1, 1], embed_dims=[8, 16, 24, 40]))
    with pytest.raises(SystemExit, match='no partner'):
        tool.sync_weights(small, wide)


def test_peak_memory_counts_the_forward_allocations(tool):
    conv = torch.nn.Conv2d(3, 8, 1).eval()
    x = torch.randn(1, 3, 64, 64)
    assert tool.peak_memory(conv, x) >= 8 * 64 * 64 * 4  # at least the output


def test_report(tool, capsys):
    tool.main([
        '--backbone', TINY, '--reference', TINY, '--shape', '1', '3', '64', '64', '--iters', '3',
        '--warmup', '1', '--threads', '1'
    ])
    out = capsys.readouterr().out
    # stem 2 + downsampling 3 x 2 + blocks 4 x 10 + output norms 4 x 2
    assert 'weights: 56 backbone tensors copied into the reference' in out
    assert out.count('forward median') == 2 and out.count('peak memory') == 2
    assert 'ratio backbone / reference (medians):' in out
