"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tool_support import load_tool


@pytest.fixture(scope="session")
def shared_data() -> Callable[..., Path]:
    """Returns a function mapping parts of a path under the shared data folder to that path.

    The folder is `$DINOTRACK_DATA`, else `../shared/data` next to the repository. A test
    asking for a path that is absent is skipped with the path in the reason.
    """
    root = load_tool("data_location").data_root()  # the tools' rule, the one rule

    def locate(*parts: str) -> Path:
        path = root.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"shared data {path} is absent (set DINOTRACK_DATA to the data folder)")
        return path

    return locate
