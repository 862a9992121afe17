"""Register every mmattn module without a config's ``custom_imports`` (scripts, notebooks)."""
import importlib

from mmengine import DefaultScope


def register_all_modules(init_default_scope: bool = False) -> None:
    """Import mmattn's models, datasets, metrics and hooks so they are registered.

    Args:
        init_default_scope: also make ``mmattn`` the current default scope.
    """
    for name in ('mmattn.models', 'mmattn.datasets', 'mmattn.evaluation', 'mmattn.engine'):
        importlib.import_module(name)
    if init_default_scope and DefaultScope.get_current_instance() is None:
        DefaultScope.get_instance('mmattn', scope_name='mmattn')
