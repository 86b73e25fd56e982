"""``dinotrack export``: the formats of :mod:`dinotrack.results.formats` made from a folder of
palette (or grayscale id) PNGs written by dinotrack or any other method, one video or
``<video>/<frame>.png`` folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.video import natural_key
from dinotrack.results.formats import (
    COCO_FILE,
    EXPORT_FORMATS,
    MOT_FILE,
    OBJECTS_DIR,
    format_writers,
)
from dinotrack.results.record import file_digest, owned_files, read_record, record_files


def result_videos(
    results: str | os.PathLike[str], ignore: Sequence[str] = ()
) -> list[tuple[str, Path, list[Path]]]:
    """The videos of a results folder of palette PNGs, from any method.

    A folder holding PNGs is one video; otherwise each sub-folder holding PNGs is one (the
    DAVIS results layout ``<results>/<sequence>/<frame>.png``).

    Args:
        results: The folder.
        ignore: File names that are not frames (e.g. a start mask).

    Returns:
        ``(name, folder, PNG paths in natural order)`` per video (``frame2`` before
        ``frame10``, as :mod:`dinotrack.io.video` reads frame folders), sorted by name.

    Raises:
        FileNotFoundError, NotADirectoryError: ``results`` is missing or a file.
        ValueError: No PNG in the folder nor in its sub-folders.
    """
    results = Path(results)
    if not results.exists():
        raise MissingFileError(f"results folder {results} does not exist")
    if not results.is_dir():
        raise NotADirectoryError(f"{results} is a file; give a folder of PNG masks")

    def pngs(folder: Path) -> list[Path]:  # in natural order, as frame folders are read
        return sorted(
            (
                p
                for p in folder.iterdir()
                if p.suffix.lower() == ".png"
                and p.is_file()
                and not p.name.startswith(".")
                and p.name not in ignore
            ),
            key=lambda p: natural_key(p.name),
        )

    own = pngs(results)
    if own:
        return [(Path(os.path.abspath(results)).name, results, own)]
    videos = [
        (sub.name, sub, pngs(sub))
        for sub in sorted(results.iterdir())
        if sub.is_dir() and not sub.name.startswith(".") and sub.name != OBJECTS_DIR
    ]
    videos = [video for video in videos if video[2]]
    if not videos:
        raise InputError(
            f"no PNG masks in {results} nor in its sub-folders; give a folder of "
            "<frame>.png or of <video>/<frame>.png"
        )
    return videos


def frame_indices(names: Sequence[str]) -> list[int]:
    """Frame indices for result files named ``names`` (stems): the numbers themselves when
    every name is a decimal number (``00012`` is frame 12, as ``segment`` names the frames of
    a video file and DAVIS its frames), else the positions 0, 1, 2..."""
    if all(name.isdecimal() for name in names):
        return [int(name) for name in names]
    return list(range(len(names)))


def export_results(
    results: str | os.PathLike[str],
    formats: Sequence[str],
    out: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    ignore: Sequence[str] = (),
) -> list[Path]:
    """Convert a results folder of palette (or grayscale id) PNGs to other formats.

    Each video's files (``coco.json``, ``mot.txt``, ``objects/``; see the module docstring)
    are written to a hidden temporary folder and renamed into place once all are complete,
    then added to the folder's ownership record (see :mod:`dinotrack.results.writer`), so that
    a later ``segment`` into it replaces them as its own. Replacing ``objects/`` keeps the
    files in it that dinotrack did not write (a user's ``notes.txt``). ``coco.json`` names the
    video after the input that the folder's record names (else after the folder).

    Args:
        results: One video's PNGs, or ``<video>/<frame>.png`` folders (see
            :func:`result_videos`).
        formats: Names from :data:`EXPORT_FORMATS`.
        out: Where to write; None: into each video's own folder. With several videos, each
            gets ``<out>/<video>/``.
        overwrite: Replace files of an earlier export; without it they are refused.
        ignore: File names that are not frames.

    Returns:
        The paths written.

    Raises:
        ValueError: An unknown format, no PNGs, an RGB or unreadable PNG, masks of
            different sizes.
        FileExistsError: An output exists and ``overwrite`` is False.
    """
    from dinotrack.io.masks import read_mask

    formats = list(formats)
    bad = [name for name in formats if name not in EXPORT_FORMATS]
    if bad or not formats:
        raise InputError(
            f"cannot export to {bad[0] if bad else 'nothing'!r}; choose from "
            f"{', '.join(EXPORT_FORMATS)}"
        )
    videos = result_videos(results, ignore)
    targets = []
    for name, folder, _ in videos:
        if out is None:
            target = folder
        else:
            target = Path(out) if len(videos) == 1 else Path(out) / name
        targets.append(target)
        for entry in _format_entries(formats):
            path = target / entry
            if (path.exists() or path.is_symlink()) and not overwrite:
                raise FileExistsError(
                    f"{path} exists (an earlier export?); pass --overwrite to replace it, or "
                    "--out to write elsewhere"
                )
            if path.exists() and path.is_dir() != (entry == OBJECTS_DIR):
                raise FileExistsError(f"{path} exists and is not a {entry} output; remove it")
    written: list[Path] = []
    for (name, folder, paths), target in zip(videos, targets, strict=True):
        target.mkdir(parents=True, exist_ok=True)
        source = _recorded_input(folder)
        video_name = name if source is None else Path(source).stem
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target))
        try:
            writers = format_writers(
                formats, video_name, scratch=tmp / ".objects-scratch", source=source
            )
            stems = [p.stem for p in paths]
            for index, stem, path in zip(frame_indices(stems), stems, paths, strict=True):
                loaded = read_mask(path)
                if loaded.format == "rgb":
                    raise InputError(
                        f"{path} is an RGB image; export reads palette PNGs (index = object id) "
                        "or grayscale id masks, whose ids are the same in every frame"
                    )
                for writer in writers:
                    writer.add(index, stem, loaded.ids)
            for writer in writers:
                writer.finish(tmp)
            entries = _format_entries(formats)
            files = [relative for entry in entries for relative in _files_of(tmp, entry)]
            if OBJECTS_DIR in entries:
                _keep_foreign(target, tmp / OBJECTS_DIR)
            for entry in entries:
                _replace(tmp / entry, target / entry)
                written.append(target / entry)
            record_files(target, files, replaced=[OBJECTS_DIR] if OBJECTS_DIR in entries else [])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return written


def _recorded_input(folder: Path) -> str | None:
    """The input that dinotrack's record in `folder` says the results were made from."""
    record = read_record(folder) or {}
    inputs = record.get("inputs")
    source = inputs.get("input") if isinstance(inputs, dict) else None
    return source if isinstance(source, str) else None


