"""Object-id masks: reading and checking user masks, writing palette PNGs, resizing, overlays,
and the mapping of object ids to the tracker's label channels.

A mask is an integer array `[H, W]` of object ids, 0 = background. Ids are kept as the user
gave them (palette index 3 stays 3). Masks are written as palette PNGs ("P" mode), the DAVIS
convention, so that any image viewer shows each object in its own colour and the ids read back
exactly.

Reading accepts the formats users produce for a first-frame mask (see `read_mask`). JPEG masks
are refused: compression smears object borders into new grey levels and colours, which would
turn into spurious objects.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dinotrack.errors import InputError
from dinotrack.io.atomic import atomic_output
from dinotrack.io.images import check_input_path, image_size, open_image

MAX_OBJECT_ID = 255
"""Largest object id a palette PNG can hold."""

VOID_ID = 255
"""Palette index of the DAVIS / PASCAL VOC "void" label (unlabelled borders): in a palette
mask it is background, as DAVIS's own tools treat it, not an object."""

MAX_TRACKED_ID = VOID_ID - 1
"""Largest id an object read from a mask may have: an object 255 would be written as the void
label, and read back as background (by ``export``, by DAVIS's tools)."""

MAX_MASK_SCALE = 16
"""A mask read for frames of a known size may be at most this many times their width and
height (a rescale of the frames, e.g. a 4K mask for 480p frames); a larger one is refused from
its header, before it is decoded."""

MAX_GRAY_IDS = 64
"""Most distinct non-zero values a grayscale mask may hold: more looks like a photo or a
smoothed mask rather than object ids (a palette PNG may hold up to 255 objects)."""

_GRAY_MODES = ("L", "LA", "I;16", "I;16L", "I;16B", "I")


def davis_palette() -> np.ndarray:
    """Returns the DAVIS / PASCAL VOC colour palette.

    Entry `i` spreads the bits of `i` over the three channels, most significant bit first:
    bit 0 of `i` goes to red, bit 1 to green, bit 2 to blue, then the next three bits one
    position lower, and so on. Index 1 is (128, 0, 0), 2 is (0, 128, 0), 3 is (128, 128, 0).
    All 256 entries are distinct.

    Returns:
        A fresh `[256, 3]` uint8 array of RGB colours.
    """
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    for level in range(8):
        bits = index >> (3 * level)
        for channel in range(3):
            palette[:, channel] |= ((bits >> channel) & 1) << (7 - level)
    return palette.astype(np.uint8)


@dataclass(frozen=True)
class LoadedMask:
    """A mask read from an image file.

    Attributes:
        ids: `[H, W]` int64 object ids, 0 = background.
        palette: `[256, 3]` uint8 RGB palette of the file when it was a palette image, else None.
        format: How the file was interpreted: "palette", "gray", "gray-binary" or "rgb".
    """

    ids: np.ndarray
    palette: np.ndarray | None
    format: str


def read_mask(
    path: str | os.PathLike[str],
    colours: ColourIds | None = None,
    frame_size: tuple[int, int] | None = None,
) -> LoadedMask:
    """Reads an object-id mask from an image file (PNG, or another lossless format PIL reads).

    How pixel values become ids depends on the image mode:

    - palette ("P"): the palette index is the id; the file's palette is returned too. Index
      255 is the DAVIS/VOC "void" label: it becomes background, with a warning.
    - grayscale ("L", "LA", "1", 16-bit "I;16", 32-bit "I"): if every value is 0 or the
      format's maximum (255, or 65535 for 16-bit), the mask is binary and the maximum becomes
      id 1 ("gray-binary"); otherwise each value is the id as it is ("gray"). Two kinds of
      grayscale image are refused as not being id masks: one holding 0, the maximum and any
      value in between (a binary mask whose edges were anti-aliased or blurred: its edge
      levels would become spurious objects), and one holding more than `MAX_GRAY_IDS` (64)
      distinct non-zero values (a photo or a smoothed mask). Threshold such an image, or save
      the objects as a palette PNG.
    - colour ("RGB", "RGBA"): black is background and each other colour is one object, its id
      given by `colours` (:class:`ColourIds`): pass one `ColourIds` to every mask of a run so
      that a colour is the same object in all of them. In short: if every colour of the file
      is an entry of the DAVIS palette, its palette index is the id, so a DAVIS-coloured RGB
      export keeps its ids; otherwise new colours are numbered 1, 2, ... in the order they
      first appear in raster order (row by row, left to right). No colour gets id 255 (the
      void label), not even the DAVIS palette's colour 255 (224, 224, 192).
    - any alpha channel: fully transparent pixels (alpha 0) are background, whatever their
      colour; other alpha values are ignored.

    Args:
        path: Image file.
        colours: The ids of the colours seen in a run's earlier RGB masks, which this call
            extends; None: this mask alone.
        frame_size: ``(H, W)`` of the frames the mask is for: a mask more than
            :data:`MAX_MASK_SCALE` (16) times their width or height is refused from its
            header, before it is decoded (a small file may declare a huge image); None: no
            such check.

    Returns:
        The ids, the file's palette (palette images only) and the interpretation used.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file is not a regular file or not a readable image (truncated,
            or too large to decode safely), is stored lossily (JPEG, lossy WebP, JPEG 2000),
            looks like compression noise (an RGB mask of many colours, most of them a few
            pixels each), has an unsupported mode,
            holds more than 254 colours (in all of `colours`), holds ids above 254, or is a
            grayscale image that
            looks anti-aliased or like a photo (see above).
    """
    path = check_input_path(path, "mask file")
    if frame_size is not None:
        _check_not_far_larger(path, frame_size)
    with open_image(path, "mask") as image:
        lossy = _lossy_format(image, path)
        if lossy is not None:
            raise InputError(
                f"mask {path} is a {lossy}; lossy compression adds colours at object borders "
                "that would become spurious objects. Save the mask as a PNG"
            )
        return _image_to_mask(image, path, ColourIds() if colours is None else colours)


