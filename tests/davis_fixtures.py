"""Helpers shared by the eval tests: tiny DAVIS trees on disk and the shared data location."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.data.location import data_path

_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128] + [255] * (
    256 * 3 - 18
)


def require_data(name: str) -> Path:
    """Path of a shared data set, or skip the test saying what is missing."""
    path = data_path(name)
    if not path.is_dir():
        pytest.skip(f"shared data {path} is absent (set DINOTRACK_DATA to the data folder)")
    return path


def write_palette_png(path: Path, ids: np.ndarray) -> None:
    """Write ``ids`` ([H, W] uint8) as a palette PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(ids, dtype=np.uint8))
    image.putpalette(_PALETTE)
    image.save(path)


def write_gray_png(path: Path, values: np.ndarray) -> None:
    """Write ``values`` ([H, W] uint8) as an 8-bit grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint8)).save(path)


def write_davis(
    root: Path,
    sequences: dict[str, np.ndarray],
    *,
    split: str = "val",
    layout: str = "2017",
    images: bool = False,
) -> Path:
    """Write a small DAVIS tree.

    Args:
        root: Dataset root to create.
        sequences: Name -> uint8 ids ``[T, H, W]``.
        split: Split name.
        layout: ``"2017"`` (palette PNGs, ImageSets/2017), ``"2016"`` (0/255 grayscale,
            ImageSets/2016 names) or ``"2016-paths"`` (0/255, ImageSets/480p path lines).
        images: Also write random JPEG frames.

    Returns:
        ``root``.
    """
    lines = []
    for name, ids in sequences.items():
        for t, frame in enumerate(ids):
            png = root / "Annotations" / "480p" / name / f"{t:05d}.png"
            if layout == "2017":
                write_palette_png(png, frame)
            else:
                write_gray_png(png, np.where(frame > 0, 255, 0))
            if images:
                jpg = root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg"
                jpg.parent.mkdir(parents=True, exist_ok=True)
                rgb = np.random.default_rng(t).integers(0, 255, (*frame.shape, 3), np.uint8)
                Image.fromarray(rgb).save(jpg)
            if layout == "2016-paths":
                lines.append(
                    f"/JPEGImages/480p/{name}/{t:05d}.jpg /Annotations/480p/{name}/{t:05d}.png"
                )
        if layout != "2016-paths":
            lines.append(name)
    folder = {"2017": "2017", "2016": "2016", "2016-paths": "480p"}[layout]
    split_file = root / "ImageSets" / folder / f"{split}.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text("\n".join(lines) + "\n")
    return root


def write_results(folder: Path, sequences: dict[str, np.ndarray]) -> Path:
    """Write result palette PNGs ``<folder>/<seq>/NNNNN.png``; returns ``folder``."""
    for name, ids in sequences.items():
        for t, frame in enumerate(ids):
            write_palette_png(folder / name / f"{t:05d}.png", frame)
    return folder


def blob_sequence(
    num_frames: int = 6, height: int = 40, width: int = 56, num_objects: int = 2, seed: int = 0
) -> np.ndarray:
    """Moving rectangles: uint8 ids ``[T, H, W]`` with objects 1..num_objects."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((num_frames, height, width), np.uint8)
    for k in range(1, num_objects + 1):
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        h, w = rng.integers(5, height // 2), rng.integers(5, width // 2)
        dy, dx = rng.integers(-2, 3, size=2)
        for t in range(num_frames):
            yy, xx = int(np.clip(y + t * dy, 0, height - h)), int(np.clip(x + t * dx, 0, width - w))
            ids[t, yy : yy + h, xx : xx + w] = k
    return ids
