"""Clicks and boxes to a mask, from the backbone's patch features.

How a mask grows (:func:`click_mask`):

1. Seeds on the patch grid: the patches under the positive clicks; without any, the middle
   third of the box, or else the patches the object's current mask covers (so negative clicks
   can trim a mask made otherwise).
2. Patch scores: each patch's cosine similarity (L2-normalised features, as the tracker
   compares them) to its most similar clicked patch (to the seed region on average), minus a
   threshold: Otsu's split of those similarities over the box's patches, or over the frame's
   without a box ("like the clicks" and "not"). A negative click caps the score of every patch
   at its margin over its similarity to the most similar negative click: what looks more like
   a negative click than like the positive ones is out. Patches outside the box are out.
3. Pixel edges. The score map is upsampled bilinearly to the frame and smoothed by a colour
   guided filter (He, Sun and Tang, "Guided Image Filtering", TPAMI 2013) with the frame as
   the guide: the output is locally an affine function of the pixel colours, so the object's
   border snaps to the colour edges near the patch border instead of following the 16 px
   staircase of the patch grid. The filter's coefficients are computed at a reduced size and
   upsampled (the "fast guided filter"), which keeps a click well under a second on a CPU.
4. The mask is the positive part, restricted to the box, keeping only the connected parts that
   hold a seed.

How good it is follows the backbone: features that separate objects (the official DINO
weights) give masks that follow objects; the small shipped ``dinotrack_vitt16_v3`` gives
coarse masks on clean, contrasted objects and leaks on cluttered scenes, so add negative
clicks or correct with the brush; the random test backbones separate little more than colours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from dinotrack.errors import InputError

__all__ = ["check_clicks", "click_mask", "guided_filter"]

GUIDE_SIDE = 240
"""Short side at which the guided filter's coefficients are computed."""

GUIDE_EPS = 1e-3
"""The guided filter's regularisation (colours in [0, 1]): edges weaker than about
sqrt(eps) = 0.03 in colour are smoothed over."""


def check_clicks(
    points: Sequence[Sequence[float]],
    labels: Sequence[int],
    box: Sequence[float] | None,
    frame_size: tuple[int, int],
) -> tuple[list[tuple[float, float]], list[int], tuple[float, float, float, float] | None]:
    """Clicks and a box, checked against a frame of ``frame_size`` ``(H, W)``.

    Returns:
        The points as ``(x, y)`` floats, the labels as 0/1 ints, the box as a 4-tuple or None.

    Raises:
        ValueError: A point that is not two numbers or lies outside the frame, a label other
            than 0 or 1, as many labels as points, a box that is not ``x0 < x1, y0 < y1``
            inside the frame.
    """
    height, width = frame_size
    checked = []
    for point in points:
        try:
            x, y = (float(v) for v in point)
        except (TypeError, ValueError):
            raise InputError(f"a click must be two numbers x, y (pixels), got {point!r}") from None
        if not (0 <= x < width and 0 <= y < height):
            raise InputError(
                f"click ({x:g}, {y:g}) is outside the frame ({width}x{height}: x from 0 to "
                f"{width - 1}, y from 0 to {height - 1})"
            )
        checked.append((x, y))
    labels = list(labels)
    if len(labels) != len(checked):
        raise InputError(f"{len(checked)} clicks but {len(labels)} labels; give one label each")
    if any(label not in (0, 1) or isinstance(label, float) for label in labels):
        raise InputError(f"click labels must be 1 (positive) or 0 (negative), got {labels}")
    if box is not None:
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise InputError(f"a box must be four numbers x0, y0, x1, y1, got {box!r}") from None
        if not (x0 < x1 and y0 < y1):
            raise InputError("a box must have x0 < x1 and y0 < y1 (corners, in pixels)")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise InputError(
                f"the box {x0:g},{y0:g},{x1:g},{y1:g} is not inside the frame ({width}x{height}: "
                f"x from 0 to {width}, y from 0 to {height})"
            )
        box = (x0, y0, x1, y1)
    if not checked and box is None:
        raise InputError("give at least one click or a box")
    return checked, [int(label) for label in labels], box