def _check_not_far_larger(path: Path, frame_size: tuple[int, int]) -> None:
    width, height = image_size(path, "mask")
    frame_height, frame_width = frame_size
    if width > MAX_MASK_SCALE * frame_width or height > MAX_MASK_SCALE * frame_height:
        raise InputError(
            f"mask {path} is {width}x{height} but the frames are {frame_width}x{frame_height}; "
            f"a mask more than {MAX_MASK_SCALE} times the frames' size is refused before it is "
            "decoded. Give a mask of the frames' size"
        )


def _lossy_format(image: Image.Image, path: Path) -> str | None:
    """ "a JPEG" or "lossy WebP" for a file stored with lossy compression, else None."""
    if image.format in ("JPEG", "MPO"):
        return "JPEG"
    if image.format == "JPEG2000":
        return "JPEG 2000 file (usually lossy)"
    if image.format == "WEBP":
        # A lossy WebP stores its pixels in a "VP8 " chunk (lossless ones in "VP8L"); the
        # extended format ("VP8X") holds either, so the chunks are read.
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
        position = 12
        while position + 8 <= len(data):
            kind = data[position : position + 4]
            if kind in (b"VP8 ", b"ANMF"):
                return "lossy or animated WebP"
            size = int.from_bytes(data[position + 4 : position + 8], "little")
            position += 8 + size + (size & 1)
    return None


def _image_to_mask(image: Image.Image, path: Path, colours: ColourIds) -> LoadedMask:
    mode = image.mode
    if mode in ("P", "PA"):
        ids = np.asarray(image.getchannel(0) if mode == "PA" else image, dtype=np.int64)
        if mode == "PA":
            ids = np.where(np.asarray(image.getchannel("A")) == 0, 0, ids)
        void = int((ids == VOID_ID).sum())
        if void:
            warnings.warn(
                f"mask {path}: {void} pixels of palette index {VOID_ID} (the DAVIS/VOC 'void' "
                "label) are treated as background, not tracked as an object",
                stacklevel=3,
            )
            ids = np.where(ids == VOID_ID, 0, ids)
        raw = image.getpalette("RGB")
        palette = None
        if raw is not None:
            palette = np.zeros((256, 3), dtype=np.uint8)
            entries = np.asarray(raw, dtype=np.uint8).reshape(-1, 3)[:256]
            palette[: len(entries)] = entries
        return LoadedMask(ids=ids, palette=palette, format="palette")
    if mode == "1":
        return LoadedMask(ids=np.asarray(image, dtype=np.int64), palette=None, format="gray-binary")
    if mode in _GRAY_MODES:
        values = np.asarray(image.getchannel(0) if mode == "LA" else image).astype(np.int64)
        if mode == "LA":
            values[np.asarray(image.getchannel("A")) == 0] = 0
        return _gray_to_mask(values, 65535 if mode.startswith("I;16") else 255, path)
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
        alpha = np.asarray(image.getchannel("A")) if mode == "RGBA" else None
        return _rgb_to_mask(rgb, alpha, path, colours)
    raise InputError(
        f"mask {path} has image mode {mode!r}; save it as a palette, grayscale or RGB PNG"
    )


