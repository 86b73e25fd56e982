"""Result formats beyond palette PNGs: COCO video RLE, MOTChallenge box tracks, per-object masks.

Each format is a writer with two methods (the ``FormatWriter`` protocol of the result writer):
``add(index, name, ids)`` receives every frame's ``[H, W]`` object ids as the tracker yields
them, and ``finish(directory)`` writes the format's files into the run's (temporary) output
directory before it is published. Writers stream: they keep only RLE strings and boxes per
object and frame (``objects`` writes its PNGs as the frames come, into a scratch folder).

Formats, and the files they write in a results directory:

- ``png``: one palette PNG per frame (``<name>.png``), written by the result writer itself.
- ``coco`` -> ``coco.json``: the YouTube-VIS / COCO video layout: one ``videos`` entry, one
  class-agnostic category, and per object one annotation (``id`` = the object id) with per
  frame a compressed RLE ``segmentations`` entry (pycocotools), its ``bboxes`` ``[x, y, w, h]``
  (pixels, 0-based, as COCO) and ``areas`` (pixel count); ``null`` in all three where the
  object has no pixel in that frame. ``videos[0].file_names`` name files that exist, relative
  to the folder that holds the input (see :func:`frame_files`): ``<folder>/<frame file>`` for
  a folder of frames (``bedroom/00012.jpg``, the YouTube-VIS layout), ``<video file>#<frame
  index>`` for a video file (``bedroom.mp4#00012``: frame 12 of ``bedroom.mp4``), and, when
  the input is not known (``export`` of another method's results), the exported PNG masks
  ``<results folder>/<name>.png`` relative to the results folder's parent.
- ``mot`` -> ``mot.txt``: MOTChallenge lines ``frame,id,x,y,w,h,conf,-1,-1,-1``: ``frame`` is
  the 1-based frame number in the video (frame index + 1), ``x, y`` the box's top-left pixel
  counted from 1 (MOTChallenge convention: COCO's ``x + 1, y + 1``), ``w, h`` its size in
  pixels, ``conf`` 1. A frame where an object has no pixel has no line for it (its track has
  a gap there); lines are ordered by frame, then id.
- ``objects`` -> ``objects/<id>/<name>.png``: one folder per object id, one 8-bit grayscale
  PNG per frame, 255 on the object and 0 elsewhere (all 0 where it is absent).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dinotrack import __version__
from dinotrack.errors import InputError

__all__ = [
    "COCO_FILE",
    "EXPORT_FORMATS",
    "FORMATS",
    "MOT_FILE",
    "OBJECTS_DIR",
    "CocoWriter",
    "MotWriter",
    "ObjectsWriter",
    "format_writers",
    "mask_box",
    "object_masks",
    "parse_formats",
]

FORMATS = ("png", "coco", "mot", "objects")
"""Names accepted by ``segment --save`` (``png``: palette PNGs, the default)."""

EXPORT_FORMATS = ("coco", "mot", "objects")
"""Formats :func:`format_writers` builds (``png`` is written by the result writer)."""

COCO_FILE = "coco.json"
MOT_FILE = "mot.txt"
OBJECTS_DIR = "objects"


def parse_formats(text: str, allowed: Sequence[str] = FORMATS) -> tuple[str, ...]:
    """The formats of a comma list such as ``"png,coco"``, in the order given.

    Raises:
        ValueError: An unknown or repeated name, or no name at all.
    """
    names = [name.strip() for name in text.split(",")]
    if not any(names):
        raise InputError(f"no output format given; choose from {', '.join(allowed)}")
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise InputError(f"unknown output format {unknown[0]!r}; choose from {', '.join(allowed)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"output format {repeated[0]!r} is given twice")
    return tuple(names)


def object_masks(ids: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(object id, [H, W] bool mask)`` for every non-zero id of a frame, in increasing id order.

    Raises:
        TypeError, ValueError: ``ids`` is not a 2-D integer array, or holds negative ids.
    """
    _check_ids(ids)
    present = np.unique(ids)
    if present.size and present[0] < 0:
        raise InputError(f"object ids must be >= 0 (0 = background), got {present[0]}")
    for object_id in present:
        if object_id != 0:
            yield int(object_id), ids == object_id


