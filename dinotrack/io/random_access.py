"""Random access to the frames of a video file: counting them and reading given indices
(pretraining's sampling), with decord when it is installed and PyAV otherwise."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dinotrack.errors import InputError
from dinotrack.io import decoders


def video_backends(name: str, seeking: bool = False) -> tuple[str, ...]:
    """The video backends to try in turn for ``name``: "auto" is decord (when it is installed)
    then PyAV, so that a file decord cannot read is read with PyAV; "decord" and "pyav" are
    themselves alone. With `seeking` (random access), "auto" tries PyAV first: its seeks are
    checked against timestamps, while decord's cannot be trusted and are replaced by decoding
    from frame 0.

    Raises:
        ValueError: Another name.
    """
    if name == "auto":
        if decoders.import_decord() is None:
            return ("pyav",)
        return ("pyav", "decord") if seeking else ("decord", "pyav")
    if name not in ("decord", "pyav"):
        raise InputError(f"unknown video backend {name!r}; use auto, decord or pyav")
    return (name,)


def _first_working(
    backend: str, read: Callable[[str], Any], failure: str, seeking: bool = False
) -> Any:
    """``read(name)`` with each of :func:`video_backends` in turn until one succeeds; when
    none does, a one-line ValueError of ``failure`` and each backend's reason."""
    reasons = {}
    for name in video_backends(backend, seeking):
        try:
            return read(name)
        except Exception as exc:  # the libraries raise their own exception types
            reasons[name] = decoders.reason(exc)
    if len(set(reasons.values())) == 1:  # one line, said once when every backend agrees
        raise InputError(f"{failure}: {next(iter(reasons.values()))}")
    raise InputError(f"{failure}: {'; '.join(f'{k}: {v}' for k, v in reasons.items())}")


def count_frames(path: str | os.PathLike, backend: str = "auto") -> int:
    """Number of frames of a video: decord's count, or the count PyAV's container declares
    (else its video packets).

    Raises:
        ValueError: The file cannot be opened as a video (by any of the backends).
    """
    return _first_working(backend, lambda name: _count(name, path), f"cannot read video {path}")


def _count(backend: str, path: str | os.PathLike) -> int:
    if backend == "decord":
        return len(decoders.decord_reader(path))
    av = decoders.import_av()

    with av.open(str(path)) as container:
        stream = decoders.video_stream(container)
        if stream.frames > 0:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def read_video_frames(
    path: str | os.PathLike, indices: Sequence[int], backend: str = "auto"
) -> list[np.ndarray]:
    """Decode the frames at ``indices`` (any order, repeats allowed) of one video: random
    access, for sampling training frames (:func:`iter_frames` streams a whole range).

    Each frame is decoded once, in increasing order, without reading the whole video into
    memory, and each is the frame a sequential read gives at its index: PyAV seeks to the
    keyframe before a far frame and checks the decoded frames' timestamps (decoding from
    frame 0 where they cannot be trusted); decord decodes from frame 0, as its seeks return
    wrong frames in some files. An index past the last decodable frame yields the last frame.
    "auto" reads with PyAV, and with decord when PyAV fails.

    Returns:
        One uint8 ``[H, W, 3]`` RGB array per index, in the order of ``indices``.

    Raises:
        ValueError: A negative index, or no backend could read the frames.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return []
    if wanted[0] < 0:
        raise InputError(f"negative frame index {wanted[0]} for {path}")
    readers = {"decord": decoders.read_decord, "pyav": decoders.read_pyav}
    failure = f"cannot decode frames {wanted} of {path}"
    frames = _first_working(backend, lambda name: readers[name](path, wanted), failure, True)
    return [frames[int(i)] for i in indices]
