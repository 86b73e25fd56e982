"""The studio's project file: objects, prompts and settings of one video, saved as they change.

Layout, inside the output directory (``studio --out``)::

    studio.json              objects, the frames that hold a prompt, settings (JSON)
    .studio/prompts/NNNNN.png  each prompt, a palette PNG of object ids (NNNNN: frame index)
    .studio/lock             held by the process that has the project open (ProjectLock)

Every file is written to a temporary name and renamed, so a crash (or Ctrl-C, or a killed
process) leaves either the old or the new version. ``studio.json`` is the authority: a prompt
is saved by writing its PNG first and then the JSON that lists it, and deleted by writing the
JSON first; a PNG the JSON does not list is a leftover and is ignored (and removed). Nothing
else in the directory is touched, and a ``studio.json`` that dinotrack did not write is never
replaced.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dinotrack.errors import InputError, ProjectInUseError
from dinotrack.io.atomic import atomic_output, remove_stale_temporaries
from dinotrack.io.decoders import VideoInfo
from dinotrack.io.masks import read_mask, write_mask
from dinotrack.tracking.objects import check_prompt

__all__ = ["PROJECT_NAME", "ProjectFile", "ProjectLock", "ProjectObject", "UnusableResultsError"]

PROJECT_NAME = "studio.json"
"""The project file's name inside the output directory."""

PROJECT_FORMAT = "dinotrack.studio"
PROJECT_VERSION = 1
_PROMPTS = Path(".studio", "prompts")
_LOCK = Path(".studio", "lock")
_RESULTS = Path(".studio", "results.pt")
RESULTS_FORMAT = "dinotrack.studio.results/1"


@dataclass
class ProjectObject:
    """An object of the project: its id (the palette index of its masks), name, visibility."""

    id: int
    name: str
    hidden: bool = False


@dataclass
class ProjectState:
    """What a project file holds, read back."""

    objects: list[ProjectObject]
    prompts: dict[int, np.ndarray]
    settings: dict[str, Any]
    clicks: list[dict[str, Any]] = field(default_factory=list)
    """The clicks and box each object's mask on a prompt frame was grown from:
    ``{"frame", "object", "points": [[x, y, 1 or 0], ...], "box": [x0, y0, x1, y1] or None}``."""


