"""The result writer: one run's output directory, owned, published whole or not at all.

A :class:`ResultWriter` fills a hidden temporary directory next to the output directory
(one palette PNG per frame, the start mask of ``--auto``, the files of extra
:class:`FormatWriter` formats, anything else written into :attr:`ResultWriter.staging`), then
publishes it with the optional overlay video in one step when the run ends. A failed or
interrupted run publishes nothing and leaves no temporary or new empty folder behind; the
temporaries of a killed run (SIGKILL) are removed by the next run.

Ownership. The published directory holds a record, :data:`RECORD_NAME`, listing every file
dinotrack wrote there with its size and SHA-256. A later run replaces the directory only when
everything in it is exactly such a file: a file the user added (notes, a frame folder, a mask)
or changed (an edited ``start_mask.png``) makes the run refuse, before any work, naming the
file. A run also refuses when one of its inputs (the video, the frames, the mask, the weights)
lies inside the output directory, which it would replace.

The record also describes the run that made the result (the ``run`` given to the writer), so
that a batch resumes from a result only when it was made the same way and is still whole; the
record itself is :mod:`dinotrack.results.record`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dinotrack.errors import InputError
from dinotrack.io.atomic import (
    check_parents,
    make_parents,
    output_file,
    remove_empty,
    remove_stale_temporaries,
    temporary_tag,
)
from dinotrack.io.masks import davis_palette, write_mask
from dinotrack.results.record import (
    RECORD_FORMAT,
    RECORD_NAME,
    RECORD_VERSION,
    describe_file,
    owned_files,
    walk_files,
)

__all__ = [
    "RECORD_NAME",
    "START_MASK_NAME",
    "FormatWriter",
    "ResultWriter",
    "check_output_directory",
    "owned_files",
]

START_MASK_NAME = "start_mask.png"
"""File name, inside the results directory, of the start mask that ``segment --auto`` made."""


class FormatWriter(Protocol):
    """An extra output format written beside the palette PNGs (see ``dinotrack.results.formats``).

    The writer is told about every frame's ids, then writes its files into the run's
    temporary output directory before it is published; every file it writes there is
    recorded as dinotrack's own.
    """

    def add(self, index: int, name: str, ids: np.ndarray) -> None:
        """Frame ``index`` (0-based in the video), output stem ``name`` (e.g. ``"00012"``),
        ``ids`` ``[H, W]`` integer object ids (0 = background)."""

    def finish(self, directory: Path) -> None:
        """Write this format's files into ``directory`` (the temporary output directory)."""


def check_output_directory(
    path: str | os.PathLike[str],
    inputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
    flag: str = "the output directory",
) -> Path:
    """Checks, before any work, that `path` may be (re)placed by a run's results.

    Args:
        path: The output directory.
        inputs: ``(flag, path)`` of what the run reads (``("input", video)``, ``("--mask",
            mask)``, ...); None paths are skipped. None may lie inside `path`.
        flag: How messages name `path` (e.g. ``"--out"``).

    Returns:
        `path`, normalised (``a/b/..`` is ``a``; ``.`` is the absolute current directory).

    Raises:
        ValueError: An empty path or the root directory; an input inside `path`.
        NotADirectoryError: `path`, or one of its parents, is an existing file.
        FileExistsError: `path` holds a file that dinotrack did not write, or that was changed
            since.
    """
    if not str(path):
        raise InputError("the output directory path is empty")
    target = Path(os.path.normpath(path))
    if target.name in ("", ".", ".."):
        target = Path(os.path.abspath(target))
    if not target.name:
        raise InputError(f"cannot use {target} as an output directory; name a new directory")
    if os.path.lexists(target) and (target.is_symlink() or not target.is_dir()):
        raise NotADirectoryError(f"{target} exists and is not a directory; name a directory")
    check_parents(target)
    for input_flag, source in inputs:
        if source is not None and _is_within(Path(source), target):
            raise InputError(
                f"{input_flag} {source} is inside {flag} {target}, which the run replaces "
                "when it ends; move it out or name another output directory"
            )
    if target.is_dir():
        _check_owned(target)
    return target


