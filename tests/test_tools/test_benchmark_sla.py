"""tools/analysis_tools/benchmark_sla.py: window sizes, the padded baseline, a tiny CPU run."""
import importlib.util
import os.path as osp

import pytest
import torch

from mmattn.ops.sla import sla_reference
from mmattn.testing import max_rel_error

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location(
        'benchmark_sla', osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_sla.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_window_counts(tool):
    counts = tool.window_counts(5000, max_rows=300)
    assert counts.dtype == torch.int64 and int(counts.sum()) == 5000
    assert int(counts.min()) >= 1 and int(counts.max()) <= 300
    assert torch.equal(counts, tool.window_counts(5000, max_rows=300))  # seeded


def test_padded_baseline_matches_reference(tool):
    qkv, grad, cu_seqlens, counts = tool.make_case(200, 'cpu', torch.float32, 64, 20., 1.)
    assert cu_seqlens.tolist() == [0] + torch.cumsum(counts, 0).tolist()
    q, k, v = qkv.detach().unbind(1)
    got = tool.padded_linear_attention(q, k, v, cu_seqlens)
    assert max_rel_error(got, sla_reference(q, k, v, cu_seqlens)) <= 1e-5


def test_tiny_run_prints_a_row_per_backend(tool, capsys):
    tool.main(['--sizes', '96', '--device', 'cpu', '--threads', '1', '--iters', '1',
               '--warmup', '0', '--max-rows', '40', '--median-rows', '10'])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('| 96 |')]
    assert [ln.split('|')[3].strip() for ln in lines] == ['reference', 'torch', 'padded']
    ref = lines[0].split('|')
    assert ref[7].strip() == '1.00' and float(ref[6]) > 0  # ratio to itself, peak memory


def test_padded_baseline_skipped_over_memory_limit(tool, capsys):
    tool.main(['--sizes', '64', '--device', 'cpu', '--iters', '1', '--warmup', '0',
               '--backends', 'torch', 'padded', '--padded-limit-mib', '0'])
    out = capsys.readouterr().out
    assert '| torch |' in out and '| padded | skipped' in out