class ProjectFile:
    """The project file of one video in one directory.

    Args:
        directory: The output directory (created when the first change is saved).
        info: The video's description; a project of another video is refused.

    Raises:
        NotADirectoryError: ``directory`` (or its ``.studio``) is a file.
        FileExistsError: ``directory`` holds a ``studio.json`` that dinotrack did not write.
        ValueError: The project there belongs to another video.
    """

    def __init__(self, directory: str | os.PathLike[str], info: VideoInfo) -> None:
        self.directory = Path(directory)
        self.info = info
        self.path = self.directory / PROJECT_NAME
        _check_folders(self.directory)
        self._data = self._read()

    def _read(self) -> dict[str, Any] | None:
        if not os.path.lexists(self.path):
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
            raise FileExistsError(
                f"{self.path} is not a dinotrack studio project, and is not replaced; name "
                "another --out directory"
            )
        video, expected = data.get("video", {}), self._video()
        if video.get("path") != expected["path"]:
            raise InputError(
                f"{self.path} is the project of {video.get('path')}, not of {self.info.path}; "
                "open that video, or name another --out directory"
            )
        if any(video.get(key) != expected[key] for key in ("frames", "width", "height")):
            raise InputError(
                f"{self.info.path} has changed since {self.path} was saved (it had "
                f"{video.get('frames')} frames of {video.get('width')}x{video.get('height')}); "
                "name another --out directory"
            )
        return data

    @property
    def exists(self) -> bool:
        """Whether a project was saved there."""
        return self._data is not None

    def load(self) -> ProjectState:
        """The saved objects, prompts and settings (empty when nothing was saved).

        Warns:
            UserWarning: A prompt the project lists could not be read (it is left out).
        """
        if self._data is None:
            return ProjectState([], {}, {})
        objects = [
            ProjectObject(int(o["id"]), str(o["name"]), bool(o.get("hidden", False)))
            for o in self._data.get("objects", [])
        ]
        prompts = {}
        size = (self.info.height, self.info.width)
        for frame in self._data.get("prompts", []):
            try:
                loaded = read_mask(self.prompt_path(int(frame)))
                prompts[int(frame)] = check_prompt(loaded.ids.astype(np.uint8), size, frame)
            except (OSError, ValueError) as error:
                warnings.warn(f"the prompt of frame {frame} is left out: {error}", stacklevel=2)
        settings = self._data.get("settings", {})
        clicks = [c for c in self._data.get("clicks", []) if _is_click_entry(c, prompts)]
        return ProjectState(
            objects, prompts, settings if isinstance(settings, dict) else {}, clicks
        )

    def prompt_path(self, frame: int) -> Path:
        """Where the prompt of ``frame`` is kept."""
        return self.directory / _PROMPTS / f"{frame:05d}.png"

    def write_prompt(self, frame: int, ids: np.ndarray) -> None:
        """Write a prompt's PNG (before :meth:`save` lists it)."""
        folder = self.directory / _PROMPTS
        folder.mkdir(parents=True, exist_ok=True)
        write_mask(self.prompt_path(frame), ids)

    def save(
        self,
        objects: list[ProjectObject],
        prompt_frames: list[int],
        settings: dict[str, Any],
        clicks: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write ``studio.json`` (atomically), then remove the prompt PNGs it no longer lists.
        ``clicks``: as :attr:`ProjectState.clicks`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {
            "format": PROJECT_FORMAT,
            "version": PROJECT_VERSION,
            "video": self._video(),
            "objects": [asdict(o) for o in objects],
            "prompts": sorted(prompt_frames),
            "settings": settings,
            "clicks": clicks or [],
        }
        remove_stale_temporaries(self.path)
        with atomic_output(self.path) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n")
        self._data = data
        folder = self.directory / _PROMPTS
        if folder.is_dir():
            listed = {self.prompt_path(f).name for f in prompt_frames}
            for entry in folder.iterdir():
                if entry.suffix == ".png" and entry.name not in listed:
                    entry.unlink(missing_ok=True)

    @property
    def results_path(self) -> Path:
        """Where the computed masks (and the memory snapshots to resume them) are kept."""
        return self.directory / _RESULTS

    def write_results(self, fingerprint: str, state: dict[str, Any] | None) -> None:
        """Keep the results of this video under the tracker ``fingerprint`` (see
        :meth:`dinotrack.Tracker.fingerprint`): ``state`` holds plain values and tensors
        (:func:`torch.save`, loadable with ``weights_only``), written atomically; None or
        empty removes them."""
        if not state:
            self.results_path.unlink(missing_ok=True)
            return
        self.results_path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format": RESULTS_FORMAT,
            "video": {**self._video(), "content": video_content_key(self.info)},
            "tracker": fingerprint,
            "results": state,
        }
        remove_stale_temporaries(self.results_path)
        with atomic_output(self.results_path) as tmp:
            torch.save(data, tmp)

    @property
    def has_results(self) -> bool:
        """Whether results are kept (usable or not)."""
        return self.results_path.is_file()

    def read_results(self, fingerprint: str, device: Any = "cpu") -> dict[str, Any] | None:
        """The results :meth:`write_results` kept for this video and the tracker
        ``fingerprint``, their tensors on ``device``; None when none were kept.

        Raises:
            UnusableResultsError: Results are kept but cannot be used (the message says why:
                another model or settings, another video or a changed one, an unreadable
                file); they stay until a propagation or a reset replaces them.
        """
        if not self.results_path.is_file():
            return None
        try:
            data = torch.load(self.results_path, map_location=device, weights_only=True)
        except OSError as error:
            raise UnusableResultsError(
                f"the kept results in {self.results_path} cannot be read "
                f"({error.strerror or error}); propagate again"
            ) from None
        except Exception as error:  # a truncated or foreign file: any unpickling error
            raise UnusableResultsError(
                f"the kept results in {self.results_path} cannot be read (a damaged file: "
                f"{type(error).__name__}); propagate again"
            ) from None
        if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
            raise UnusableResultsError(f"{self.results_path} is not dinotrack's; propagate again")
        video = data.get("video") if isinstance(data.get("video"), dict) else {}
        if {k: v for k, v in video.items() if k != "content"} != self._video():
            raise UnusableResultsError(
                "the kept results were computed on another video and are not shown; propagate again"
            )
        if video.get("content") != video_content_key(self.info):
            raise UnusableResultsError(
                f"{self.info.path} has changed since the kept results were computed; they "
                "are not shown; propagate again"
            )
        if data.get("tracker") != fingerprint:
            raise UnusableResultsError(
                "the kept results were computed with another model or settings and are not "
                "shown (open the project with those to see them); propagate again"
            )
        return data.get("results")

    def _video(self) -> dict[str, Any]:
        """The video as the project file names it."""
        return {
            "path": str(os.path.realpath(self.info.path)),
            "frames": self.info.num_frames,
            "width": self.info.width,
            "height": self.info.height,
        }


