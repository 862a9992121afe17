"""tools/analysis_tools/benchmark_bra.py: a tiny CPU run prints one row per backend."""
import importlib.util
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_tiny_run_prints_a_row_per_backend(capsys):
    spec = importlib.util.spec_from_file_location(
        'benchmark_bra', osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_bra.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--sizes', '224x224', '--stages', '2', '--device', 'cpu', '--threads', '1',
               '--iters', '1', '--warmup', '0', '--backends', 'reference', 'torch'])
    rows = [ln.split('|') for ln in capsys.readouterr().out.splitlines()
            if ln.startswith('| 224x224')]
    assert [r[4].strip() for r in rows] == ['reference', 'torch'], rows
    assert rows[0][8].strip() == '1.00' and rows[0][9].strip() == '1.00'  # ratios to itself
    assert all(float(r[7]) > 0 for r in rows)  # peak MiB
