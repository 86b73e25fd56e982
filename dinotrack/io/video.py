"""Reading video frames: the public reading API of the toolkit.

Input is a video file (mp4, mov, mkv, avi, webm, m4v, mpg, mpeg) or a directory of frames (jpg,
jpeg, png); single images and random access to a video's frames (pretraining) are read here too.
Frames are decoded one at a time and streamed, never collected into one array, so memory use
does not grow with video length. Every frame comes out as a C-contiguous `[H, W, 3]` uint8 RGB
array.

Backends:

- "frames": a directory of images, read with PIL in natural order ("frame2" before "frame10").
- "decord": video files through `decord.VideoReader` (optional; imported only when used).
- "pyav": video files through PyAV (FFmpeg), always available.

"auto" picks "frames" for a directory, else "decord" when it imports, else "pyav"; and it reads
a file with PyAV when decord cannot open it or decode its first frame, or (from that frame on)
when decord fails to decode a later frame. Display rotation metadata (phone videos) is ignored
by both video backends: frames come out as stored.

Damaged files. A file that cannot be opened raises `InputError("cannot read video <path>:
<reason>")`, and a frame that cannot be decoded raises `InputError("cannot decode frame <i> of
<path>: <reason>")` while iterating. A cut-off file usually declares more frames than it holds:
its frames are read up to the last one that decodes, and then the iterator ends with a
`UserWarning` saying how many of the declared frames there were, instead of raising. (PyAV's
decoder ends such a stream without an error; decord raises at the cut, which "auto" hands over to
PyAV and "decord" turns into the ValueError.) FFmpeg's and decord's own log lines are silenced:
everything they report reaches the caller through these exceptions and warnings.

Each library's specifics live in :mod:`dinotrack.io.decoders`; mask overlay videos are written by
:mod:`dinotrack.results.overlay`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dinotrack.errors import InputError
from dinotrack.io import decoders
from dinotrack.io.background import BackgroundWorker, read_in_background
from dinotrack.io.decoders import FRAMES_DIR_FPS, VideoInfo
from dinotrack.io.images import check_input_path, image_to_rgb, open_image

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
"""File name suffixes read as videos (case-insensitive), by every command."""


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File name suffixes read as single images (case-insensitive): ``dinotrack attention``'s
image input and pretraining's images."""


FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
"""File name suffixes read as frames inside a frames directory (case-insensitive)."""


BACKENDS = ("frames", "decord", "pyav")
"""All backend names; `available_backends()` tells which work here."""


def available_backends() -> list[str]:
    """Lists the backends that work in this environment.

    Returns:
        A subset of `["frames", "decord", "pyav"]`, in that order.
    """
    backends = ["frames"]
    if decoders.import_decord() is not None:
        backends.append("decord")
    try:
        decoders.import_av()
        backends.append("pyav")
    except ValueError:
        pass
    return backends


def probe_video(path: str | os.PathLike[str], backend: str = "auto") -> VideoInfo:
    """Reads a video's frame count, frame rate and size without decoding it all.

    Args:
        path: Video file or directory of frames.
        backend: "auto", "frames", "decord" or "pyav" (see the module docstring).

    Returns:
        The video's description.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the backend is unknown, unavailable or unsuited to `path`, the file is
            not a readable video, or the directory holds no frames.
    """
    info, handle = _open(path, backend)
    decoders.close_handle(handle)
    return info


def iter_frames(
    path: str | os.PathLike[str],
    backend: str = "auto",
    start: int = 0,
    stop: int | None = None,
) -> Iterator[np.ndarray]:
    """Streams frames `start, start + 1, ..., stop - 1` of a video, decoding one at a time.

    The video is opened (and its errors raised) when this is called; frames are decoded as
    the iterator is advanced. `stop` past the end is clipped to the end. A `start` after frame
    0 is reached by a seek whose frames are checked against their timestamps, and where the
    file's timestamps cannot be trusted, by decoding from frame 0: the frames are always the
    ones a sequential read gives at those numbers (decord's own seeks are never used). A file
    that ends before `stop` (a cut-off file) ends the iterator early with a `UserWarning`.

    Args:
        path: Video file or directory of frames.
        backend: "auto", "frames", "decord" or "pyav" (see the module docstring).
        start: Index of the first frame to yield, >= 0.
        stop: Index one past the last frame to yield, >= start; None for the end.

    Returns:
        An iterator of C-contiguous `[H, W, 3]` uint8 RGB frames, in order.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: As for `probe_video`; also for a bad `start`/`stop`, and (while
            iterating) for a frame that cannot be decoded or whose size differs from the first.
    """
    _check_range(start, stop)
    info, handle = _open(path, backend)
    return _iter_open(info, handle, start, stop, backend == "auto")


def _iter_open(
    info: VideoInfo, handle: Any, start: int, stop: int | None, fallback: bool
) -> Iterator[np.ndarray]:
    """Iterates over a video `_open` opened; with `fallback`, a decord failure continues with
    PyAV."""
    stop = info.num_frames if stop is None else min(stop, info.num_frames)
    if info.backend == "frames":
        return _iter_frame_files(handle, info, start, stop)
    if info.backend == "decord":
        return decoders.iter_decord(handle, info, start, stop, fallback)
    return decoders.iter_pyav_exact(info, start, stop, handle)


