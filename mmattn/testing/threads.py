"""The CPU thread budget of one test process."""
import os


def cpu_threads() -> int:
    """The cores this process may use divided by the number of pytest-xdist workers sharing them
    (``make test`` runs one worker per core), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    return max(1, (cores or 1) // max(1, workers))