def _gray_to_mask(values: np.ndarray, full: int, path: Path) -> LoadedMask:
    present = np.unique(values)
    if np.isin(present, [0, full]).all():
        return LoadedMask(ids=(values == full).astype(np.int64), palette=None, format="gray-binary")
    levels = int((present != 0).sum())
    if present[0] == 0 and present[-1] == full:
        between = f"{len(present) - 2} level{'s' if len(present) > 3 else ''}"
        raise InputError(
            f"mask {path} holds gray values 0 and {full} and {between} in between; it looks "
            "like an anti-aliased binary mask, whose edge levels would become spurious objects. "
            f"Threshold it to 0/{full}, or save the objects as a palette PNG"
        )
    if levels > MAX_GRAY_IDS:
        raise InputError(
            f"mask {path} holds {levels} gray levels besides black; a grayscale mask may hold "
            f"at most {MAX_GRAY_IDS} object ids. Is it a photo or a blurred mask rather than "
            "an id mask? Threshold it, or save the objects as a palette PNG"
        )
    if present[0] < 0 or present[-1] > MAX_TRACKED_ID:
        raise InputError(
            f"mask {path} holds gray values {present[0]}..{present[-1]}; object ids must be "
            f"0..{MAX_TRACKED_ID} (0 = background, {VOID_ID} = void), or the mask binary "
            f"(0 and {full})"
        )
    return LoadedMask(ids=values, palette=None, format="gray")


def _rgb_to_mask(
    rgb: np.ndarray, alpha: np.ndarray | None, path: Path, colours: ColourIds
) -> LoadedMask:
    height, width = rgb.shape[:2]
    packed = _pack_rgb(rgb).ravel()
    if alpha is not None:
        packed[alpha.ravel() == 0] = 0
    found, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
    objects = found != 0
    if objects.sum() > MAX_TRACKED_ID:
        raise InputError(
            f"mask {path} holds {objects.sum()} colours besides black; a mask may hold at most "
            f"{MAX_TRACKED_ID} objects. Is it a photo rather than a mask?"
        )
    _check_not_noise(np.bincount(inverse.ravel())[objects], path)
    in_order = found[objects][np.argsort(first[objects], kind="stable")]
    known = dict(zip(in_order.tolist(), colours.number(in_order.tolist(), path), strict=True))
    colour_ids = np.array([known.get(int(c), 0) for c in found], dtype=np.int64)
    ids = colour_ids[inverse.ravel()].reshape(height, width)
    return LoadedMask(ids=ids, palette=None, format="rgb")


class ColourIds:
    """The object id of each colour of a run's RGB masks (prompts): a colour has one id in
    every mask of the run, and a colour first seen in a later mask is a new object.

    The colours of a mask are numbered in the order they first appear in it (raster order).
    A new colour gets its DAVIS palette index when every colour of its mask is a DAVIS
    palette entry (a DAVIS-coloured export keeps its ids) and that id is free; otherwise the
    smallest free id from 1. No colour gets id 255, the void label.
    """

    def __init__(self) -> None:
        self._ids: dict[int, int] = {}  # packed 0xRRGGBB colour -> object id
        palette = _pack_rgb(davis_palette().astype(np.int64)).tolist()
        self._davis = {colour: index for index, colour in enumerate(palette) if index}

    def number(self, colours: list[int], path: Path) -> list[int]:
        """The ids of `colours` (packed 0xRRGGBB, not black), in their order in mask `path`;
        new ones are numbered as the class says.

        Raises:
            InputError: The run's colours would need more than 254 ids.
        """
        new = [colour for colour in colours if colour not in self._ids]
        taken = set(self._ids.values())
        if all(colour in self._davis for colour in colours):
            for colour in new:
                index = self._davis[colour]
                if index <= MAX_TRACKED_ID and index not in taken:
                    self._ids[colour] = index
                    taken.add(index)
        free = (i for i in range(1, MAX_TRACKED_ID + 1) if i not in taken)
        for colour in new:
            if colour not in self._ids:
                self._ids[colour] = next(free, 0)
                if not self._ids[colour]:
                    raise InputError(
                        f"mask {path} brings the colours of the run's masks to more than "
                        f"{MAX_TRACKED_ID}, the most objects a run may have"
                    )
        return [self._ids[colour] for colour in colours]


NOISE_MIN_COLOURS = 8
"""An RGB mask with more colours than this, most of them covering only a few pixels, is
refused as compression noise (see :func:`read_mask`)."""


