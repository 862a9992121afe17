"""Lazy registration: a subpackage lists in ``LAZY`` the classes whose module imports a task
package (mmdet, mmseg, mmdet3d), ``{class name: relative module}``. :func:`register_lazy` hands
the table to ``mmattn.registry.MODELS`` (the module is imported on the first lookup of the name,
e.g. from a config) and :func:`lazy_getattr` serves ``from <subpackage> import Name``."""
import importlib
import importlib.util
from typing import Any, Callable, Dict


def lazy_getattr(package: str, lazy: Dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) importing ``lazy[name]`` on first access."""

    def __getattr__(name: str) -> Any:
        if name in lazy:
            return getattr(importlib.import_module(lazy[name], package), name)
        raise AttributeError(f'module {package!r} has no attribute {name!r}')

    return __getattr__


def register_lazy(package: str, lazy: Dict[str, str]) -> None:
    """Tell ``MODELS`` which module registers each lazy class of ``package``."""
    from mmattn.registry import MODELS
    for name, module in lazy.items():
        MODELS.lazy[name] = importlib.util.resolve_name(module, package)