def _check_ids(ids: np.ndarray) -> None:
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"ids must be a numpy array, got {type(ids).__name__}")
    if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer) or ids.dtype == np.bool_):
        raise InputError(f"ids must be a 2-D [H, W] integer array, got {ids.dtype} {ids.shape}")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The extent ``(x, y, w, h)`` of a non-empty ``[H, W]`` bool mask: leftmost column, top
    row (0-based), and the number of columns and rows from there to the last object pixel."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return (
        int(cols[0]),
        int(rows[0]),
        int(cols[-1] - cols[0] + 1),
        int(rows[-1] - rows[0] + 1),
    )


class _FrameLog:
    """The frames a writer has seen, as they came: index, name, and a check of one frame size.

    Frames may come in any order (a backward or two-way run yields some frames in decreasing
    order); :meth:`in_order` gives the positions sorted by frame index, for writing.
    """

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.names: list[str] = []
        self.size: tuple[int, int] | None = None
        self._index_set: set[int] = set()

    def in_order(self) -> list[int]:
        """Positions (in the order frames were added) sorted by frame index."""
        return sorted(range(len(self.indices)), key=self.indices.__getitem__)

    def add(self, index: int, name: str, ids: np.ndarray) -> None:
        _check_ids(ids)
        size = (int(ids.shape[0]), int(ids.shape[1]))
        if self.size is not None and size != self.size:
            raise InputError(
                f"frame {index} ({name}) has shape {ids.shape}, but the first frame is "
                f"{self.size}: all masks of a video must have one size"
            )
        if index in self._index_set:
            raise InputError(f"frame index {index} ({name}) is given twice")
        if name in self.names:
            raise InputError(f"frame name {name!r} is given twice")
        self.size = size
        self.indices.append(int(index))
        self._index_set.add(int(index))
        self.names.append(name)


class CocoWriter:
    """``coco.json``: the results as one YouTube-VIS / COCO video (see the module docstring).

    Args:
        video_name: The video's name, recorded as ``videos[0].name``.
        frame_file: ``(frame index, output name) -> file name`` for ``file_names`` (see
            :func:`frame_files`); None: ``<video_name>/<name>.png``, the PNG masks.
    """

    def __init__(self, video_name: str, frame_file: Callable[[int, str], str] | None = None):
        self.video_name = video_name
        self.frame_file = frame_file or (lambda _index, name: f"{video_name}/{name}.png")
        self._frames = _FrameLog()
        # object id -> frame position -> (rle counts, bbox, area)
        self._objects: dict[int, dict[int, tuple[str, list[int], int]]] = {}

    def add(self, index: int, name: str, ids: np.ndarray) -> None:
        from pycocotools import mask as mask_utils

        self._frames.add(index, name, ids)
        position = len(self._frames.names) - 1
        for object_id, mask in object_masks(ids):
            rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
            entry = (rle["counts"].decode("ascii"), list(mask_box(mask)), int(mask.sum()))
            self._objects.setdefault(object_id, {})[position] = entry

    def finish(self, directory: Path) -> None:
        frames = self._frames
        height, width = frames.size or (0, 0)
        order = frames.in_order()
        annotations = []
        for object_id in sorted(self._objects):
            entries = [self._objects[object_id].get(p) for p in order]
            annotations.append(
                {
                    "id": object_id,
                    "video_id": 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "height": height,
                    "width": width,
                    "segmentations": [
                        None if e is None else {"size": [height, width], "counts": e[0]}
                        for e in entries
                    ],
                    "bboxes": [None if e is None else e[1] for e in entries],
                    "areas": [None if e is None else e[2] for e in entries],
                }
            )
        document = {
            "info": {"description": "dinotrack results", "dinotrack_version": __version__},
            "videos": [
                {
                    "id": 1,
                    "name": self.video_name,
                    "width": width,
                    "height": height,
                    "length": len(order),
                    "file_names": [
                        self.frame_file(frames.indices[p], frames.names[p]) for p in order
                    ],
                    "frame_indices": [frames.indices[p] for p in order],
                }
            ],
            "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
            "annotations": annotations,
        }
        (Path(directory) / COCO_FILE).write_text(json.dumps(document) + "\n")


