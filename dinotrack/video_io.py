"""Reading video frames and writing mask overlay videos.

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

Damaged files. A file that cannot be opened raises `ValueError("cannot read video <path>:
<reason>")`, and a frame that cannot be decoded raises `ValueError("cannot decode frame <i> of
<path>: <reason>")` while iterating. A cut-off file usually declares more frames than it holds:
its frames are read up to the last one that decodes, and then the iterator ends with a
`UserWarning` saying how many of the declared frames there were, instead of raising. (PyAV's
decoder ends such a stream without an error; decord raises at the cut, which "auto" hands over to
PyAV and "decord" turns into the ValueError.) FFmpeg's and decord's own log lines are silenced:
everything they report reaches the caller through these exceptions and warnings.
"""

from __future__ import annotations

import math
import numbers
import os
import queue
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dinotrack.atomic_files import temporary_sibling
from dinotrack.image_files import check_input_path, image_to_rgb, open_image
from dinotrack.masks import as_palette, blend_overlay

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
"""File name suffixes read as videos (case-insensitive), by every command."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File name suffixes read as single images (case-insensitive): ``dinotrack attention``'s
image input and pretraining's images."""

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
"""File name suffixes read as frames inside a frames directory (case-insensitive)."""

BACKENDS = ("frames", "decord", "pyav")
"""All backend names; `available_backends()` tells which work here."""

FRAMES_DIR_FPS = 24.0
"""Frame rate reported for a directory of frames, which has none of its own."""

_OVERLAY_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video before decoding it.

    Attributes:
        path: The video file or frames directory.
        num_frames: Number of frames. Exact for a frames directory. For a video file, the
            frame count the container declares, or, when it declares none (mkv, webm), the
            number of video packets found by demuxing the file (without decoding). Iteration
            never yields more frames than this, and yields fewer only if the decoder produces
            fewer (a cut-off file; it warns then).
        fps: Frames per second; `FRAMES_DIR_FPS` (24) for a frames directory.
        height: Frame height in pixels.
        width: Frame width in pixels.
        frame_names: One output file name per frame, for the masks written for it: the input
            stem plus ".png" for a frames directory ("00012.jpg" -> "00012.png"), else the
            zero-padded frame index ("00000.png", "00001.png", ...).
        backend: The backend that reads it: "frames", "decord" or "pyav".
    """

    path: Path
    num_frames: int
    fps: float
    height: int
    width: int
    frame_names: tuple[str, ...] = field(repr=False)
    backend: str


def available_backends() -> list[str]:
    """Lists the backends that work in this environment.

    Returns:
        A subset of `["frames", "decord", "pyav"]`, in that order.
    """
    backends = ["frames"]
    if _import_decord() is not None:
        backends.append("decord")
    try:
        _import_av()
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
    _close(handle)
    return info


def iter_frames(
    path: str | os.PathLike[str],
    backend: str = "auto",
    start: int = 0,
    stop: int | None = None,
) -> Iterator[np.ndarray]:
    """Streams frames `start, start + 1, ..., stop - 1` of a video, decoding one at a time.

    The video is opened (and its errors raised) when this is called; frames are decoded as
    the iterator is advanced. `stop` past the end is clipped to the end. With "pyav" the
    frames before `start` are decoded and dropped; "decord" seeks to them. A file that ends
    before `stop` (a cut-off file) ends the iterator early with a `UserWarning`.

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
        return _iter_decord(handle, info, start, stop, fallback)
    return _iter_pyav(handle, info, start, stop)


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
            raise ValueError(
                f"cannot read {info.path} backwards: frame {begin + len(frames)} does not "
                f"decode although the file declares {info.num_frames} frames"
            )
        yield from reversed(frames)


def _check_prefetch(prefetch: int) -> None:
    if not isinstance(prefetch, int) or prefetch < 1:
        raise ValueError(f"prefetch must be an integer >= 1, got {prefetch!r}")


def _check_range(start: int, stop: int | None) -> None:
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    if stop is not None and (not isinstance(stop, int) or stop < start):
        raise ValueError(f"stop must be None or an integer >= start ({start}), got {stop!r}")


def _import_decord() -> Any:
    """decord, imported on first use, or None where it is not installed.

    The log of decord's own copy of FFmpeg (lines like "[h264 @ 0x...] Invalid NAL unit size")
    is switched off; decord's failures reach us as exceptions.
    """
    try:
        import decord
    except (ImportError, OSError):
        return None
    decord_logging = getattr(decord, "logging", None)
    if decord_logging is not None and hasattr(decord_logging, "set_level"):
        decord_logging.set_level(decord_logging.QUIET)
    return decord


