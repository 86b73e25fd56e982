"""Where the shared data lies, for the tools and the tests alike.

One rule: ``$DINOTRACK_DATA`` when it is set, else ``../shared/data`` next to the repository
(read when asked, not at import).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository's root folder."""


def data_root() -> Path:
    """The shared data folder: ``$DINOTRACK_DATA``, else ``../shared/data`` beside the repo."""
    env = os.environ.get("DINOTRACK_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    """A path under :func:`data_root` (it may not exist)."""
    return data_root().joinpath(*parts)