def click_mask(
    frame: np.ndarray,
    feats: Tensor,
    points: Sequence[tuple[float, float]],
    labels: Sequence[int],
    box: tuple[float, float, float, float] | None = None,
    current: np.ndarray | None = None,
) -> np.ndarray:
    """An object's mask from clicks and/or a box (see the module docstring for how).

    Args:
        frame: ``[H, W, 3]`` uint8 RGB frame.
        feats: ``[C, h, w]`` patch features of the frame (any float dtype, any device).
        points: ``(x, y)`` pixel coordinates, checked with :func:`check_clicks`.
        labels: Per point, 1 positive or 0 negative.
        box: ``(x0, y0, x1, y1)`` pixels, or None.
        current: ``[H, W]`` bool, the object's current mask, the seeds when there is neither
            a positive click nor a box.

    Returns:
        ``[H, W]`` bool mask.

    Raises:
        ValueError: Nothing to grow from (negative clicks only, and no current mask).
    """
    height, width = frame.shape[:2]
    unit = F.normalize(feats.detach().float().cpu(), dim=0)
    channels, grid_h, grid_w = unit.shape

    def cell(x: float, y: float) -> int:
        row = min(int(y * grid_h / height), grid_h - 1)
        col = min(int(x * grid_w / width), grid_w - 1)
        return row * grid_w + col

    positive = [cell(x, y) for (x, y), label in zip(points, labels, strict=True) if label == 1]
    negative = [cell(x, y) for (x, y), label in zip(points, labels, strict=True) if label == 0]
    flat = unit.reshape(channels, -1)
    population = torch.ones(grid_h * grid_w, dtype=torch.bool)  # where the threshold is chosen
    if box is not None:
        population = torch.from_numpy(_box_cells(box, (height, width), (grid_h, grid_w)).ravel())
    if positive:
        like = (flat.T @ flat[:, positive]).max(dim=1).values
    else:  # a region: the middle of the box, or the object's current mask
        if box is not None:
            region = _middle_third(box, (height, width), (grid_h, grid_w))
        elif current is not None:
            region = _cells_covered(current, (grid_h, grid_w))
        else:
            raise InputError(
                "nothing to grow the mask from: give a positive click or a box (negative "
                "clicks only remove from an object that has a mask)"
            )
        positive = np.flatnonzero(region).tolist()
        like = (flat.T @ flat[:, positive]).mean(dim=1)
    score = like - _otsu(like[population].numpy())
    if negative:
        score = torch.minimum(score, like - (flat.T @ flat[:, negative]).max(dim=1).values)
    score[~population] = -1.0
    score = score.reshape(1, 1, grid_h, grid_w)
    fine = F.interpolate(score, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    refined = guided_filter(frame, fine.numpy())
    mask = refined > 0
    if box is not None:
        x0, y0, x1, y1 = (round(v) for v in box)
        keep = np.zeros_like(mask)
        keep[y0:y1, x0:x1] = True
        mask &= keep
    return _seeded_components(mask, positive, (grid_h, grid_w), (height, width), fine.numpy())


def guided_filter(
    frame: np.ndarray, values: np.ndarray, radius: int | None = None, eps: float = GUIDE_EPS
) -> np.ndarray:
    """``values`` ``[H, W]`` smoothed along the colour edges of ``frame`` ``[H, W, 3]`` uint8:
    the colour guided filter, its coefficients computed at a short side of
    :data:`GUIDE_SIDE` and upsampled bilinearly.

    Args:
        frame: The guide image.
        values: The float map to filter.
        radius: Window radius in pixels of the reduced image (default: ~1/60 of its short
            side, about half a patch).
        eps: Regularisation: larger smooths more across weak edges.

    Returns:
        ``[H, W]`` float32.
    """
    height, width = values.shape
    scale = min(1.0, GUIDE_SIDE / min(height, width))
    small = (max(1, round(height * scale)), max(1, round(width * scale)))
    guide_full = torch.from_numpy(np.array(frame)).permute(2, 0, 1).float() / 255.0
    guide = F.interpolate(guide_full[None], size=small, mode="area")[0].numpy()
    target = F.interpolate(torch.from_numpy(values)[None, None].float(), size=small, mode="area")[
        0, 0
    ].numpy()
    r = radius if radius is not None else max(2, round(min(small) / 60))
    size = 2 * r + 1

    def mean(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, size=size, mode="reflect")

    mean_i = [mean(c) for c in guide]
    mean_p = mean(target)
    cov_ip = [mean(c * target) - m * mean_p for c, m in zip(guide, mean_i, strict=True)]
    var = [[mean(guide[i] * guide[j]) - mean_i[i] * mean_i[j] for j in range(3)] for i in range(3)]
    for i in range(3):
        var[i][i] = var[i][i] + eps
    sigma = np.stack([np.stack(row, -1) for row in var], -2)  # [h, w, 3, 3]
    a = np.linalg.solve(sigma, np.stack(cov_ip, -1)[..., None])[..., 0]  # [h, w, 3]
    b = mean_p - sum(a[..., c] * mean_i[c] for c in range(3))
    mean_a = np.stack([mean(a[..., c]) for c in range(3)])
    mean_b = mean(b)
    coeffs = torch.from_numpy(np.concatenate([mean_a, mean_b[None]]))[None].float()
    coeffs = F.interpolate(coeffs, size=(height, width), mode="bilinear", align_corners=False)[0]
    out = (coeffs[:3] * guide_full).sum(0) + coeffs[3]
    return out.numpy()


def _box_cells(
    box: tuple[float, float, float, float], frame_size: tuple[int, int], grid: tuple[int, int]
) -> np.ndarray:
    """``[h, w]`` bool: the patches whose centre lies in the box widened by half a patch on
    every side (those that overlap it)."""
    height, width = frame_size
    x0, y0, x1, y1 = box
    ph, pw = height / grid[0], width / grid[1]
    ys = (np.arange(grid[0]) + 0.5) * ph
    xs = (np.arange(grid[1]) + 0.5) * pw
    in_y = (ys >= y0 - ph / 2) & (ys <= y1 + ph / 2)
    in_x = (xs >= x0 - pw / 2) & (xs <= x1 + pw / 2)
    return in_y[:, None] & in_x[None, :]


def _middle_third(
    box: tuple[float, float, float, float], frame_size: tuple[int, int], grid: tuple[int, int]
) -> np.ndarray:
    """``[h, w]`` bool: the patches whose centre lies in the middle third of the box (at
    least the patch under its centre)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    middle = (x0 + w / 3, y0 + h / 3, x1 - w / 3, y1 - h / 3)
    ph, pw = frame_size[0] / grid[0], frame_size[1] / grid[1]
    ys = (np.arange(grid[0]) + 0.5) * ph
    xs = (np.arange(grid[1]) + 0.5) * pw
    in_y = (ys >= middle[1]) & (ys <= middle[3])
    in_x = (xs >= middle[0]) & (xs <= middle[2])
    cells = in_y[:, None] & in_x[None, :]
    if not cells.any():
        cells[
            min(int((y0 + y1) / 2 * grid[0] / frame_size[0]), grid[0] - 1),
            min(int((x0 + x1) / 2 * grid[1] / frame_size[1]), grid[1] - 1),
        ] = True
    return cells


def _cells_covered(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` bool: the patches at least half covered by ``mask`` (at least one patch,
    the most covered, when the mask is not empty)."""
    cover = F.interpolate(
        torch.from_numpy(mask.astype(np.float32))[None, None], size=grid, mode="area"
    )[0, 0].numpy()
    cells = cover >= 0.5
    if not cells.any() and cover.max() > 0:
        cells = cover == cover.max()
    return cells


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``values``: the split that maximises the between-class variance."""
    ordered = np.sort(values.astype(np.float64))
    n = len(ordered)
    if n < 2 or ordered[0] == ordered[-1]:
        return float(ordered[0]) - 1e-6
    cumulative = np.cumsum(ordered)
    counts = np.arange(1, n)
    mean_low = cumulative[:-1] / counts
    mean_high = (cumulative[-1] - cumulative[:-1]) / (n - counts)
    between = counts * (n - counts) * (mean_high - mean_low) ** 2
    split = int(np.argmax(between))
    return float((ordered[split] + ordered[split + 1]) / 2)


def _seeded_components(
    mask: np.ndarray,
    seeds: list[int],
    grid: tuple[int, int],
    frame_size: tuple[int, int],
    coarse: np.ndarray,
) -> np.ndarray:
    """The connected parts of ``mask`` that hold a seed patch's centre; where the edge
    refinement removed a seed's centre, the part of the unrefined ``coarse > 0`` holding it
    is added, so every positive seed keeps its patch."""
    height, width = frame_size
    centres = [
        (
            min(int((s // grid[1] + 0.5) * height / grid[0]), height - 1),
            min(int((s % grid[1] + 0.5) * width / grid[1]), width - 1),
        )
        for s in seeds
    ]
    parts, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    keep = {parts[y, x] for y, x in centres} - {0}
    out = np.isin(parts, list(keep)) if keep else np.zeros_like(mask)
    lost = [(y, x) for y, x in centres if parts[y, x] == 0]
    if lost:
        coarse_parts, _ = ndimage.label(coarse > 0, structure=np.ones((3, 3), bool))
        extra = {coarse_parts[y, x] for y, x in lost} - {0}
        out |= np.isin(coarse_parts, list(extra))
    return out
