"""Object ids: user ids mapped to label channels in one place, and the checks and merges of
the masks that give objects (first masks and prompts).

The user's ids are kept as given (palette index 3 stays 3); the propagation works on
channels ``0..K`` (0 the background, channel ``c`` the ``c``-th id of a group's
``object_ids``). This module is the only place where the two meet (Cutie's object manager).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from dinotrack.errors import InputError
from dinotrack.io.masks import resize_mask
from dinotrack.tracking.propagation import one_hot_labels

MIN_MASK_SIDE = 16
"""Shortest side, in pixels, of a first mask that is resized to the frames: a smaller one
cannot carry an object's shape."""


def check_first_mask(mask: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """The first-frame mask, checked against the frames' ``(H, W)`` and resized (nearest,
    with a warning) when its size differs but it is a rescale of the frame size.

    A mask of ``W' x H'`` is a rescale of frames of ``W x H`` when one scale factor ``s``
    makes both sides agree up to rounding: ``|W' - s W|`` and ``|H' - s H|`` within half a
    pixel on each image, that is, when the intervals
    ``[(W' - 0.5) / (W + 0.5), (W' + 0.5) / (W - 0.5)]`` and the same for the heights
    overlap. So for 854x480 frames, 3840x2160, 1920x1080, 1280x720 and 427x240 masks are
    resized, while 480x480 and 854x400 are refused. A mask of another size whose short
    side is below :data:`MIN_MASK_SIDE` pixels is refused too.

    Args:
        mask: ``[H', W']`` integer or bool object ids (bool: ``True`` is object 1).
        frame_size: ``(H, W)`` of the frames.

    Returns:
        ``[H, W]`` integer object ids (the given array when no resize was needed, bool masks
        as uint8).

    Raises:
        ValueError: Not a 2-D integer or bool array, negative ids, no object, another aspect
            ratio, or a mask of another size too small to carry a shape.
    """
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise InputError(
            f"the first mask must be a 2-D array of integer object ids, got {mask.dtype} "
            f"of shape {mask.shape}"
        )
    if (mask < 0).any():
        raise InputError("the first mask has negative ids; ids must be >= 0 (0 = background)")
    if not mask.any():
        raise InputError("the first mask is empty: it holds no object (all pixels are 0)")
    (fh, fw), (mh, mw) = frame_size, mask.shape
    if (mh, mw) != (fh, fw):
        if min(mh, mw) < MIN_MASK_SIDE:
            raise InputError(
                f"the mask is {mw}x{mh} but the frames are {fw}x{fh}; a mask smaller than "
                f"{MIN_MASK_SIDE} pixels on its short side is too small to carry a shape. Give "
                "a mask of the first frame's size"
            )
        if not _is_rescale((mh, mw), (fh, fw)):
            raise InputError(
                f"the mask is {mw}x{mh} but the frames are {fw}x{fh} (another aspect "
                "ratio); give a mask of the first frame's size"
            )
        warnings.warn(
            f"the mask is {mw}x{mh} but the frames are {fw}x{fh}; resizing the mask "
            "(nearest neighbour)",
            stacklevel=3,
        )
        mask = resize_mask(mask, fh, fw)
    return mask


def _is_rescale(size: tuple[int, int], reference: tuple[int, int]) -> bool:
    """Whether ``size`` ``(h, w)`` is ``reference`` scaled by one factor and rounded, with half
    a pixel of rounding allowed on every side of both."""
    low, high = 0.0, math.inf
    for a, b in zip(size, reference, strict=True):
        low = max(low, (a - 0.5) / (b + 0.5))
        high = min(high, (a + 0.5) / (b - 0.5))
    return low <= high


def warn_small_objects(
    mask: np.ndarray,
    input_size: tuple[int, int],
    patch_size: int,
    only: tuple[int, ...] | None = None,
) -> None:
    """Warns about the objects of a first mask ``[H, W]`` (or of a prompt, for its new objects
    ``only``) that cover less than one patch once the frame is resized to the network's
    ``input_size`` ``(h, w)``: below the patch grid's resolution they may vanish from the
    first propagated frame on."""
    ids, counts = np.unique(mask, return_counts=True)
    scale = input_size[0] * input_size[1] / mask.size
    small = [
        int(i)
        for i, n in zip(ids, counts, strict=True)
        if i != 0 and n * scale < patch_size**2 and (only is None or i in only)
    ]
    if small:
        listed = ", ".join(str(i) for i in small)
        warnings.warn(
            f"object{'s' if len(small) > 1 else ''} {listed} of the "
            f"{'first mask' if only is None else 'prompt'} "
            f"{'are' if len(small) > 1 else 'is'} smaller than one {patch_size}x{patch_size} "
            f"patch at the network input ({input_size[1]}x{input_size[0]}) and may be lost "
            "after the first frame; a larger short side keeps small objects",
            stacklevel=4,
        )


def ids_dtype(object_ids: tuple[int, ...]) -> type[np.integer]:
    """Output mask dtype: uint8 when every id fits (palette PNGs), else int32."""
    return np.uint8 if max(object_ids, default=0) < 256 else np.int32


def check_prompt(mask: np.ndarray, frame_size: tuple[int, int], index: int) -> np.ndarray:
    """A prompt mask checked as :func:`check_first_mask` checks a first mask (resized, with a
    warning, when it is a rescale of the frames), its errors naming the frame ``index``."""
    try:
        return check_first_mask(mask, frame_size)
    except ValueError as error:
        raise InputError(f"the prompt of frame {index}: {error}") from None


def ids_to_channels(ids: np.ndarray, object_ids: tuple[int, ...]) -> np.ndarray:
    """Map user object ids to channel indices (0 = background, ids in ``object_ids``
    order from 1); ids not in ``object_ids`` become background."""
    lut = np.zeros(max(object_ids, default=0) + 1, dtype=np.int64)
    lut[list(object_ids)] = np.arange(1, len(object_ids) + 1)
    ids = np.asarray(ids)
    return np.where(ids < len(lut), lut[np.minimum(ids, len(lut) - 1)], 0)


def channels_to_ids(channels: np.ndarray, object_ids: tuple[int, ...]) -> np.ndarray:
    """Map channel indices back to user object ids (uint8 if all < 256, else int32)."""
    table = np.array((0, *object_ids), dtype=ids_dtype(object_ids))
    return table[channels]


def object_labels(
    ids: np.ndarray, object_ids: tuple[int, ...], device: torch.device | None = None
) -> Tensor:
    """One-hot labels ``[1 + len(object_ids), h, w]`` (float32) of ``object_ids`` in an
    ``[h, w]`` id mask on the patch grid; other ids count as background."""
    channels = torch.from_numpy(ids_to_channels(ids, object_ids))
    return one_hot_labels(channels.to(device), len(object_ids) + 1)


def merge_prompt(tracked: np.ndarray, prompt: np.ndarray, dtype: type) -> np.ndarray:
    """The merged mask of a prompted frame: the tracked ids, the prompt's objects replaced by
    the prompt's pixels (an object the prompt holds appears nowhere else)."""
    out = tracked.astype(dtype)
    out[np.isin(out, np.unique(prompt[prompt != 0]))] = 0
    out[prompt != 0] = prompt[prompt != 0]
    return out
