"""tests/conftest.py: a test that changes torch's thread count (as the benchmark tools run
in-process do) does not leave the following tests single-threaded."""
import torch

_START = torch.get_num_threads()


def test_a_test_may_change_the_thread_count():
    torch.set_num_threads(1 if _START > 1 else 2)
    assert torch.get_num_threads() != _START


def test_the_next_test_runs_with_the_thread_count_of_the_session():
    assert torch.get_num_threads() == _START
