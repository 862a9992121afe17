"""Utilities: compatibility patches, environment set-up, runner helpers, checkpoint checks."""
from .setup_env import register_all_modules

__all__ = ['register_all_modules']
