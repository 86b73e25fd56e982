"""Small synthetic clips for the tracker tests."""

from __future__ import annotations

import numpy as np


def moving_square_video(n=6, height=72, width=120):
    """Textured background with two squares (ids 3 and 7) moving right by 4 px per frame.

    Returns:
        ``n`` ``[height, width, 3]`` uint8 frames and their ``[height, width]`` uint8 masks.
    """
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    frames, masks = [], []
    for t in range(n):
        frame, mask = background.copy(), np.zeros((height, width), np.uint8)
        for obj, (y, x, colour) in {3: (10, 10, 250), 7: (40, 60, 5)}.items():
            frame[y : y + 24, x + 4 * t : x + 4 * t + 24] = colour
            mask[y : y + 24, x + 4 * t : x + 4 * t + 24] = obj
        frames.append(frame)
        masks.append(mask)
    return frames, masks


def moving_square_folder(folder, n=10):
    """:func:`moving_square_video` written as a frames folder of PNGs (``00000.png``, ...).

    Returns:
        The ``n`` masks.
    """
    from PIL import Image

    frames, masks = moving_square_video(n=n)
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    return masks
