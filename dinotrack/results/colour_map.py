"""The viridis colour map, and attention maps drawn over their frames with it."""

from __future__ import annotations

import functools

import numpy as np
from torch import Tensor

from dinotrack.config import DEFAULT_MASS
from dinotrack.errors import InputError
from dinotrack.io.masks import davis_palette
from dinotrack.models.attention import mass_threshold, upsample_attention

# Five stops of the viridis colour map (dark blue -> yellow), linearly interpolated.
_COLOUR_STOPS = np.array(
    [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float32
)


@functools.cache
def _colour_table() -> np.ndarray:
    """``[256, 3]`` uint8: the colour map sampled at 256 evenly spaced levels."""
    position = np.linspace(0.0, len(_COLOUR_STOPS) - 1, 256)
    low = np.minimum(position.astype(np.int64), len(_COLOUR_STOPS) - 2)
    frac = (position - low)[:, None]
    colours = (1.0 - frac) * _COLOUR_STOPS[low] + frac * _COLOUR_STOPS[low + 1]
    return np.rint(colours).astype(np.uint8)


def colourize(values: np.ndarray | Tensor) -> np.ndarray:
    """Colours a map with the viridis colour map, scaled by its own maximum.

    Args:
        values: ``[H, W]`` non-negative map; 0 is dark blue, the map's maximum yellow (256
            levels).

    Returns:
        ``[H, W, 3]`` uint8 RGB.
    """
    if isinstance(values, Tensor):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=np.float32)
    top = float(values.max()) if values.size else 0.0
    scale = 255.0 / top if top > 0 else 0.0
    levels = np.rint(np.clip(values * scale, 0.0, 255.0)).astype(np.uint8)
    return _colour_table()[levels]


def attention_overlay(
    frame: np.ndarray, values: np.ndarray | Tensor, alpha: float = 0.6
) -> np.ndarray:
    """Blends a coloured attention map (see :func:`colourize`) over its frame.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        values: ``[H, W]`` attention map at the frame's size.
        alpha: Opacity of the colours, in [0, 1] (1 shows the map alone).

    Returns:
        ``[H, W, 3]`` uint8 RGB, ``(1 - alpha) * frame + alpha * colour``, rounded.

    Raises:
        ValueError: Sizes disagree or ``alpha`` is out of range.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if frame.ndim != 3 or tuple(frame.shape[:2]) != tuple(values.shape):
        raise InputError(
            f"the map {tuple(values.shape)} must have the frame's size {frame.shape[:2]}"
        )
    mixed = (1.0 - alpha) * frame.astype(np.float32) + alpha * colourize(values)
    return np.rint(mixed).astype(np.uint8)


def outline_palette() -> np.ndarray:
    """The DAVIS palette with id 1 white: the colour of the mass-threshold outlines."""
    palette = davis_palette()
    palette[1] = (255, 255, 255)  # the mass-threshold outline, white over the colour map
    return palette


def render(
    frame: np.ndarray,
    attn_map: Tensor,
    *,
    upsample: str = "nearest",
    mass: float = DEFAULT_MASS,
    alpha: float = 0.6,
) -> tuple[np.ndarray, np.ndarray]:
    """One attention map coloured over its frame, and the map's mass-threshold mask.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        attn_map: ``[h, w]`` patch-level map.
        upsample: ``"nearest"`` or ``"bilinear"`` resizing of the map to the frame.
        mass: Share of the map's mass the mask holds.
        alpha: Opacity of the colours.

    Returns:
        ``(picture, mask)``: ``[H, W, 3]`` uint8 RGB and ``[H, W]`` uint8 (1 = kept patch).
        ``blend_overlay(picture, mask, outline_palette(), alpha=0.0)`` outlines the mask.
    """
    size = (int(frame.shape[0]), int(frame.shape[1]))
    picture = attention_overlay(frame, upsample_attention(attn_map, size, upsample), alpha)
    keep = mass_threshold(attn_map, mass)
    mask = (upsample_attention(keep, size, "nearest") > 0.5).cpu().numpy().astype(np.uint8)
    return picture, mask