def _reopen(info: VideoInfo, start: int, stop: int | None, fallback: bool) -> Iterator[np.ndarray]:
    """Opens the video `info` describes again, with the backend that read it, and iterates."""
    info, handle = _open(info.path, info.backend)
    return _iter_open(info, handle, start, stop, fallback)


def _reopen_reversed(
    info: VideoInfo, start: int, stop: int | None, fallback: bool, chunk: int
) -> Iterator[np.ndarray]:
    """Frames `stop - 1` down to `start`, read in chunks of `chunk` frames from the end: each
    chunk is read forward from its first frame (a seek) and yielded reversed, so memory holds
    one chunk, whatever the video's length."""
    stop = info.num_frames if stop is None else min(stop, info.num_frames)
    for end in range(stop, start, -chunk):
        begin = max(start, end - chunk)
        frames = list(_reopen(info, begin, end, fallback))
        if len(frames) != end - begin:  # a cut-off file: the indices would no longer match
            raise InputError(
                f"cannot read {info.path} backwards: frame {begin + len(frames)} does not "
                f"decode although the file declares {info.num_frames} frames"
            )
        yield from reversed(frames)


def _check_prefetch(prefetch: int) -> None:
    if not isinstance(prefetch, int) or prefetch < 1:
        raise InputError(f"prefetch must be an integer >= 1, got {prefetch!r}")


def _check_range(start: int, stop: int | None) -> None:
    if not isinstance(start, int) or start < 0:
        raise InputError(f"start must be an integer >= 0, got {start!r}")
    if stop is not None and (not isinstance(stop, int) or stop < start):
        raise InputError(f"stop must be None or an integer >= start ({start}), got {stop!r}")


def _open(path: str | os.PathLike[str], backend: str) -> tuple[VideoInfo, Any]:
    """Opens a video, returning its info and an open handle for the backend."""
    path = Path(path)
    if backend != "auto" and backend not in BACKENDS:
        raise InputError(f"unknown video backend {backend!r}; choose 'auto' or one of {BACKENDS}")
    check_input_path(path, "video", directory_ok=True)  # no FIFO (it would block forever)
    if path.is_dir():
        if backend not in ("auto", "frames"):
            raise InputError(
                f"{path} is a directory of frames; read it with backend 'frames' or 'auto', "
                f"not {backend!r}"
            )
        return _open_frames_dir(path)
    if backend == "frames":
        raise InputError(f"backend 'frames' reads a directory of frames, but {path} is a file")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(
            f"cannot read video {path}: unsupported extension {path.suffix!r}; give a video "
            f"({', '.join(VIDEO_SUFFIXES)}) or a directory of {'/'.join(FRAME_SUFFIXES)} frames"
        )
    decord = decoders.import_decord() if backend in ("auto", "decord") else None
    if backend == "decord" and decord is None:
        raise InputError(
            "video backend 'decord' is not installed here; install decord or use backend 'pyav'"
        )
    if decord is None:
        return decoders.open_pyav(path)
    av = decoders.import_av_if_installed()
    if av is not None:
        # When FFmpeg cannot open a file, decord prints a line to stderr that no setting
        # silences and raises an error without the reason; PyAV opening it first does neither.
        decoders.open_container(av, path).close()
    try:
        return decoders.open_decord(decord, path)
    except ValueError:
        if backend == "decord" or av is None:
            raise
    return decoders.open_pyav(path)


# Frames directories.


def natural_key(name: str) -> tuple[list[str | int], str]:
    """Sort key of frame file names in natural order: ``frame2`` before ``frame10``."""
    parts = re.split(r"([0-9]+)", name)
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(parts)], name


def _open_frames_dir(path: Path) -> tuple[VideoInfo, list[Path]]:
    files = [
        entry
        for entry in path.iterdir()
        if entry.suffix.lower() in FRAME_SUFFIXES
        and not entry.name.startswith(".")
        and entry.is_file()
    ]
    if not files:
        raise InputError(
            f"directory {path} holds no frames; expected {'/'.join(FRAME_SUFFIXES)} images"
        )
    files.sort(key=lambda entry: natural_key(entry.name))
    names = tuple(entry.stem + ".png" for entry in files)
    if len(set(names)) != len(names):
        seen: set[str] = set()
        clash = next(name for name in names if name in seen or seen.add(name))
        raise InputError(
            f"directory {path} holds two frames with the stem {Path(clash).stem!r} (e.g. a .jpg "
            "and a .png); their masks would share one file name. Keep one of them"
        )
    with open_image(files[0], "frame") as first:
        width, height = first.size
    info = VideoInfo(
        path=path,
        num_frames=len(files),
        fps=FRAMES_DIR_FPS,
        height=height,
        width=width,
        frame_names=names,
        backend="frames",
    )
    return info, files


def _iter_frame_files(
    files: list[Path], info: VideoInfo, start: int, stop: int
) -> Iterator[np.ndarray]:
    return _iter_image_files(files[start:stop], (info.height, info.width), files[0])