class MotWriter:
    """``mot.txt``: one MOTChallenge box line per object and frame (see the module docstring)."""

    def __init__(self) -> None:
        self._frames = _FrameLog()
        self._lines: list[tuple[int, int, str]] = []  # (frame index, object id, line)

    def add(self, index: int, name: str, ids: np.ndarray) -> None:
        self._frames.add(index, name, ids)
        for object_id, mask in object_masks(ids):
            x, y, w, h = mask_box(mask)
            line = f"{index + 1},{object_id},{x + 1},{y + 1},{w},{h},1,-1,-1,-1\n"
            self._lines.append((index, object_id, line))

    def finish(self, directory: Path) -> None:
        """Write the lines sorted by frame, then object id, whatever order frames came in."""
        lines = sorted(self._lines)
        (Path(directory) / MOT_FILE).write_text("".join(line for _, _, line in lines))


class ObjectsWriter:
    """``objects/<id>/<name>.png``: a binary PNG per object and frame (0 or 255).

    Frames are written as they come into a scratch folder, which :meth:`finish` moves into the
    output directory; an object that appears late gets empty PNGs for the earlier frames.

    Args:
        scratch: Folder to create the PNGs in (best on the output's file system, e.g. inside
            the run's temporary directory); None: a new temporary folder, removed when the
            writer is garbage-collected without being finished.
    """

    def __init__(self, scratch: str | os.PathLike[str] | None = None) -> None:
        if scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="dinotrack-objects-"))
        else:
            self._scratch = Path(scratch)
            self._scratch.mkdir(parents=True)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._scratch, True)
        self._frames = _FrameLog()
        self._seen: set[int] = set()

    @property
    def scratch(self) -> Path:
        """The folder the PNGs are written into until :meth:`finish` moves it."""
        return self._scratch

    def add(self, index: int, name: str, ids: np.ndarray) -> None:
        self._frames.add(index, name, ids)
        for object_id, mask in object_masks(ids):
            folder = self._scratch / str(object_id)
            if object_id not in self._seen:
                folder.mkdir()
                self._seen.add(object_id)
                self._fill_absent(folder, self._frames.names[:-1])
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}.png")
        for object_id in self._seen:  # objects absent from this frame
            path = self._scratch / str(object_id) / f"{name}.png"
            if not path.exists():
                self._fill_absent(path.parent, [name])

    def _fill_absent(self, folder: Path, names: list[str]) -> None:
        if names:
            empty = Image.fromarray(np.zeros(self._frames.size, np.uint8))
            for name in names:
                empty.save(folder / f"{name}.png")

    def finish(self, directory: Path) -> None:
        shutil.move(self._scratch, Path(directory) / OBJECTS_DIR)
        self._cleanup.detach()

    def abort(self) -> None:
        """Remove the scratch folder (a run that fails calls this instead of :meth:`finish`)."""
        self._cleanup()


def frame_files(source: str | os.PathLike[str] | None) -> Callable[[int, str], str] | None:
    """How ``coco.json`` names frame ``index`` (output name ``name``) of the input `source`,
    relative to the folder that holds `source`: ``<folder>/<frame file>`` for a folder of
    frames (the file whose name without suffix is ``name``), ``<video file>#<index:05d>`` for a
    video file; None when `source` is None (unknown)."""
    if source is None:
        return None
    path = Path(os.path.abspath(source))
    if path.is_dir():
        files = {Path(name).stem: name for name in sorted(os.listdir(path), reverse=True)}
        return lambda _index, name: f"{path.name}/{files.get(name, name)}"
    return lambda index, _name: f"{path.name}#{index:05d}"


def format_writers(
    formats: Sequence[str],
    video_name: str,
    scratch: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> list[CocoWriter | MotWriter | ObjectsWriter]:
    """The writers of ``formats`` (``png`` is skipped: the result writer writes it).

    Args:
        formats: Names from :data:`FORMATS`.
        video_name: The video's name, for ``coco``.
        scratch: Where ``objects`` creates its PNGs until :meth:`ObjectsWriter.finish`.
        source: The input (video file or frames folder), for ``coco``'s ``file_names`` (see
            :func:`frame_files`); None: unknown.

    Raises:
        ValueError: An unknown format.
    """
    writers: list[CocoWriter | MotWriter | ObjectsWriter] = []
    for name in formats:
        if name == "coco":
            writers.append(CocoWriter(video_name, frame_files(source)))
        elif name == "mot":
            writers.append(MotWriter())
        elif name == "objects":
            writers.append(ObjectsWriter(scratch))
        elif name != "png":
            raise InputError(f"unknown output format {name!r}; choose from {', '.join(FORMATS)}")
    return writers