def _check_not_noise(counts: np.ndarray, path: Path) -> None:
    """Refuses colour counts that look like lossy compression (or scaling) noise: many
    colours, most of them a few pixels each, as a lossy WebP or a resized RGB mask has."""
    if len(counts) <= NOISE_MIN_COLOURS:
        return
    speckles = int((counts < max(16, counts.sum() // 10_000)).sum())
    if 2 * speckles >= len(counts):
        raise InputError(
            f"mask {path} holds {len(counts)} colours, {speckles} of them on a few pixels "
            "each: that looks like compression or resampling noise, not objects. Save the "
            "mask losslessly (PNG) without smoothing, or as a palette PNG"
        )


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def check_ids(ids: np.ndarray, name: str = "ids") -> np.ndarray:
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(ids).__name__}")
    if ids.ndim != 2:
        raise InputError(f"{name} must be a 2-D [H, W] array of object ids, got shape {ids.shape}")
    if ids.dtype != np.bool_ and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integer object ids, got dtype {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def as_palette(palette: np.ndarray) -> np.ndarray:
    """Checks a colour palette and returns it as uint8.

    Args:
        palette: `[N, 3]` integer RGB colours in 0..255, 1 <= N <= 256.

    Returns:
        The palette as a `[N, 3]` uint8 array (no copy when it already is one).

    Raises:
        ValueError: If the shape or the values are wrong.
    """
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or not 1 <= palette.shape[0] <= 256:
        raise InputError(f"palette must have shape [N, 3] with N <= 256, got {palette.shape}")
    if not np.issubdtype(palette.dtype, np.integer) or palette.min() < 0 or palette.max() > 255:
        raise InputError("palette must hold integer RGB values in 0..255")
    return palette.astype(np.uint8, copy=False)


def mask_to_image(ids: np.ndarray, palette: np.ndarray | None = None) -> Image.Image:
    """Converts object ids to a palette ("P" mode) image.

    Args:
        ids: `[H, W]` integer object ids in 0..255.
        palette: `[N, 3]` uint8 RGB colours (N <= 256, missing entries black), or None for the
            DAVIS palette.

    Returns:
        A mode "P" PIL image whose pixel values are the ids.

    Raises:
        ValueError: If an id is outside 0..255 or the palette has the wrong shape.
        TypeError: If `ids` is not an integer numpy array.
    """
    ids = check_ids(ids)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_OBJECT_ID):
        raise InputError(
            f"object ids must be in 0..{MAX_OBJECT_ID} to be stored in a palette image, "
            f"got {ids.min()}..{ids.max()}"
        )
    full = np.zeros((256, 3), dtype=np.uint8)
    colours = davis_palette() if palette is None else as_palette(palette)
    full[: len(colours)] = colours
    image = Image.fromarray(ids.astype(np.uint8))
    image.putpalette(full.tobytes(), rawmode="RGB")
    return image


def write_mask(
    path: str | os.PathLike[str], ids: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Writes object ids as a palette PNG, atomically.

    The image is written to a temporary file in the same directory and renamed to `path`, so
    `path` never holds a partial file.

    Args:
        path: Output PNG path; its directory must exist.
        ids: `[H, W]` integer object ids in 0..255.
        palette: `[N, 3]` uint8 RGB colours, or None for the DAVIS palette.

    Raises:
        FileNotFoundError: If the output directory does not exist.
        ValueError: If an id is outside 0..255 or the palette has the wrong shape.
    """
    image = mask_to_image(ids, palette)
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")


def resize_mask(ids: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes an id mask by nearest neighbour, matching PIL's `Image.NEAREST`.

    Output pixel `(i, j)` takes the input pixel under its centre,
    `ids[floor((i + 0.5) * H / height), floor((j + 0.5) * W / width)]`, computed with PIL's
    floating-point arithmetic so that the result equals PIL's to the pixel, ties included.

    Args:
        ids: `[H, W]` integer object ids.
        height: Output height, positive.
        width: Output width, positive.

    Returns:
        `[height, width]` int64 ids, all taken from `ids`.

    Raises:
        ValueError: If the size is not positive or `ids` is empty.
    """
    ids = check_ids(ids)
    if height < 1 or width < 1:
        raise InputError(f"output size must be positive, got {height}x{width}")
    if ids.size == 0:
        raise InputError(f"cannot resize an empty mask of shape {ids.shape}")
    rows = _nearest_source(ids.shape[0], height)
    cols = _nearest_source(ids.shape[1], width)
    return ids[rows[:, None], cols[None, :]]


def _nearest_source(size_in: int, size_out: int) -> np.ndarray:
    # PIL walks the centres by repeated addition of the step rather than multiplying, which
    # decides ties (a centre exactly on a source pixel border) differently from the exact
    # product; a sequential cumulative sum reproduces its arithmetic bit for bit.
    step = size_in / size_out
    increments = np.full(size_out, step)
    increments[0] = step * 0.5
    centres = np.cumsum(increments)
    return np.minimum(centres.astype(np.int64), size_in - 1)
