"""Utilities: compatibility patches, environment set-up, runner helpers, the checkpoint path."""
from .checkpoint import CheckpointError, load_checkpoint, load_file, register_family
from .setup_env import register_all_modules

__all__ = ['CheckpointError', 'load_checkpoint', 'load_file', 'register_all_modules',
           'register_family']
