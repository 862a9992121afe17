"""Helpers for tests: official-layout parity weights and tolerant comparisons."""
from .parity import generate, load_fixture, max_rel_error, state_dict_from_fixture

__all__ = ['generate', 'load_fixture', 'max_rel_error', 'state_dict_from_fixture']
