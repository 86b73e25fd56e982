"""Publish output files and directories atomically: write a temporary sibling, then rename it
over the target.

A reader never sees a half-written file at the target path, and a failed write leaves the
previous file (if any) untouched. The temporary file lives in the target's directory, so the
final `os.replace` is a rename within one file system. No `fsync` is done: this guards against
concurrent readers and crashed writers, not against power loss.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dinotrack.errors import MissingFileError


def temporary_sibling(path: str | os.PathLike[str]) -> Path:
    """Returns a fresh hidden path next to `path` for writing before publishing.

    Args:
        path: The final output path. Its directory must exist.

    Returns:
        A path like `<dir>/.<name>.<host>-<pid>-<random>.tmp` that does not exist yet; the
        host and process id let :func:`remove_stale_temporaries` tell a dead run's leftover
        from a live run's file.

    Raises:
        FileNotFoundError: If the directory of `path` does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise MissingFileError(
            f"output directory {path.parent} does not exist; create it before writing {path.name}"
        )
    return path.with_name(f".{path.name}.{temporary_tag()}.tmp")


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


def temporary_tag() -> str:
    """``<host>-<pid>-<random>``: names this process's temporaries (see
    :func:`remove_stale_temporaries`)."""
    return f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"


_TAGGED = re.compile(
    r"(?:\.(?=.*\.tmp$)|\.partial-|\.old-)(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{8}(?:\.tmp)?"
)
_UNTAGGED = re.compile(r"(?:\.[0-9a-f]{12}\.tmp|\.partial-[0-9a-f]{8}|\.old-[0-9a-f]{8})")

UNTAGGED_STALE_SECONDS = 24 * 3600.0
"""Age after which a temporary of an older dinotrack version (its name holds no process id)
counts as left by a dead run."""


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Deletes the hidden temporaries that killed runs left next to an output `path`.

    A temporary of `path` (``.<name>.<tag>.tmp``, ``.<name>.partial-<tag>``,
    ``.<name>.old-<tag>``) is removed when the process that made it on this host is gone
    (SIGKILL, power loss); one of a live process, or of another host, is kept. Temporaries of
    older versions, whose names hold no process id, are removed once a day old.

    Args:
        path: The final output path (file or directory).

    Returns:
        The paths removed.
    """
    path = Path(path)
    prefix = f".{path.name}"
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or not _is_stale(entry.name[len(prefix) :], entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _is_stale(rest: str, entry: Path) -> bool:
    tagged = _TAGGED.fullmatch(rest)
    if tagged is not None:
        return tagged["host"] == _host() and not _process_alive(int(tagged["pid"]))
    if _UNTAGGED.fullmatch(rest) is not None:
        try:
            return time.time() - entry.lstat().st_mtime > UNTAGGED_STALE_SECONDS
        except OSError:
            return False
    return False


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def make_parents(path: str | os.PathLike[str]) -> list[Path]:
    """Creates the missing parent directories of `path`.

    Returns:
        The directories created, deepest first, for :func:`remove_empty` after a failure (a
        failed run leaves no new empty folder behind).

    Raises:
        NotADirectoryError: One of the parents is an existing file.
    """
    path = Path(os.path.abspath(path))
    missing = []
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{parent} is a file, so {path} cannot be created")
            break
        missing.append(parent)
    for parent in reversed(missing):
        try:
            parent.mkdir()
        except FileExistsError:
            pass
    return missing


def remove_empty(directories: list[Path]) -> None:
    """Removes those of `directories` (deepest first) that are still empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def output_file(
    path: str | os.PathLike[str], *, overwrite: bool = False, flag: str = "the output"
) -> Path:
    """Checks, before any work, that a file can be published at `path`.

    Nothing is created: the writer makes the missing parents (:func:`make_parents`) and
    removes them again if it fails.

    Args:
        path: The output file.
        overwrite: Allow replacing an existing file (as ffmpeg's ``-y``); without it, an
            existing file is refused.
        flag: How the message names the path (e.g. ``"--overlay"``).

    Raises:
        IsADirectoryError: `path` is an existing directory.
        NotADirectoryError: One of its parents is an existing file.
        FileExistsError: `path` exists (a file, a FIFO, ...) and `overwrite` is False, or it
            is not a regular file.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{flag} {target} is a directory; name the output file")
    if os.path.lexists(target):
        if not target.is_file():
            raise FileExistsError(f"{flag} {target} exists and is not a regular file; name a file")
        if not overwrite:
            raise FileExistsError(
                f"{flag} {target} already exists; pass --overwrite to replace it, or name "
                "another file"
            )
    check_parents(target)
    return target


def check_parents(path: str | os.PathLike[str], flag: str = "") -> None:
    """Checks that no existing parent of `path` is a file (nothing is created).

    Raises:
        NotADirectoryError: The nearest existing parent is not a directory.
    """
    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                name = f"{flag} {path}" if flag else str(path)
                raise NotADirectoryError(f"{parent} is a file, so {name} cannot be created")
            return
