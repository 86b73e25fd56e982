"""The ownership record of a results folder (one idea: what dinotrack wrote into a folder,
and whether it can stand for a run).

Every published results folder holds :data:`RECORD_NAME`, a JSON file with ``format``,
``version``, ``files`` (relative POSIX path -> ``size`` and ``sha256`` of every file dinotrack
wrote there), ``inputs`` (flag -> absolute path of what the run read) and ``run`` (what made
the result: checksums of the input and prompts, model, weights' checksum, settings, formats;
see :func:`dinotrack.cli.job.run_description`). ``dinotrack export`` adds its files
(:func:`record_files`). Readers ignore fields they do not know, and a record without ``run``
(an older dinotrack) is whole but never reused (:func:`reusable`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dinotrack.io.atomic import atomic_output

__all__ = [
    "RECORD_NAME",
    "describe_file",
    "file_digest",
    "owned_files",
    "read_record",
    "record_files",
    "reusable",
    "walk_files",
]

RECORD_NAME = ".dinotrack-output"
"""Hidden JSON file in every published directory: what dinotrack wrote there."""

RECORD_FORMAT = "dinotrack.results.writer"
RECORD_VERSION = 1


def read_record(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ownership record of `directory` (see the module docstring); None when it holds no
    readable, current record."""
    record = Path(directory) / RECORD_NAME
    try:
        data = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        return None
    if not isinstance(data.get("files"), dict):
        return None
    return data


def owned_files(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """The record of what dinotrack wrote into `directory`: relative POSIX path -> ``size``
    and ``sha256``; None when the directory holds no (readable, current) record."""
    data = read_record(directory)
    return None if data is None else data["files"]


def reusable(directory: str | os.PathLike[str], run: dict[str, Any]) -> str | None:
    """Why the result in `directory` cannot stand for a run described by `run` (None: it can).

    It can when its record describes the same run (same input and prompts, model, weights,
    settings and formats) and every file the record lists is still there, unchanged.

    Returns:
        None, or a short reason: ``"no result"``, ``"its record does not describe the run"``
        (an older dinotrack), ``"another mask, --short-side"`` (what changed, in the words of
        `run`'s keys), ``"its file 00012.png is missing"``, ``"its file 00012.png was
        changed"``.
    """
    directory = Path(directory)
    data = read_record(directory)
    if data is None:
        return "no result"
    old = data.get("run")
    if not isinstance(old, dict):
        return "its record does not describe the run (an older dinotrack)"
    changed = [key for key in run if old.get(key) != run[key]]
    changed += [key for key in old if key not in run]
    if changed:
        return "another " + ", ".join(changed)
    for relative, expected in sorted(data["files"].items()):
        path = directory / relative
        if not path.is_file() or path.is_symlink():
            return f"its file {relative} is missing"
        if describe_file(path) != expected:
            return f"its file {relative} was changed"
    return None


def record_files(
    directory: str | os.PathLike[str], written: Iterable[str], replaced: Iterable[str] = ()
) -> None:
    """Adds files written into `directory` after it was published (``dinotrack export``'s)
    to its record, which is made if there is none.

    Args:
        directory: The folder.
        written: The files written, relative POSIX paths (``coco.json``, ``objects/1/00000.png``).
        replaced: Folders replaced as a whole (``objects``): the record's earlier entries
            below them are dropped first.
    """
    directory = Path(directory)
    data = read_record(directory) or {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "files": {},
    }
    prefixes = tuple(f"{folder}/" for folder in replaced)
    files = {k: v for k, v in data["files"].items() if not k.startswith(prefixes)}
    for relative in written:
        files[relative] = describe_file(directory / relative)
    data["files"] = files
    with atomic_output(directory / RECORD_NAME) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def walk_files(directory: Path) -> list[tuple[str, Path]]:
    """Every non-directory entry below `directory` (symlinks not followed), and every empty
    directory, as ``(relative POSIX path, path)``."""
    found = []
    for root, dirs, files in os.walk(directory):
        base = Path(root)
        for name in dirs:
            entry = base / name
            if entry.is_symlink() or not any(entry.iterdir()):
                found.append((entry.relative_to(directory).as_posix(), entry))
        for name in files:
            found.append(((base / name).relative_to(directory).as_posix(), base / name))
    return sorted(found)


def file_digest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a file, or of a directory's files (their names,
    sizes and contents, hidden files and sub-folders included)."""
    path = Path(path)
    if not path.is_dir():
        return describe_file(path)
    digest, size = hashlib.sha256(), 0
    for relative, entry in walk_files(path):
        if entry.is_file():
            described = describe_file(entry)
            size += described["size"]
            digest.update(f"{relative}\0{described['sha256']}\0".encode())
    return {"size": size, "sha256": digest.hexdigest()}


def describe_file(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}
