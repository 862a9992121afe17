"""tools/gpu_check.py (issue 19): the dry run of the GPU verification kit on the CPU (tiny shapes,
Triton interpreter), so that the kit cannot rot between GPU loans; its budget and its reporting."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'gpu_check.py')


def run_kit(out, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['OMP_NUM_THREADS'] = '1'
    return subprocess.run([sys.executable, TOOL, '--out', str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.triton
def test_dry_run(tmp_path):
    proc = run_kit(tmp_path, '--dry-run')
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((tmp_path / 'gpu_check.json').read_text())
    rows = summary['results']
    assert summary['failed'] == 0 and summary['meta']['dry_run']
    assert all(r['ok'] is not False and r['shape'] and r['dtype'] for r in rows)
    checks = {r['check'] for r in rows}
    for expected in ('bra ragged_3x5', 'bra topk_all', 'sla empty_and_single', 'sla long_window',
                     'bra nan/inf positions', 'sla nan/inf positions', 'bra triton', 'sla triton',
                     'scatterformer backbone fwd+bwd sla=triton'):
        assert expected in checks, expected
    assert any(c.startswith('biformer reduced') for c in checks)
    assert {r['dtype'] for r in rows if r['section'] == 'kernels'} == {'float32', 'float16'}
    assert all(r['fwd_bwd_ms'] > 0 for r in rows if r['section'] == 'bench')
    skipped = {(s['section'], s['check']): s['reason'] for s in summary['skipped']}
    assert 'interpreter' in skipped[('kernels', 'bfloat16')]
    markdown = (tmp_path / 'gpu_check.md').read_text()
    assert '**0 failed**' in markdown and '## skipped' in markdown


@pytest.mark.slow
def test_budget_skips_and_says_so(tmp_path):
    proc = run_kit(tmp_path, '--dry-run', '--budget-s', '0', '--sections', 'kernels', 'bench')
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert summary['results'] == []
    reasons = [s['reason'] for s in summary['skipped'] if not s['reason'].startswith('dry run')]
    assert len(reasons) > 10 and all(r.startswith('time budget') for r in reasons)
    assert '0 rows, 0 failed' in proc.stdout


@pytest.mark.slow
def test_without_gpu_it_refuses(tmp_path):
    proc = run_kit(tmp_path)
    assert proc.returncode == 2 and '--dry-run' in proc.stderr


def test_a_failed_check_fails_the_run(tmp_path):
    spec = importlib.util.spec_from_file_location('gpu_check', TOOL)
    kit_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit_mod)
    kit = kit_mod.Kit(str(tmp_path), 60, dry_run=True)
    kit.run('kernels', 'raises', 0, lambda: 1 / 0)
    kit.add('kernels', 'nan error', 'N1', 'float32', ok=kit_mod.within(float('nan'), 1.),
            err_out=float('nan'))
    kit.write()
    summary = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert summary['failed'] == 2
    assert summary['results'][0]['error'] == 'ZeroDivisionError: division by zero'
    assert summary['results'][1]['err_out'] == 'nan'
    assert (tmp_path / 'gpu_check.md').read_text().count('**NO**') == 2