def video_content_key(info: VideoInfo) -> list[Any]:
    """What tells that a video file or frames folder changed in place: the file's size and
    time, or each file's name, size and time."""
    path = Path(info.path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    key = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        key.append([file.name, stat.st_size, stat.st_mtime_ns])
    return key


class UnusableResultsError(InputError):
    """Results kept in a project folder that cannot be shown (see
    :meth:`ProjectFile.read_results`)."""


def _check_folders(directory: Path) -> None:
    """Raises NotADirectoryError when ``directory`` or its ``.studio`` is not a folder."""
    for place in (directory, directory / ".studio"):
        if os.path.lexists(place) and not place.is_dir():
            raise NotADirectoryError(f"{place} exists and is not a directory")


def _is_click_entry(entry: Any, prompts: dict[int, np.ndarray]) -> bool:
    """Whether a saved click entry is well formed and on a frame that has its prompt."""
    try:
        points_ok = all(len(p) == 3 for p in entry["points"])
        box = entry["box"]
        box_ok = box is None or len(box) == 4
        return points_ok and box_ok and int(entry["frame"]) in prompts and int(entry["object"]) > 0
    except (KeyError, TypeError, ValueError):
        return False


class ProjectLock:
    """One process's claim on a project directory, so that a second ``dinotrack studio`` on
    the same ``--out`` is refused instead of silently dropping the first one's changes.

    An advisory lock on ``.studio/lock`` (``flock`` on POSIX, ``msvcrt.locking`` on
    Windows): the system releases it when the process ends, however it ends, so a crash
    leaves no stale claim. The lock file holds the owner's process id, for the message.
    Directories made for the lock are removed on :meth:`release` when nothing else was
    saved in them. Use as a context manager, or :meth:`acquire` then :meth:`release`.

    Args:
        directory: The project (output) directory.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / _LOCK
        self._file: Any = None
        self._made: list[Path] = []

    def acquire(self) -> None:
        """Claim the directory.

        Raises:
            ProjectInUseError: Another process holds it.
            NotADirectoryError: ``directory`` (or its ``.studio``) is a file.
        """
        if self._file is not None:
            return
        _check_folders(self.directory)
        for place in (self.directory, self.path.parent):
            if not place.exists():
                place.mkdir()
                self._made.append(place)
        handle = open(self.path, "a+")  # noqa: SIM115 (kept open while the lock is held)
        try:
            _lock_file(handle)
        except _Unlockable as error:  # a file system without locks: go on, and say so
            warnings.warn(
                f"cannot lock {self.path} ({error}); a second studio on this folder would not "
                "be noticed",
                stacklevel=2,
            )
        except OSError:
            try:
                handle.seek(0)
                owner = handle.read().strip()
            except OSError:  # Windows: the owner's locked byte cannot be read
                owner = ""
            handle.close()
            self._remove_made()
            who = f" (process {owner})" if owner.isdigit() else ""
            raise ProjectInUseError(
                f"{self.directory} is open in another dinotrack studio{who}; stop that one "
                "first, or name another --out directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Give the directory up (nothing happens when it is not held)."""
        if self._file is None:
            return
        self._file.close()  # closing releases the lock
        self._file = None
        self._remove_made()

    def _remove_made(self) -> None:
        """Remove the directories :meth:`acquire` made, with the lock file, if nothing else
        went into them."""
        if not self._made:
            return
        if sorted(os.listdir(self.path.parent)) == [self.path.name]:
            self.path.unlink()
        for place in reversed(self._made):
            try:
                place.rmdir()
            except OSError:  # something was saved there: keep it, and the lock file with it
                break
        self._made = []

    def __enter__(self) -> ProjectLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class _Unlockable(Exception):
    """The file system cannot lock files (the lock is not held by anyone)."""


def _lock_file(handle: Any) -> None:
    """Lock the open file ``handle`` without waiting.

    Raises:
        OSError: It is locked by another process.
        _Unlockable: Files cannot be locked there.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise  # held by another process
        raise _Unlockable(error.strerror or str(error)) from None
