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


MARKER_NAME = ".dinotrack-output"
"""Hidden file in every directory :func:`atomic_directory` publishes. An existing directory
is replaced only when it is empty or holds this file, so a directory of the user's own files
(or of the input frames) given as an output is refused instead of deleted."""


def output_directory(path: str | os.PathLike[str]) -> Path:
    """Checks that `path` can be (re)placed by :func:`atomic_directory` before any work starts.

    Args:
        path: The output directory.

    Returns:
        `path`, normalised (``a/b/..`` is ``a``; ``.`` is the absolute current directory).

    Raises:
        ValueError: An empty path or the root directory.
        NotADirectoryError: `path`, or one of its parents, is an existing file.
        FileExistsError: `path` holds files that :func:`atomic_directory` did not write.
    """
    if not str(path):
        raise ValueError("the output directory path is empty")
    target = Path(os.path.normpath(path))
    if target.name in ("", ".", ".."):
        target = Path(os.path.abspath(target))
    if not target.name:
        raise ValueError(f"cannot use {target} as an output directory; name a new directory")
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a directory")
    _check_parents(target)
    if target.is_dir():
        entries = sorted(entry.name for entry in target.iterdir())
        if entries and MARKER_NAME not in entries:
            raise FileExistsError(
                f"{target} already holds files that dinotrack did not write (e.g. {entries[0]}) "
                "and would be replaced as a whole; name a new or empty directory, or remove it"
            )
    return target


def output_file(path: str | os.PathLike[str]) -> Path:
    """Checks that a file can be published at `path`, creating its missing parents.

    Raises:
        IsADirectoryError: `path` is an existing directory.
        NotADirectoryError: One of its parents is an existing file.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory; name the output file")
    _check_parents(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _check_parents(path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{parent} is a file, so {path} cannot be created")
            return


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Context manager yielding a hidden temporary directory that replaces `path` on success.

    The parents of `path` are created. If the body raises, the temporary directory is deleted
    and `path` is left as it was; an existing `path` is replaced only once the body succeeded,
    and only if it is empty or was itself published here (see :data:`MARKER_NAME`).

    Args:
        path: The final directory.

    Yields:
        The temporary directory to fill.

    Raises:
        As :func:`output_directory`; PermissionError if the parent directory is not writable.
    """
    path = output_directory(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
    except PermissionError as error:
        raise PermissionError(f"cannot write into {path.parent}: {error.strerror}") from None
    try:
        yield tmp
        (tmp / MARKER_NAME).write_text(
            "written by dinotrack; replaced as a whole by its next run\n"
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if path.exists():
            output_directory(path)  # nothing foreign appeared while the body ran
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as error:
        if old is not None and not path.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, PermissionError):
            raise PermissionError(f"cannot replace {path}: {error.strerror}") from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