def _check_owned(target: Path) -> None:
    entries = sorted(entry.name for entry in target.iterdir())
    if not entries:
        return
    files = owned_files(target)
    if files is None:
        if RECORD_NAME in entries:
            raise FileExistsError(
                f"{target} holds an earlier result without a record of its files (an older "
                "dinotrack, or a damaged record), so it is not replaced; remove it yourself or "
                "name a new directory"
            )
        raise FileExistsError(
            f"{target} already holds files that dinotrack did not write (e.g. {entries[0]}) "
            "and would be replaced as a whole; name a new or empty directory, or remove it"
        )
    for relative, entry in walk_files(target):
        if relative == RECORD_NAME:
            continue
        expected = files.get(relative)
        if expected is None or entry.is_symlink() or not entry.is_file():
            raise FileExistsError(
                f"{target} holds {relative}, which dinotrack did not write; a rerun would "
                "delete it. Move it out of the directory, or name another output directory"
            )
        if describe_file(entry) != expected:
            raise FileExistsError(
                f"{target / relative} was changed after dinotrack wrote it; a rerun would "
                "delete it. Move it out of the directory (and pass it as --mask, if it is an "
                "edited start mask), or name another output directory"
            )


def _is_within(path: Path, directory: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(directory))


class ResultWriter:
    """Writes one run's results and publishes them together, or not at all.

    Example::

        with ResultWriter("results", inputs=[("input", video), ("--mask", mask)]) as results:
            for index, mask in tracker.track(video, first):
                results.add(index, f"{index:05d}", mask)
        # published here; an exception (or Ctrl-C, or SIGTERM in the CLI) publishes nothing

    Checks run when the writer is created, before any work (see
    :func:`check_output_directory`); the temporary directory is made on ``__enter__``.

    Attributes:
        directory: The output directory (normalised).
        staging: The temporary directory being filled (after ``__enter__``).
        replaced: Whether publishing replaced an earlier result in ``directory``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        inputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
        palette: np.ndarray | None = None,
        formats: Sequence[FormatWriter] = (),
        flag: str = "the output directory",
        masks: bool = True,
        run: dict[str, Any] | None = None,
    ) -> None:
        """Checks the output directory; nothing is written yet.

        Args:
            directory: The output directory.
            inputs: ``(flag, path)`` of every file the run reads; none may be inside it.
            palette: ``[N, 3]`` uint8 RGB palette of the masks (None: the DAVIS palette).
            formats: Extra output formats (see :class:`FormatWriter`).
            flag: How messages name the directory (e.g. ``"--out"``).
            masks: Write the palette PNGs (False: only the formats, e.g. ``--save coco``).
            run: What made the result (plain JSON values), kept in the record as ``run``
                (see :func:`reusable`).

        Raises:
            As :func:`check_output_directory`.
        """
        self.inputs = [(flag, source) for flag, source in inputs if source is not None]
        self.flag = flag
        self.directory = check_output_directory(directory, self.inputs, flag)
        self.palette = davis_palette() if palette is None else palette
        self.formats = list(formats)
        self.masks = masks
        self.run = run
        self.staging: Path | None = None
        self.replaced = False
        self.frames_written = 0
        self._overlay: Any = None
        self._made: list[Path] = []

    def open_overlay(
        self,
        path: str | os.PathLike[str],
        fps: float,
        width: int,
        height: int,
        *,
        overwrite: bool = False,
        alpha: float = 0.5,
        flag: str = "--overlay",
    ) -> Path:
        """Adds a video of the masks over the frames, published with the directory.

        Args:
            path: The video (.mp4/.mov/.mkv), outside the output directory.
            fps: Frame rate.
            width: Frame width.
            height: Frame height.
            overwrite: Replace an existing file at `path` (without it, only the unchanged
                overlay published with the current result in the directory is replaced).
            alpha: Opacity of the mask colours.
            flag: How messages name `path`.

        Returns:
            The overlay path.

        Raises:
            ValueError: `path` is inside the output directory, or is an input.
            FileExistsError: `path` exists and `overwrite` is False.
        """
        from dinotrack.results.overlay import OverlayWriter

        target = Path(path)
        if _is_within(target, self.directory):
            raise InputError(
                f"{flag} {target} is inside {self.flag} {self.directory}, which is replaced "
                "as a whole when the run ends; write it elsewhere"
            )
        for input_flag, source in self.inputs:
            if target.exists() and os.path.samefile(target, source):
                raise InputError(f"{flag} {target} is the {input_flag}; name another output")
        ours = self._published_with(target)
        output_file(target, overwrite=overwrite or ours, flag=flag)
        remove_stale_temporaries(target)
        self._made += make_parents(target)
        try:
            overlay = OverlayWriter(target, fps, width, height, self.palette, alpha=alpha)
        except BaseException:
            self.abort()
            raise
        overlay.publish_on_close = False
        self._overlay = overlay
        return target

    def _published_with(self, path: Path) -> bool:
        """Whether `path` is, unchanged, a file published with the current result."""
        try:
            data = json.loads((self.directory / RECORD_NAME).read_text())
            expected = data["published_with"][os.path.realpath(path)]
            return path.is_file() and not path.is_symlink() and describe_file(path) == expected
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            return False

    def __enter__(self) -> ResultWriter:
        remove_stale_temporaries(self.directory)
        try:
            self._made += make_parents(self.directory)
            staging = self.directory.with_name(f".{self.directory.name}.partial-{temporary_tag()}")
            staging.mkdir()
        except PermissionError as error:
            self.abort()
            raise PermissionError(
                f"cannot write into {self.directory.parent}: {error.strerror}"
            ) from None
        except BaseException:
            self.abort()
            raise
        self.staging = staging
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.publish()
        else:
            self.abort()

    def add(self, index: int, name: str, ids: np.ndarray, frame: np.ndarray | None = None) -> None:
        """Writes frame `index`'s mask as ``<name>.png`` (unless ``masks`` is False), tells the
        formats, draws the overlay.

        Args:
            index: The frame's index in the video (0-based).
            name: Output stem (e.g. ``"00012"``).
            ids: ``[H, W]`` integer object ids in 0..255.
            frame: ``[H, W, 3]`` uint8 RGB frame, needed when an overlay is open.
        """
        staging = self._staging()
        if self.masks:
            write_mask(staging / f"{name}.png", ids, self.palette)
        for writer in self.formats:
            writer.add(index, name, ids)
        if self._overlay is not None:
            if frame is None:
                raise InputError("an overlay is open: add() needs the frame too")
            self._overlay.write(frame, ids)
        self.frames_written += 1

    def write_start_mask(self, ids: np.ndarray) -> Path:
        """Writes the start mask (``segment --auto``) as :data:`START_MASK_NAME`."""
        path = self._staging() / START_MASK_NAME
        write_mask(path, ids, self.palette)
        return self.directory / START_MASK_NAME

    def publish(self) -> None:
        """Finishes the formats and the overlay, records every file, and publishes the
        directory and the overlay; on any failure nothing is published."""
        staging = self._staging()
        old = None
        try:
            for writer in self.formats:
                writer.finish(staging)
            if self._overlay is not None:
                self._overlay.close()  # flushed into its temporary file, not yet published
            files = {
                relative: describe_file(entry)
                for relative, entry in walk_files(staging)
                if entry.is_file() and not entry.is_symlink()
            }
            record = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "files": files}
            if self.run is not None:
                record["run"] = self.run
            # What the result was made from (e.g. ``export`` names the video after its input).
            record["inputs"] = {flag: os.path.abspath(path) for flag, path in self.inputs}
            if self._overlay is not None:  # so that the next run may replace it, unchanged
                overlay = os.path.realpath(self._overlay.path)
                record["published_with"] = {overlay: describe_file(self._overlay.pending_path)}
            (staging / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
            if os.path.lexists(self.directory):
                check_output_directory(self.directory)  # nothing foreign appeared meanwhile
                old = self.directory.with_name(f".{self.directory.name}.old-{temporary_tag()}")
                os.replace(self.directory, old)
            os.replace(staging, self.directory)
            self.staging = None
            if self._overlay is not None:
                try:
                    self._overlay.publish()
                except BaseException:
                    os.replace(self.directory, staging)
                    self.staging = staging
                    raise
        except BaseException as error:
            if old is not None and not os.path.lexists(self.directory):
                os.replace(old, self.directory)
                old = None
            self.abort()
            if isinstance(error, PermissionError):
                message = f"cannot replace {self.directory}: {error.strerror}"
                raise PermissionError(message) from None
            raise
        if old is not None:
            self.replaced = True
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Deletes everything this run wrote; the previous result is left as it was."""
        if self._overlay is not None:
            self._overlay.abort()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        remove_empty(self._made)
        self._made = []

    def _staging(self) -> Path:
        if self.staging is None:
            raise RuntimeError("the ResultWriter is not open: use it as a context manager")
        return self.staging