def _import_av() -> Any:
    """PyAV, imported on first use (reading frame folders and PNGs does not need it).

    PyAV drops FFmpeg's log by default (level None); this re-asserts that, in case FFmpeg's own
    printing callback was restored, unless the application chose a level for PyAV's "libav"
    Python logger, which it keeps.
    """
    try:
        import av
    except ImportError as error:
        raise ValueError(
            f"PyAV is not installed here ({error}); pip install av to read or write videos"
        ) from error
    if av.logging.get_level() is None:
        av.logging.set_level(None)
    return av


def _import_av_if_installed() -> Any:
    try:
        return _import_av()
    except ValueError:
        return None


_LOG_PREFIX = re.compile(r"\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ")
"""The "[02:33:37] src/video/video_reader.cc:486: " that decord puts before its messages."""

_CHECK_FAILED = re.compile(r"Check failed: .* \(-?\d+ vs\. -?\d+\) (?P<message>.+)")
"""A failed check of decord's: "Check failed: <C++ expression> (-22 vs. 0) <message>"."""


def _reason(error: BaseException) -> str:
    """Why a video library failed, in one line, without its source locations."""
    strerror = getattr(error, "strerror", None)  # PyAV's errors: errno, strerror, filename
    text = strerror if isinstance(strerror, str) and strerror else str(error)
    lines = [line.strip() for line in _LOG_PREFIX.sub("", text).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Error reading "):  # decord.VideoReader's whole message
        return "decord cannot open it (a damaged file, or not a video)"
    check = _CHECK_FAILED.fullmatch(lines[0])
    return check["message"] if check else lines[0]


def _warn_cut_off(info: VideoInfo, end: int) -> None:
    warnings.warn(
        f"video {info.path} ends after {end} of the {info.num_frames} frames it declares; "
        "it is probably cut off",
        stacklevel=3,
    )


def _open(path: str | os.PathLike[str], backend: str) -> tuple[VideoInfo, Any]:
    """Opens a video, returning its info and an open handle for the backend."""
    path = Path(path)
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose 'auto' or one of {BACKENDS}")
    check_input_path(path, "video", directory_ok=True)  # no FIFO (it would block forever)
    if path.is_dir():
        if backend not in ("auto", "frames"):
            raise ValueError(
                f"{path} is a directory of frames; read it with backend 'frames' or 'auto', "
                f"not {backend!r}"
            )
        return _open_frames_dir(path)
    if backend == "frames":
        raise ValueError(f"backend 'frames' reads a directory of frames, but {path} is a file")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(
            f"cannot read video {path}: unsupported extension {path.suffix!r}; give a video "
            f"({', '.join(VIDEO_SUFFIXES)}) or a directory of {'/'.join(FRAME_SUFFIXES)} frames"
        )
    decord = _import_decord() if backend in ("auto", "decord") else None
    if backend == "decord" and decord is None:
        raise ValueError(
            "video backend 'decord' is not installed here; install decord or use backend 'pyav'"
        )
    if decord is None:
        return _open_pyav(path)
    av = _import_av_if_installed()
    if av is not None:
        # When FFmpeg cannot open a file, decord prints a line to stderr that no setting
        # silences and raises an error without the reason; PyAV opening it first does neither.
        _open_container(av, path).close()
    try:
        return _open_decord(decord, path)
    except ValueError:
        if backend == "decord" or av is None:
            raise
    return _open_pyav(path)


def _video_frame_names(num_frames: int) -> tuple[str, ...]:
    digits = max(5, len(str(num_frames - 1)))
    return tuple(f"{index:0{digits}d}.png" for index in range(num_frames))


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
        raise ValueError(
            f"directory {path} holds no frames; expected {'/'.join(FRAME_SUFFIXES)} images"
        )
    files.sort(key=lambda entry: natural_key(entry.name))
    names = tuple(entry.stem + ".png" for entry in files)
    if len(set(names)) != len(names):
        seen: set[str] = set()
        clash = next(name for name in names if name in seen or seen.add(name))
        raise ValueError(
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
            raise ValueError(
                f"frame {file} is {frame.shape[1]}x{frame.shape[0]} but frame {reference} is "
                f"{size[1]}x{size[0]}; all frames must have one size"
            )
        yield frame


# decord.


def _open_decord(decord: Any, path: Path) -> tuple[VideoInfo, Any]:
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        num_frames = len(reader)
        if num_frames == 0:
            raise ValueError("no frames")
        first = reader[0].shape
        if len(first) != 3 or first[2] != 3:  # decord garbles tiny videos (2x2 gives 48 channels)
            raise ValueError(f"decord decodes frame 0 as {first}, not as RGB")
        height, width = first[:2]
        fps = float(reader.get_avg_fps())
        reader.seek(0)
    except (decord.DECORDError, RuntimeError, ValueError) as error:  # DECORDError: Exception
        raise ValueError(f"cannot read video {path}: {_reason(error)}") from error
    info = VideoInfo(
        path=path,
        num_frames=num_frames,
        fps=fps if math.isfinite(fps) and fps > 0 else FRAMES_DIR_FPS,
        height=int(height),
        width=int(width),
        frame_names=_video_frame_names(num_frames),
        backend="decord",
    )
    return info, reader


def _iter_decord(
    reader: Any, info: VideoInfo, start: int, stop: int, fallback: bool
) -> Iterator[np.ndarray]:
    """Frames `start` to `stop - 1` from decord; with `fallback`, PyAV decodes the file again
    from the start and yields on from the frame decord failed at, so the frames stay in order
    with none repeated or skipped."""
    decord = _import_decord()
    index = start
    try:
        if start < stop and start > 0:
            reader.seek_accurate(start)
        while index < stop:
            try:
                frame = reader.next().asnumpy()
            except StopIteration:
                _warn_cut_off(info, index)
                return
            yield _checked_size(frame, info, index)
            index += 1
        return
    except (decord.DECORDError, RuntimeError) as error:
        failure = error
    av = _import_av_if_installed() if fallback else None
    error = ValueError(f"cannot decode frame {index} of {info.path}: {_reason(failure)}")
    if av is None:
        raise error from failure
    try:
        container = _open_container(av, info.path)
    except ValueError:
        raise error from failure
    yield from _iter_pyav(container, info, index, stop)


def _checked_size(frame: np.ndarray, info: VideoInfo, index: int) -> np.ndarray:
    if frame.shape != (info.height, info.width, 3):
        raise ValueError(
            f"cannot read video {info.path}: frame {index} has shape {tuple(frame.shape)}, not "
            f"({info.height}, {info.width}, 3); videos that change size are not supported"
        )
    return np.ascontiguousarray(frame)


# PyAV.


def _open_container(av: Any, path: Path) -> Any:
    """`av.open(path)`, checked to hold a video stream."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read video {path}: {_reason(error)}") from error
    if not container.streams.video:
        container.close()
        raise ValueError(f"cannot read video {path}: it has no video stream")
    return container


def _open_pyav(path: Path) -> tuple[VideoInfo, Any]:
    av = _import_av()
    container = _open_container(av, path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else FRAMES_DIR_FPS
        num_frames = stream.frames or _count_packets(path)
        width, height = stream.codec_context.width, stream.codec_context.height
        if num_frames == 0 or width == 0 or height == 0:
            raise ValueError(f"cannot read video {path}: its video stream is empty")
    except (av.error.FFmpegError, OSError) as error:
        container.close()
        raise ValueError(f"cannot read video {path}: {_reason(error)}") from error
    except ValueError:
        container.close()
        raise
    info = VideoInfo(
        path=path,
        num_frames=num_frames,
        fps=fps,
        height=height,
        width=width,
        frame_names=_video_frame_names(num_frames),
        backend="pyav",
    )
    return info, container


def _count_packets(path: Path) -> int:
    """Counts the video packets (one per frame) of a container that declares no frame count."""
    av = _import_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def _iter_pyav(container: Any, info: VideoInfo, start: int, stop: int) -> Iterator[np.ndarray]:
    av = _import_av()
    index = 0
    try:
        if start >= stop:
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if index >= start:
                yield _checked_size(frame.to_ndarray(format="rgb24"), info, index)
            index += 1
            if index >= stop:
                return
        _warn_cut_off(info, index)
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot decode frame {index} of {info.path}: {_reason(error)}") from error
    finally:
        container.close()


def _close(handle: Any) -> None:
    av = sys.modules.get("av")  # a PyAV handle exists only if PyAV was imported
    if av is not None and isinstance(handle, av.container.InputContainer):
        handle.close()


# Background decoding.


_END = object()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def _put(items: queue.Queue, item: Any, stopping: threading.Event) -> bool:
    while not stopping.is_set():
        try:
            items.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _decode_into(
    items: queue.Queue, stopping: threading.Event, produce: Callable[[], Iterator[Any]]
) -> None:
    frames = None
    try:
        frames = produce()
        for frame in frames:
            if not _put(items, frame, stopping):
                return
    except BaseException as error:  # handed over to the consuming thread
        _put(items, _Failure(error), stopping)
        return
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    _put(items, _END, stopping)


class _Worker:
    """One decoding thread filling a bounded queue with the items of `produce()`."""

    def __init__(self, prefetch: int, produce: Callable[[], Iterator[Any]]) -> None:
        self.items: queue.Queue = queue.Queue(maxsize=prefetch)
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=_decode_into,
            args=(self.items, self.stopping, produce),
            name="dinotrack-frame-reader",
            daemon=True,
        )
        self.thread.start()

    def __iter__(self) -> Iterator[Any]:
        """The items in order; an error of the decoding thread is raised here, unchanged."""
        while True:
            item = self._get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def _get(self) -> Any:
        while True:
            try:
                return self.items.get(timeout=0.1)
            except queue.Empty:
                if not self.thread.is_alive() and self.items.empty():
                    raise RuntimeError("the frame decoding thread ended unexpectedly") from None

    def stop(self) -> None:
        self.stopping.set()
        while True:
            try:
                self.items.get_nowait()
            except queue.Empty:
                break
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=10.0)


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
        self._workers: list[_Worker] = []
        self._closed = False
        _check_prefetch(prefetch)
        _check_range(start, stop)
        self.info = probe_video(path, backend)
        self._prefetch = prefetch
        if reverse:
            if not isinstance(chunk, int) or chunk < 1:
                raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
            self._produce = partial(
                _reopen_reversed, self.info, start, stop, backend == "auto", chunk
            )
        else:
            self._produce = partial(_reopen, self.info, start, stop, backend == "auto")

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._closed:
            raise RuntimeError("this FrameReader is closed; create a new one to read again")
        worker = _Worker(self._prefetch, self._produce)
        self._workers.append(worker)
        return self._consume(worker)

    def _consume(self, worker: _Worker) -> Iterator[np.ndarray]:
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
    return _read_in_background(prefetch, partial(_iter_image_files, files))


def _read_in_background(prefetch: int, produce: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    worker = _Worker(prefetch, produce)
    try:
        yield from worker
    finally:
        worker.stop()


# Overlay video writing.


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


# Random access to the frames of a video file (pretraining's sampling).

_SEEK_GAP = 48
"""PyAV seeks again instead of decoding forward when the next wanted frame is this far ahead."""


def video_backends(name: str) -> tuple[str, ...]:
    """The video backends to try in turn for ``name``: "auto" is decord (when it is installed)
    then PyAV, so that a file decord cannot read is read with PyAV; "decord" and "pyav" are
    themselves alone.

    Raises:
        ValueError: Another name.
    """
    if name == "auto":
        return ("pyav",) if _import_decord() is None else ("decord", "pyav")
    if name not in ("decord", "pyav"):
        raise ValueError(f"unknown video backend {name!r}; use auto, decord or pyav")
    return (name,)


def _first_working(backend: str, read: Callable[[str], Any], failure: str) -> Any:
    """``read(name)`` with each of :func:`video_backends` in turn until one succeeds; when
    none does, a one-line ValueError of ``failure`` and each backend's reason."""
    reasons = {}
    for name in video_backends(backend):
        try:
            return read(name)
        except Exception as exc:  # the libraries raise their own exception types
            reasons[name] = _reason(exc)
    if len(set(reasons.values())) == 1:  # one line, said once when every backend agrees
        raise ValueError(f"{failure}: {next(iter(reasons.values()))}")
    raise ValueError(f"{failure}: {'; '.join(f'{k}: {v}' for k, v in reasons.items())}")


def count_frames(path: str | os.PathLike, backend: str = "auto") -> int:
    """Number of frames of a video: decord's count, or the count PyAV's container declares
    (else its video packets).

    Raises:
        ValueError: The file cannot be opened as a video (by any of the backends).
    """
    return _first_working(backend, lambda name: _count(name, path), f"cannot read video {path}")


def _count(backend: str, path: str | os.PathLike) -> int:
    if backend == "decord":
        return len(_decord_reader(path))
    av = _import_av()

    with av.open(str(path)) as container:
        stream = _video_stream(container)
        if stream.frames > 0:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def read_video_frames(
    path: str | os.PathLike, indices: Sequence[int], backend: str = "auto"
) -> list[np.ndarray]:
    """Decode the frames at ``indices`` (any order, repeats allowed) of one video: random
    access, for sampling training frames (:func:`iter_frames` streams a whole range).

    Each frame is decoded once, in increasing order, without reading the whole video into
    memory: decord reads them as one batch, PyAV seeks to the keyframe before a far frame
    and decodes forward. An index past the last decodable frame yields the last frame. With
    "auto", a video that decord fails on is read with PyAV.

    Returns:
        One uint8 ``[H, W, 3]`` RGB array per index, in the order of ``indices``.

    Raises:
        ValueError: A negative index, or no backend could read the frames.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return []
    if wanted[0] < 0:
        raise ValueError(f"negative frame index {wanted[0]} for {path}")
    readers = {"decord": _read_decord, "pyav": _read_pyav}
    failure = f"cannot decode frames {wanted} of {path}"
    frames = _first_working(backend, lambda name: readers[name](path, wanted), failure)
    return [frames[int(i)] for i in indices]


def _video_stream(container: Any) -> Any:
    """The first video stream of a PyAV container."""
    if not container.streams.video:
        raise ValueError("it has no video stream")
    return container.streams.video[0]


def _decord_reader(path: str | os.PathLike) -> Any:
    """A one-thread ``decord.VideoReader`` for random access, once PyAV (where installed) has
    opened the file: when FFmpeg cannot open a file, decord prints a line to stderr that no
    setting silences, while PyAV raises the reason (as in :func:`_open`).

    Raises:
        ValueError: The file holds no video stream.
        av.error.FFmpegError: FFmpeg cannot open it.
    """
    av = _import_av_if_installed()
    if av is not None:
        with av.open(str(path)) as container:
            _video_stream(container)
    return _import_decord().VideoReader(str(path), num_threads=1)


def _read_decord(path: str | os.PathLike, wanted: list[int]) -> dict[int, np.ndarray]:
    reader = _decord_reader(path)
    last = len(reader) - 1
    batch = reader.get_batch([min(i, last) for i in wanted]).asnumpy()
    return {index: batch[k] for k, index in enumerate(wanted)}


def _read_pyav(path: str | os.PathLike, wanted: list[int]) -> dict[int, np.ndarray]:
    av = _import_av()
    out: dict[int, np.ndarray] = {}
    pending = list(wanted)
    with av.open(str(path)) as container:
        stream = _video_stream(container)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        time_base = float(stream.time_base) if stream.time_base else 0.0
        start = stream.start_time or 0
        seekable = fps > 0 and time_base > 0
        frames = None
        position = -1  # index of the last decoded frame
        sought = -1  # the target of the last seek
        last = None
        while pending:
            target = pending[0]
            far = seekable and target - position > _SEEK_GAP and sought != target
            if frames is None or far:
                if seekable and target > 0:
                    # Lands on the keyframe at or before the target's timestamp.
                    container.seek(start + int(target / fps / time_base), stream=stream)
                    sought = target
                frames = container.decode(stream)
            frame = next(frames, None)
            if frame is None:  # end of stream: repeat the last frame
                if last is None:
                    raise ValueError(f"no frame could be decoded from {path}")
                image = last.to_ndarray(format="rgb24")
                out.update((index, image) for index in pending)
                break
            if frame.pts is not None and seekable:
                position = round((frame.pts - start) * time_base * fps)
            else:
                position += 1
            last = frame
            if position >= target:
                image = frame.to_ndarray(format="rgb24")
                while pending and pending[0] <= position:
                    out[pending.pop(0)] = image
    return out


def h264_available() -> bool:
    """Whether this PyAV build can encode H.264 with libx264."""
    av = _import_av()
    try:
        av.codec.Codec("libx264", "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


class OverlayWriter:
    """Streams a video of object masks drawn over frames (see `masks.blend_overlay`).

    The video is encoded with H.264 (libx264, yuv420p) when PyAV has it, else MPEG-4 part 2.
    Both need even sizes: an odd width or height is padded by one edge-replicated pixel, so the
    file is then one pixel wider or taller than the frames.

    The video is written to a hidden temporary file next to `path` and renamed to `path` only
    by a successful `close()`; `abort()` deletes it. Used as a context manager, it closes on a
    normal exit and aborts when the block raises, so `path` never holds a partial video.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        width: int,
        height: int,
        palette: np.ndarray,
        alpha: float = 0.5,
        codec: str | None = None,
    ) -> None:
        """Creates the temporary file and opens the encoder.

        Args:
            path: Output video path ending in .mp4, .mov or .mkv; its directory must exist.
            fps: Frame rate, > 0.
            width: Frame width in pixels.
            height: Frame height in pixels.
            palette: `[N, 3]` uint8 RGB colours; `palette[k]` colours object `k`.
            alpha: Opacity of the mask colours, in [0, 1].
            codec: Encoder name; None picks "libx264" when available, else "mpeg4".

        Raises:
            FileNotFoundError: If the output directory does not exist.
            ValueError: If an argument is out of range or the suffix is not supported.
        """
        self._container: Any = None
        self._tmp: Path | None = None
        self.publish_on_close = True
        self.path = Path(path)
        container_format = _OVERLAY_FORMATS.get(self.path.suffix.lower())
        if container_format is None:
            raise ValueError(
                f"overlay video {self.path} must end in one of {', '.join(_OVERLAY_FORMATS)}"
            )
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise ValueError(f"width and height must be positive integers, got {width}x{height}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.width, self.height = width, height
        self.palette = as_palette(palette)
        self.alpha = alpha
        self._av = _import_av()
        self.codec = codec or ("libx264" if h264_available() else "mpeg4")
        self.frames_written = 0
        self._tmp = temporary_sibling(self.path)
        self._container = self._av.open(str(self._tmp), mode="w", format=container_format)
        try:
            self._stream = self._container.add_stream(
                self.codec, rate=Fraction(fps).limit_denominator(1001)
            )
            self._stream.width = width + width % 2
            self._stream.height = height + height % 2
            self._stream.pix_fmt = "yuv420p"
            if self.codec == "libx264":
                self._stream.options = {"crf": "20", "preset": "veryfast"}
            else:
                self._stream.bit_rate = max(2_000_000, int(width * height * fps * 0.2))
            # Creates the file now (PyAV would at the first frame), so that an unwritable
            # place fails before any work, not when the first frame is encoded.
            self._container.start_encoding()
        except (OSError, self._av.error.FFmpegError) as error:
            self.abort()
            raise OSError(f"cannot write {self.path}: {_reason(error)}") from None
        except BaseException:
            self.abort()
            raise

    def write(self, frame: np.ndarray, mask: np.ndarray) -> None:
        """Draws `mask` over `frame` and appends the result to the video.

        Args:
            frame: `[height, width, 3]` uint8 RGB frame.
            mask: `[height, width]` integer object ids, each an index into the palette.

        Raises:
            RuntimeError: If the writer is closed or aborted.
            ValueError: If the frame or mask has the wrong size or ids lack palette entries.
        """
        if self._container is None:
            raise RuntimeError(f"overlay writer for {self.path} is already closed")
        if getattr(frame, "shape", None) != (self.height, self.width, 3):
            raise ValueError(
                f"frame must have shape {(self.height, self.width, 3)}, "
                f"got {getattr(frame, 'shape', type(frame).__name__)}"
            )
        image = blend_overlay(frame, mask, self.palette, self.alpha)
        pad_rows, pad_cols = self.height % 2, self.width % 2
        if pad_rows or pad_cols:
            image = np.pad(image, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
        video_frame = self._av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flushes the encoder and publishes the video at `path` (see `publish`). Idempotent.

        Raises:
            ValueError: If no frame was written (nothing is published then).
        """
        if self._container is None:
            return
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to {self.path}; nothing to publish")
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
        except BaseException:
            self.abort()
            raise
        if self.publish_on_close:
            self.publish()

    @property
    def pending_path(self) -> Path | None:
        """The temporary file being written (a finished video not yet published), or None."""
        return self._tmp

    def publish(self) -> None:
        """Renames the finished video to `path` (done by `close()` unless `publish_on_close`
        is False, when the caller publishes it together with other outputs). Idempotent.

        Raises:
            RuntimeError: If the video is not finished (`close()` not called yet).
        """
        if self._container is not None:
            raise RuntimeError(f"overlay {self.path} is not finished; call close() first")
        if self._tmp is None:
            return
        try:
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._tmp = None

    def abort(self) -> None:
        """Stops writing and deletes the temporary file; `path` is left untouched. Idempotent."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except (self._av.error.FFmpegError, OSError):
                pass
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        self.abort()
