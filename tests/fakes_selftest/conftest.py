"""The fakes' own self-tests: marked, so the report counts them apart from the product's tests.

`pytest -m "not fakes_selftest"` runs the product's tests only; `pytest -m fakes_selftest` the fakes'.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Called with every collected item, not only this folder's: hence the path check."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.fakes_selftest)
