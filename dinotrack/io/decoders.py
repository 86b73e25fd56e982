"""The video decoding backends' specifics: decord and PyAV (FFmpeg).

How each library is imported (optional decord, its log and FFmpeg's silenced), how a file is
opened, described (:class:`VideoInfo`) and decoded by each, how decord hands over to PyAV at a
frame it cannot decode, and random access to chosen frames. Their failures come out as
``ValueError`` with a one-line reason (:func:`reason`). The public reading API built on these is
:mod:`dinotrack.io.video`; nothing else should need this module.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dinotrack.errors import InputError

FRAMES_DIR_FPS = 24.0
"""Frame rate reported for a directory of frames, which has none of its own."""


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


def import_decord() -> Any:
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


def import_av() -> Any:
    """PyAV, imported on first use (reading frame folders and PNGs does not need it).

    PyAV drops FFmpeg's log by default (level None); this re-asserts that, in case FFmpeg's own
    printing callback was restored, unless the application chose a level for PyAV's "libav"
    Python logger, which it keeps.
    """
    try:
        import av
    except ImportError as error:
        raise InputError(
            f"PyAV is not installed here ({error}); pip install av to read or write videos"
        ) from error
    if av.logging.get_level() is None:
        av.logging.set_level(None)
    return av


def import_av_if_installed() -> Any:
    try:
        return import_av()
    except ValueError:
        return None


_LOG_PREFIX = re.compile(r"\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ")
"""The "[02:33:37] src/video/video_reader.cc:486: " that decord puts before its messages."""


_CHECK_FAILED = re.compile(r"Check failed: .* \(-?\d+ vs\. -?\d+\) (?P<message>.+)")
"""A failed check of decord's: "Check failed: <C++ expression> (-22 vs. 0) <message>"."""


def reason(error: BaseException) -> str:
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


def warn_cut_off(info: VideoInfo, end: int) -> None:
    warnings.warn(
        f"video {info.path} ends after {end} of the {info.num_frames} frames it declares; "
        "it is probably cut off",
        stacklevel=3,
    )


def video_frame_names(num_frames: int) -> tuple[str, ...]:
    digits = max(5, len(str(num_frames - 1)))
    return tuple(f"{index:0{digits}d}.png" for index in range(num_frames))


# decord.


def open_decord(decord: Any, path: Path) -> tuple[VideoInfo, Any]:
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        num_frames = len(reader)
        if num_frames == 0:
            raise InputError("no frames")
        first = reader[0].shape
        if len(first) != 3 or first[2] != 3:  # decord garbles tiny videos (2x2 gives 48 channels)
            raise InputError(f"decord decodes frame 0 as {first}, not as RGB")
        height, width = first[:2]
        fps = float(reader.get_avg_fps())
        reader.seek(0)
    except (decord.DECORDError, RuntimeError, ValueError) as error:  # DECORDError: Exception
        raise InputError(f"cannot read video {path}: {reason(error)}") from error
    info = VideoInfo(
        path=path,
        num_frames=num_frames,
        fps=fps if math.isfinite(fps) and fps > 0 else FRAMES_DIR_FPS,
        height=int(height),
        width=int(width),
        frame_names=video_frame_names(num_frames),
        backend="decord",
    )
    return info, reader


def iter_decord(
    reader: Any, info: VideoInfo, start: int, stop: int, fallback: bool
) -> Iterator[np.ndarray]:
    """Frames `start` to `stop - 1` from decord; with `fallback`, PyAV decodes the file again
    from the start and yields on from the frame decord failed at, so the frames stay in order
    with none repeated or skipped.

    decord's seeks are not trusted: they return other frames than asked for in some files
    (MPEG-4 part 2 with B-frames, H.264 in AVI). decord reads only from frame 0 on; a later
    `start` is read with PyAV's checked seek (:func:`iter_pyav_exact`), or, without PyAV, by
    decoding from frame 0 with decord and dropping the frames before `start`.
    """
    decord = import_decord()
    if start > 0 and import_av_if_installed() is not None:
        yield from iter_pyav_exact(info, start, stop)
        return
    index = 0
    try:
        while index < stop:
            try:
                frame = reader.next().asnumpy()
            except StopIteration:
                warn_cut_off(info, index)
                return
            if index >= start:
                yield checked_size(frame, info, index)
            index += 1
        return
    except (decord.DECORDError, RuntimeError) as error:
        failure = error
    av = import_av_if_installed() if fallback else None
    error = InputError(f"cannot decode frame {index} of {info.path}: {reason(failure)}")
    if av is None:
        raise error from failure
    try:
        container = open_container(av, info.path)
    except ValueError:
        raise error from failure
    yield from iter_pyav(container, info, max(index, start), stop)