def _files_of(folder: Path, entry: str) -> list[str]:
    """``entry`` (a file or folder in `folder`) as relative POSIX paths of its files."""
    path = folder / entry
    if not path.is_dir():
        return [entry]
    return sorted(p.relative_to(folder).as_posix() for p in path.rglob("*") if p.is_file())


def _keep_foreign(target: Path, new_objects: Path) -> None:
    """Copy into the new ``objects/`` folder every file of the old ``target/objects`` that
    dinotrack did not write (or that was changed since) and that the new export does not
    replace: a user's ``notes.txt`` stays."""
    old = target / OBJECTS_DIR
    if not old.is_dir() or old.is_symlink():
        return
    ours = owned_files(target) or {}
    for path in sorted(old.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        inner = path.relative_to(old)
        recorded = ours.get(f"{OBJECTS_DIR}/{inner.as_posix()}")
        if (new_objects / inner).exists() or (
            recorded is not None and path.is_file() and file_digest(path) == recorded
        ):
            continue  # replaced by the new export, or dinotrack's own
        (new_objects / inner).parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            os.symlink(os.readlink(path), new_objects / inner)
        else:
            shutil.copy2(path, new_objects / inner)


def _format_entries(formats: Sequence[str]) -> list[str]:
    files = {"coco": COCO_FILE, "mot": MOT_FILE, "objects": OBJECTS_DIR}
    return [files[name] for name in formats if name in files]


def _replace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing target folder is swapped out first."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        try:
            os.replace(source, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)