def _iter_image_files(
    files: Sequence[Path], size: tuple[int, int] | None = None, reference: Path | None = None
) -> Iterator[np.ndarray]:
    """Decodes `files` in order; every frame must be `size` (H, W), which defaults to the
    first file's; `reference` is the file named in the error when one is not."""
    for file in files:
        frame = read_image(file, "frame")
        if size is None:
            size, reference = frame.shape[:2], file
        elif frame.shape[:2] != size:
            raise InputError(
                f"frame {file} is {frame.shape[1]}x{frame.shape[0]} but frame {reference} is "
                f"{size[1]}x{size[0]}; all frames must have one size"
            )
        yield frame


class FrameReader:
    """Iterates over a video's frames while a background thread decodes the next ones.

    Decoding runs in a daemon thread that stays at most `prefetch` frames ahead, so decoding
    overlaps with the consumer's work and memory stays bounded. An exception raised while
    decoding is re-raised, unchanged, in the consuming thread (a cut-off video's warning comes
    from the decoding thread). Leaving the loop early, closing the reader or dropping it stops
    the thread.

    Each `iter(reader)` starts a fresh pass over the frames. Example:

        with FrameReader("clip.mp4") as reader:
            print(reader.info.num_frames)
            for frame in reader:  # [H, W, 3] uint8 RGB
                ...

    Attributes:
        info: The video's description, read when the reader is created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        backend: str = "auto",
        prefetch: int = 8,
        start: int = 0,
        stop: int | None = None,
        reverse: bool = False,
        chunk: int = 16,
    ) -> None:
        """Opens the video and checks the arguments; decoding starts on iteration.

        Args:
            path: Video file or directory of frames.
            backend: "auto", "frames", "decord" or "pyav".
            prefetch: How many decoded frames may wait in the queue, >= 1.
            start: Index of the first frame to yield, >= 0.
            stop: Index one past the last frame to yield, or None for the end.
            reverse: Yield the frames from `stop - 1` down to `start`, streaming: they are
                decoded in chunks of `chunk` frames from the end, each read forward from its
                first frame (a seek) and reversed, so memory stays flat in the video's length.
                A file that ends before the frames it declares raises `ValueError` then.
            chunk: Frames per chunk of a reverse read, >= 1.

        Raises:
            FileNotFoundError: If `path` does not exist.
            ValueError: As for `probe_video`, or for bad `prefetch`, `start`, `stop` or
                `chunk`.
        """
        self._workers: list[BackgroundWorker] = []
        self._closed = False
        _check_prefetch(prefetch)
        _check_range(start, stop)
        self.info = probe_video(path, backend)
        self._prefetch = prefetch
        if reverse:
            if not isinstance(chunk, int) or chunk < 1:
                raise InputError(f"chunk must be an integer >= 1, got {chunk!r}")
            self._produce = partial(
                _reopen_reversed, self.info, start, stop, backend == "auto", chunk
            )
        else:
            self._produce = partial(_reopen, self.info, start, stop, backend == "auto")

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._closed:
            raise RuntimeError("this FrameReader is closed; create a new one to read again")
        worker = BackgroundWorker(self._prefetch, self._produce)
        self._workers.append(worker)
        return self._consume(worker)

    def _consume(self, worker: BackgroundWorker) -> Iterator[np.ndarray]:
        try:
            yield from worker
        finally:
            worker.stop()
            if worker in self._workers:
                self._workers.remove(worker)

    def close(self) -> None:
        """Stops all decoding threads. Idempotent."""
        self._closed = True
        while self._workers:
            self._workers.pop().stop()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def read_image_files(
    paths: Sequence[str | os.PathLike[str]], prefetch: int = 8
) -> Iterator[np.ndarray]:
    """Decodes image files in the given order in a background thread, as `FrameReader` does
    for a video: at most `prefetch` frames ahead, errors re-raised here, the thread stopped
    when the iterator is closed or dropped.

    Args:
        paths: Image files (any format PIL reads), all of one size.
        prefetch: How many decoded frames may wait in the queue, >= 1.

    Yields:
        C-contiguous `[H, W, 3]` uint8 RGB frames.

    Raises:
        ValueError: (while iterating) A file that cannot be decoded or whose size differs
            from the first one's.
    """
    _check_prefetch(prefetch)
    files = [Path(path) for path in paths]
    return read_in_background(prefetch, partial(_iter_image_files, files))


# Image files.


def read_image(path: str | os.PathLike[str], what: str = "image") -> np.ndarray:
    """Reads an image file as a writable, C-contiguous ``[H, W, 3]`` uint8 RGB array (the one
    image reader: frames of a directory, ``dinotrack attention``'s images, training images).

    Args:
        path: The image file.
        what: How the error names it ("image", "frame").

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a readable image ("cannot read <what> <path>: <reason>"),
            not a regular file (a FIFO), or too large to decode safely.
    """
    with open_image(path, what) as image:
        return image_to_rgb(image)  # 16-bit images scaled to 8 bits, not clipped to white
