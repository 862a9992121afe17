"""Parametrisations whose first values run in the fast set (``pytest -m "not slow"``) and whose
other values are marked ``slow`` (run by CI and ``make test``)."""
from typing import Any, List, Sequence

import pytest


def fast_first(values: Sequence[Any], n: int = 1) -> List[Any]:
    """``values`` with every value after the first ``n`` wrapped in ``pytest.param(..., marks=
    pytest.mark.slow)``."""
    return [v if i < n else pytest.param(v, marks=pytest.mark.slow) for i, v in enumerate(values)]
