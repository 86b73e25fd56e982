"""Random access to a video's frames through a small LRU cache (the studio's frame source).

Frames are decoded on demand, a few at a time, and at most ``capacity`` of them are held: memory
does not grow with the video's length. A video file is read in chunks of ``chunk`` frames from
the chunk's first frame (decord seeks; PyAV decodes from the file's start), so stepping or
playing through a video costs one decode per chunk; a frames directory reads one file per frame.
The frames come from :func:`dinotrack.io.video.iter_frames`, the reader behind ``segment``'s
:class:`~dinotrack.io.video.FrameReader`, so they are the same pixels.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

from dinotrack.errors import InputError
from dinotrack.io.decoders import VideoInfo
from dinotrack.io.video import iter_frames, probe_video

__all__ = ["FrameCache"]


class FrameCache:
    """The frames of one video, decoded on demand into a least-recently-used cache.

    Thread-safe: the studio's request handlers and its propagation thread share one cache.

    Args:
        path: Video file or directory of frames.
        capacity: Most decoded frames held, >= 1.
        chunk: Frames decoded together from a video file (a frames directory reads one).

    Attributes:
        info: The video's description (:class:`dinotrack.io.decoders.VideoInfo`).

    Raises:
        FileNotFoundError, ValueError: As :func:`dinotrack.io.video.probe_video`.
    """

    def __init__(self, path: str | os.PathLike[str], capacity: int = 48, chunk: int = 8) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise InputError(f"capacity must be an integer >= 1, got {capacity!r}")
        self.info: VideoInfo = probe_video(path)
        self.capacity = capacity
        self.chunk = 1 if self.info.backend == "frames" else max(1, min(chunk, capacity))
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.info.num_frames

    def get(self, index: int) -> np.ndarray:
        """Frame ``index`` (counted from 0) as a read-only ``[H, W, 3]`` uint8 RGB array.

        Raises:
            IndexError: ``index`` is not a frame of the video.
            ValueError: The frame cannot be decoded.
        """
        if not isinstance(index, (int, np.integer)) or not 0 <= index < self.info.num_frames:
            raise IndexError(
                f"frame {index} does not exist: the video has {self.info.num_frames} frames "
                f"(0 to {self.info.num_frames - 1})"
            )
        index = int(index)
        with self._lock:
            frame = self._frames.get(index)
            if frame is not None:
                self._frames.move_to_end(index)
                return frame
            start = index - index % self.chunk
            stop = min(start + self.chunk, self.info.num_frames)
            for i, decoded in enumerate(iter_frames(self.info.path, start=start, stop=stop)):
                decoded.flags.writeable = False
                self._frames[start + i] = decoded
                self._frames.move_to_end(start + i)
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)
            frame = self._frames.get(index)
        if frame is None:
            raise InputError(f"cannot decode frame {index} of {self.info.path}")
        return frame

    def cached(self) -> list[int]:
        """Indices of the frames held now (for tests and benchmarks)."""
        with self._lock:
            return sorted(self._frames)
