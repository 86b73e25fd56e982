"""Writing mask overlay videos: the masks drawn over their frames, encoded with PyAV."""

from __future__ import annotations

import math
import numbers
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from dinotrack.errors import InputError
from dinotrack.io import decoders
from dinotrack.io.atomic import temporary_sibling
from dinotrack.io.masks import as_palette, check_ids

_OVERLAY_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


def h264_available() -> bool:
    """Whether this PyAV build can encode H.264 with libx264."""
    av = decoders.import_av()
    try:
        av.codec.Codec("libx264", "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


class OverlayWriter:
    """Streams a video of object masks drawn over frames (see :func:`blend_overlay`).

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
            raise InputError(
                f"overlay video {self.path} must end in one of {', '.join(_OVERLAY_FORMATS)}"
            )
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf:
            raise InputError(f"fps must be a positive number, got {fps!r}")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise InputError(f"width and height must be positive integers, got {width}x{height}")
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {alpha}")
        self.width, self.height = width, height
        self.palette = as_palette(palette)
        self.alpha = alpha
        self._av = decoders.import_av()
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
            raise OSError(f"cannot write {self.path}: {decoders.reason(error)}") from None
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
            raise InputError(
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
                raise InputError(f"no frames were written to {self.path}; nothing to publish")
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


def blend_overlay(
    frame: np.ndarray,
    ids: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    boundary: bool = True,
) -> np.ndarray:
    """Draws object masks over a frame.

    Object pixels become `(1 - alpha) * frame + alpha * colour` (rounded); background pixels
    (id 0) are unchanged. With `boundary`, object pixels next to (4-neighbourhood) a pixel of
    another id are painted in the plain object colour, outlining each object.

    Args:
        frame: `[H, W, 3]` uint8 RGB frame.
        ids: `[H, W]` integer object ids, each a valid index into `palette`.
        palette: `[N, 3]` uint8 RGB colours; `palette[k]` colours object `k`.
        alpha: Opacity of the colour, in [0, 1].
        boundary: Whether to outline objects.

    Returns:
        A new `[H, W, 3]` uint8 RGB frame.

    Raises:
        ValueError: If shapes disagree, an id has no palette entry, or alpha is out of range.
        TypeError: If `frame` is not uint8 or `ids` not integer.
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise TypeError("frame must be a uint8 numpy array [H, W, 3]")
    ids = check_ids(ids)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[:2] != ids.shape:
        raise InputError(
            f"frame must be [H, W, 3] and match the mask's [H, W] {ids.shape}, got {frame.shape}"
        )
    palette = as_palette(palette)
    if ids.size and (ids.min() < 0 or ids.max() >= len(palette)):
        raise InputError(
            f"object ids {ids.min()}..{ids.max()} need palette entries, but the palette has "
            f"{len(palette)}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    out = frame.copy()
    objects = ids != 0
    mixed = (1.0 - alpha) * frame[objects] + alpha * palette[ids[objects]].astype(np.float32)
    out[objects] = np.rint(mixed).astype(np.uint8)
    if boundary:
        edge = np.zeros(ids.shape, dtype=bool)
        vertical = ids[1:] != ids[:-1]
        horizontal = ids[:, 1:] != ids[:, :-1]
        edge[1:] |= vertical
        edge[:-1] |= vertical
        edge[:, 1:] |= horizontal
        edge[:, :-1] |= horizontal
        edge &= objects
        out[edge] = palette[ids[edge]]
    return out
