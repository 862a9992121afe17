"""Helpers for tests: official-layout parity weights and tolerant comparisons."""
from .parity import FIXTURE_DIR, generate, load_fixture, max_rel_error, state_dict_from_fixture
from .threads import cpu_threads

__all__ = ['FIXTURE_DIR', 'cpu_threads', 'generate', 'load_fixture', 'max_rel_error',
           'state_dict_from_fixture']
