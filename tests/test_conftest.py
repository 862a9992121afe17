"""tests/conftest.py: a test that changes torch's thread count (as the benchmark tools run
in-process do) does not leave the following tests single-threaded."""
import torch

_START = torch.get_num_threads()


def test_a_test_may_change_the_thread_count():
    torch.set_num_threads(1 if _START > 1 else 2)
    assert torch.get_num_threads() != _START


def test_the_next_test_runs_with_the_thread_count_of_the_session():
    assert torch.get_num_threads() == _START


def _local_visualizer(save_dir):
    from mmengine.visualization import Visualizer
    return Visualizer.get_instance('visualizer', vis_backends=[dict(type='LocalVisBackend')],
                                   save_dir=str(save_dir))


def test_a_test_builds_the_configs_visualizer(tmp_path):
    assert _local_visualizer(tmp_path)._vis_backends['LocalVisBackend']._save_dir.startswith(
        str(tmp_path))


def test_the_next_test_gets_its_own_visualizer(tmp_path):
    # without the fixture: the previous test's instance (and its deleted save_dir) comes back
    assert _local_visualizer(tmp_path)._vis_backends['LocalVisBackend']._save_dir.startswith(
        str(tmp_path))


def test_a_worker_gets_its_share_of_the_cores(monkeypatch):
    import os

    from mmattn.testing.threads import cpu_threads
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv('PYTEST_XDIST_WORKER_COUNT', raising=False)
    assert cpu_threads() == cores
    monkeypatch.setenv('PYTEST_XDIST_WORKER_COUNT', '2')
    assert cpu_threads() == max(1, cores // 2)
    monkeypatch.setenv('PYTEST_XDIST_WORKER_COUNT', str(cores + 1))
    assert cpu_threads() == 1


def test_a_worker_runs_with_its_share(request):
    import os

    from mmattn.testing.threads import cpu_threads
    if 'PYTEST_XDIST_WORKER' not in os.environ:
        return
    assert _START == cpu_threads()
    assert os.environ['OMP_NUM_THREADS'] == str(cpu_threads())


def test_the_longest_files_are_collected_first(request):
    import os

    from conftest import LONGEST_FIRST
    files = [os.path.basename(str(item.fspath)) for item in request.session.items]
    present = [f for f in LONGEST_FIRST if f in files]
    if not present:
        return  # a run of some files only
    firsts = list(dict.fromkeys(files))[:len(present)]
    assert firsts == present
