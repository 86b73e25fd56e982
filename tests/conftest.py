"""Shared pytest fixtures: the shared data, a DAVIS clip, tiny trackers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tools.data.location import data_root

if TYPE_CHECKING:
    from dinotrack import Tracker


@pytest.fixture(scope="session")
def shared_data() -> Callable[..., Path]:
    """Returns a function mapping parts of a path under the shared data folder to that path.

    The folder is `$DINOTRACK_DATA`, else `../shared/data` next to the repository. A test
    asking for a path that is absent is skipped with the path in the reason.
    """
    root = data_root()  # the tools' rule, the one rule

    def locate(*parts: str) -> Path:
        path = root.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"shared data {path} is absent (set DINOTRACK_DATA to the data folder)")
        return path

    return locate


@pytest.fixture
def boat(shared_data) -> tuple[Path, Path]:
    """The frames folder of DAVIS ``boat`` and its first annotation."""
    frames = shared_data("davis2016-dev", "JPEGImages", "480p", "boat")
    mask = shared_data("davis2016-dev", "Annotations", "480p", "boat", "00000.png")
    return frames, mask


@pytest.fixture(scope="session")
def tiny_tracker() -> Callable[..., Tracker]:
    """Returns a function giving a tracker on the random ``test_vit_tiny`` backbone on the CPU,
    with :class:`dinotrack.TrackerConfig` overrides; one tracker per setting for the session
    (a tracker holds no per-video state)."""
    from dinotrack import Tracker

    made: dict[tuple, Tracker] = {}

    def make(**settings) -> Tracker:
        key = tuple(sorted(settings.items()))
        if key not in made:
            made[key] = Tracker.from_pretrained("test_vit_tiny", device="cpu", **settings)
        return made[key]

    return make


@pytest.fixture
def pretrain_log_to_capture(monkeypatch):
    """The pretrain CLI logs to the stderr of its first call in a process, and not to the root
    logger; without that handler, this test's records reach caplog and this test's stderr."""
    log = logging.getLogger("pretrain")
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "propagate", True)
