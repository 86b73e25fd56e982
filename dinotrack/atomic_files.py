"""Publish output files and directories atomically: write a temporary sibling, then rename it
over the target.

A reader never sees a half-written file at the target path, and a failed write leaves the
previous file (if any) untouched. The temporary file lives in the target's directory, so the
final `os.replace` is a rename within one file system. No `fsync` is done: this guards against
concurrent readers and crashed writers, not against power loss.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: str | os.PathLike[str]) -> Path:
    """Returns a fresh hidden path next to `path` for writing before publishing.

    Args:
        path: The final output path. Its directory must exist.

    Returns:
        A path like `<dir>/.<name>.<random>.tmp` that does not exist yet.

    Raises:
        FileNotFoundError: If the directory of `path` does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"output directory {path.parent} does not exist; create it before writing {path.name}"
        )
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Context manager yielding a temporary path that is renamed to `path` on success.

    If the body raises, the temporary file is deleted and `path` is left as it was.

    Args:
        path: The final output path. Its directory must exist.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Context manager yielding a hidden temporary directory that replaces `path` on success.

    The parents of `path` are created. If the body raises, the temporary directory is deleted
    and `path` is left as it was; an existing `path` is replaced only once the body succeeded.

    Args:
        path: The final directory.

    Yields:
        The temporary directory to fill.

    Raises:
        NotADirectoryError: If `path` exists and is not a directory.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