def checked_size(frame: np.ndarray, info: VideoInfo, index: int) -> np.ndarray:
    if frame.shape != (info.height, info.width, 3):
        raise InputError(
            f"cannot read video {info.path}: frame {index} has shape {tuple(frame.shape)}, not "
            f"({info.height}, {info.width}, 3); videos that change size are not supported"
        )
    return np.ascontiguousarray(frame)


# PyAV.


def open_container(av: Any, path: Path) -> Any:
    """`av.open(path)`, checked to hold a video stream."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read video {path}: {reason(error)}") from error
    if not container.streams.video:
        container.close()
        raise InputError(f"cannot read video {path}: it has no video stream")
    return container


def open_pyav(path: Path) -> tuple[VideoInfo, Any]:
    av = import_av()
    container = open_container(av, path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else FRAMES_DIR_FPS
        num_frames = stream.frames or _count_packets(path)
        width, height = stream.codec_context.width, stream.codec_context.height
        if num_frames == 0 or width == 0 or height == 0:
            raise InputError(f"cannot read video {path}: its video stream is empty")
    except (av.error.FFmpegError, OSError) as error:
        container.close()
        raise InputError(f"cannot read video {path}: {reason(error)}") from error
    except ValueError:
        container.close()
        raise
    info = VideoInfo(
        path=path,
        num_frames=num_frames,
        fps=fps,
        height=height,
        width=width,
        frame_names=video_frame_names(num_frames),
        backend="pyav",
    )
    return info, container


def _count_packets(path: Path) -> int:
    """Counts the video packets (one per frame) of a container that declares no frame count."""
    av = import_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def iter_pyav(container: Any, info: VideoInfo, start: int, stop: int) -> Iterator[np.ndarray]:
    av = import_av()
    index = 0
    try:
        if start >= stop:
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if index >= start:
                yield checked_size(frame.to_ndarray(format="rgb24"), info, index)
            index += 1
            if index >= stop:
                return
        warn_cut_off(info, index)
    except av.error.FFmpegError as error:
        raise InputError(f"cannot decode frame {index} of {info.path}: {reason(error)}") from error
    finally:
        container.close()


def frame_pts(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The presentation timestamp of each frame of a video file, frame 0 first: the pts of its
    video packets, sorted, found by demuxing (without decoding). None when a packet has no pts
    or two packets share one: seeks into such a file cannot be checked.

    Cached for the file's (path, size, mtime), so that the chunks of a backward read demux it
    once.
    """
    status = os.stat(path)
    return _frame_pts(str(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _frame_pts(path: str, size: int, mtime_ns: int) -> tuple[int, ...] | None:
    av = import_av()
    with av.open(path) as container:
        stream = video_stream(container)
        stamps = [packet.pts for packet in container.demux(stream) if packet.size]
    if any(stamp is None for stamp in stamps) or len(set(stamps)) != len(stamps):
        return None
    return tuple(sorted(stamps))


def iter_pyav_exact(
    info: VideoInfo, start: int, stop: int, container: Any = None
) -> Iterator[np.ndarray]:
    """Frames `start` to `stop - 1` of a video file read with PyAV, exactly the frames that
    decoding from frame 0 gives at these numbers.

    A `start` after frame 0 seeks to the keyframe before it, and every decoded frame's number
    is checked, from its pts (:func:`frame_pts`): they must follow one another (n, n + 1, ...)
    and reach `start`. At the first frame that breaks this (a seek that lands after the
    target, timestamps in decoding order as AVI stores them, a frame without pts), the file
    is decoded again from frame 0 (:func:`iter_pyav`, which counts frames) and the frames go
    on from the one that failed: none is repeated, skipped or wrong.

    Args:
        container: The file already opened with PyAV, or None.
    """
    index = start
    if 0 < start < stop:
        if container is not None:
            container.close()
            container = None
        for frame in _iter_checked_seek(info, start, stop):
            yield frame
            index += 1
    if container is None:
        container = open_container(import_av(), info.path)
    yield from iter_pyav(container, info, index, stop)


def _iter_checked_seek(info: VideoInfo, start: int, stop: int) -> Iterator[np.ndarray]:
    """The frames from `start` on that a seek gives and the pts check confirms (see
    :func:`iter_pyav_exact`); it stops at the first frame that cannot be confirmed."""
    av = import_av()
    stamps = frame_pts(info.path)
    if stamps is None or len(stamps) < stop:
        return
    numbers = {stamp: number for number, stamp in enumerate(stamps)}
    with open_container(av, info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        previous = None
        try:
            container.seek(stamps[start], stream=stream, backward=True)
            for frame in container.decode(stream):
                number = numbers.get(frame.pts)
                expected = start if previous is None else previous + 1
                if (
                    number is None
                    or number > expected
                    or (previous is not None and number != expected)
                ):
                    return
                previous = number
                if number >= start:
                    yield checked_size(frame.to_ndarray(format="rgb24"), info, number)
                    if number + 1 >= stop:
                        return
        except av.error.FFmpegError:
            return


def close_handle(handle: Any) -> None:
    av = sys.modules.get("av")  # a PyAV handle exists only if PyAV was imported
    if av is not None and isinstance(handle, av.container.InputContainer):
        handle.close()


_SEEK_GAP = 48
"""PyAV seeks again instead of decoding forward when the next wanted frame is this far ahead."""


def video_stream(container: Any) -> Any:
    """The first video stream of a PyAV container."""
    if not container.streams.video:
        raise InputError("it has no video stream")
    return container.streams.video[0]


def decord_reader(path: str | os.PathLike) -> Any:
    """A one-thread ``decord.VideoReader`` for random access, once PyAV (where installed) has
    opened the file: when FFmpeg cannot open a file, decord prints a line to stderr that no
    setting silences, while PyAV raises the reason (as in :func:`_open`).

    Raises:
        ValueError: The file holds no video stream.
        av.error.FFmpegError: FFmpeg cannot open it.
    """
    av = import_av_if_installed()
    if av is not None:
        with av.open(str(path)) as container:
            video_stream(container)
    return import_decord().VideoReader(str(path), num_threads=1)


def read_decord(path: str | os.PathLike, wanted: list[int]) -> dict[int, np.ndarray]:
    """The frames at `wanted` (sorted, >= 0) decoded with decord from frame 0 on: its seeks are
    not trusted (see :func:`iter_decord`). An index past the end gets the last frame."""
    reader = decord_reader(path)
    last = min(len(reader) - 1, wanted[-1])
    keep = set(wanted)
    out: dict[int, np.ndarray] = {}
    for index in range(last + 1):
        frame = reader.next().asnumpy()
        if index in keep or index == last:
            out[index] = frame
    out.update((index, out[last]) for index in wanted if index > last)
    return out


def read_pyav(path: str | os.PathLike, wanted: list[int]) -> dict[int, np.ndarray]:
    """The frames at `wanted` (sorted, >= 0) with PyAV: decoding forward to a near frame, and
    a checked seek (:func:`iter_pyav_exact`) to a far one. An index past the last decodable
    frame gets the last frame."""
    try:
        info, container = open_pyav(Path(path))
    except InputError as error:  # the reason alone: the caller's message names the file
        raise InputError(str(error).removeprefix(f"cannot read video {path}: ")) from error
    container.close()
    out: dict[int, np.ndarray] = {}
    frames: Iterator[np.ndarray] | None = None
    position = -1  # the number of the last decoded frame
    image = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cut-off file: its last frame stands for the rest
        for index in wanted:
            target = min(index, info.num_frames - 1)
            if frames is None or target - position > _SEEK_GAP:
                if frames is not None:
                    frames.close()
                frames = iter_pyav_exact(info, target, info.num_frames)
                position = target - 1
            while position < target and (frame := next(frames, None)) is not None:
                image, position = frame, position + 1
            if image is None:
                raise InputError(f"no frame could be decoded from {path}")
            out[index] = image
    if frames is not None:
        frames.close()
    return out
