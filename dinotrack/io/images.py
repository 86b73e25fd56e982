"""Opening input files without trusting them: regular files only, bounded image sizes.

Every file dinotrack reads (a video, a frame, a mask, an image, weights) goes through
:func:`check_input_path` first: a FIFO, a device or a socket would block the process forever or
read endless data, and a symlink loop would be reported as a missing file. Images are opened
with :func:`open_image`, which turns Pillow's decompression-bomb guard and its many decoder
errors into one :class:`ValueError` naming the file, and :func:`image_to_rgb` reads 16-bit
images by scaling them to 8 bits instead of clipping them to white.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dinotrack.errors import InputError, MissingFileError

__all__ = ["IMAGE_ERRORS", "check_input_path", "image_size", "image_to_rgb", "open_image"]

IMAGE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
)
"""What Pillow raises on damaged or hostile image files."""


def check_input_path(
    path: str | os.PathLike[str], what: str, *, directory_ok: bool = False
) -> Path:
    """Checks that `path` is an existing regular file (or, with `directory_ok`, a directory).

    Args:
        path: The input path.
        what: How messages name it (e.g. ``"mask"``, ``"video"``, ``"weights file"``).
        directory_ok: Accept a directory too.

    Returns:
        `path` as a :class:`Path`.

    Raises:
        FileNotFoundError: Nothing is there (a dangling symlink included).
        ValueError: A symlink loop, or a FIFO, device or socket (which would block or never
            end), or a directory when `directory_ok` is False.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.lexists(path):
            raise MissingFileError(f"{what} {path} is a symbolic link to a missing file") from None
        raise MissingFileError(f"{what} {path} does not exist") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"{what} {path} is a symbolic link loop; give a file") from None
        raise InputError(f"cannot read {what} {path}: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        if directory_ok:
            return path
        raise InputError(f"{what} {path} is a directory; give a file")
    if not stat.S_ISREG(mode):
        raise InputError(
            f"{what} {path} is not a regular file (a FIFO, device or socket, which could block "
            "forever); give a file"
        )
    return path


@contextmanager
def open_image(path: str | os.PathLike[str], what: str = "image") -> Iterator[Image.Image]:
    """Opens an image file checked by :func:`check_input_path`, decoding it fully.

    Args:
        path: The image file.
        what: How messages name it.

    Yields:
        The loaded PIL image (pixels decoded).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a regular file; not a readable image; truncated or damaged; more
            pixels than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``).
    """
    path = check_input_path(path, what)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise InputError(_bomb_message(path, what, error)) from None
    except IMAGE_ERRORS as error:
        raise InputError(f"cannot read {what} {path}: {_reason(error)}") from None
    try:
        try:
            image.load()
        except Image.DecompressionBombError as error:
            raise InputError(_bomb_message(path, what, error)) from None
        except IMAGE_ERRORS as error:
            raise InputError(
                f"cannot read {what} {path}: {_reason(error)} (a truncated or damaged file?)"
            ) from None
        yield image
    finally:
        image.close()


def image_size(path: str | os.PathLike[str], what: str = "image") -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header without decoding it: to
    refuse an image far larger than needed before it takes memory.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a regular file, not a readable image, or more pixels than Pillow's
            decompression-bomb limit.
    """
    path = check_input_path(path, what)
    try:
        with Image.open(path) as image:
            return image.size
    except Image.DecompressionBombError as error:
        raise InputError(_bomb_message(path, what, error)) from None
    except IMAGE_ERRORS as error:
        raise InputError(f"cannot read {what} {path}: {_reason(error)}") from None


def _bomb_message(path: Path, what: str, error: Exception) -> str:
    return (
        f"{what} {path} is too large to decode safely ({_reason(error)}); images of more "
        f"than {Image.MAX_IMAGE_PIXELS} pixels are refused"
    )


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """A loaded image as a writable, C-contiguous ``[H, W, 3]`` uint8 RGB array.

    16-bit grayscale (``I;16*``) and 32-bit integer (``I``) images are scaled from 0..65535 to
    0..255 (Pillow's own conversion clips them, so every pixel above 255 became white);
    floating-point (``F``) images are taken as 0..1 when their values lie there, else
    clipped to 0..255.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.int64)
        gray = np.clip(values, 0, 65535) >> 8
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.size and 0.0 <= values.min() and values.max() <= 1.0 else 1.0
        gray = np.clip(np.rint(values * scale), 0, 255)
    else:
        return np.array(image.convert("RGB"))  # a writable copy: np.asarray's is read-only
    gray = gray.astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
