"""tools/analysis_tools/benchmark_bra.py: a tiny CPU run prints one row per backend, each measured
on its own backend; the shared timer (mmattn.utils.benchmark) times what it is given."""
import importlib.util
import os.path as osp
import time

from mmattn.utils.benchmark import interleaved_ms

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
    assert all(float(r[5]) > 0 and float(r[6]) > 0 for r in rows)  # fwd, fwd+bwd ms
    # each row ran its own backend: the torch one (chunked, recomputing in backward) holds less
    # than half the reference's peak memory here (measured 11.9 vs 25.6 MiB, deterministic)
    (ref_ms, ref_mib), (ms, mib) = [(float(r[6]), float(r[7])) for r in rows]
    assert mib < 0.6 * ref_mib, rows
    assert abs(float(rows[1][9]) - mib / ref_mib) <= 0.01, rows  # mem / ref
    assert abs(float(rows[1][8]) - ms / ref_ms) <= 0.02, rows  # time / ref


def test_interleaved_ms_times_each_function_in_alternating_order():
    calls = []

    def sleeper(name: str, seconds: float):
        return lambda: calls.append(name) or time.sleep(seconds)

    ms = interleaved_ms({'a': sleeper('a', 0.03), 'b': sleeper('b', 0.005)}, 'cpu', iters=3,
                        warmup=1)
    assert calls == ['a', 'b'] + ['a', 'b', 'b', 'a', 'a', 'b']  # warm-up, then alternating
    assert 30 <= ms['a'] < 1000 and 5 <= ms['b'] < ms['a'], ms
