"""A first-frame object mask derived from the class-token attention, without annotation.

:func:`auto_start_mask` thresholds the heads' mean attention (:mod:`dinotrack.models.attention`),
optionally restricted to a box and refined by k-means on the patch features, and keeps the
largest component per object; :class:`AutoStart` holds its settings and is accepted by
:meth:`dinotrack.Tracker.track` in place of a first mask.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from dinotrack.config import DEFAULT_MASS
from dinotrack.errors import InputError
from dinotrack.io.masks import resize_mask
from dinotrack.models.attention import mass_threshold, normalize_attention

Box = tuple[int, int, int, int]


def check_box(box: Box, frame_size: tuple[int, int]) -> Box:
    """Checks that ``box`` lies inside a frame of ``(H, W)``; returns it as ints.

    Raises:
        ValueError: The box is empty or reaches outside the frame.
    """
    height, width = frame_size
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InputError(
            f"box {x0},{y0},{x1},{y1} does not fit the {width}x{height} frame: need "
            f"0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
        )
    return x0, y0, x1, y1


def box_patches(box: Box, frame_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """The patches of a ``grid`` over the frame whose centres fall inside ``box``.

    A box smaller than a patch selects the patch under its centre.

    Args:
        box: ``(x0, y0, x1, y1)`` pixels, ``x1`` and ``y1`` exclusive.
        frame_size: ``(H, W)`` of the frame.
        grid: ``(h, w)`` patches covering the frame.

    Returns:
        ``[h, w]`` bool.
    """
    (height, width), (gh, gw) = frame_size, grid
    x0, y0, x1, y1 = check_box(box, frame_size)
    ys = (np.arange(gh) + 0.5) * height / gh
    xs = (np.arange(gw) + 0.5) * width / gw
    inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    if not inside.any():
        row = min(int((y0 + y1) / 2 * gh / height), gh - 1)
        col = min(int((x0 + x1) / 2 * gw / width), gw - 1)
        inside[row, col] = True
    return inside


def kmeans(points: Tensor, k: int, *, iterations: int = 50, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Spherical k-means (cosine similarity) with k-means++ seeding.

    Args:
        points: ``[N, C]`` feature vectors, N >= k.
        k: Number of clusters, >= 1.
        iterations: Most Lloyd iterations (stops early when assignments settle).
        seed: Seed of the initial centres; the same seed gives the same clusters.

    Returns:
        ``(labels, centres)``: ``[N]`` int64 cluster indices in ``0..k-1`` and ``[k, C]``
        float32 unit centres, both on the CPU.

    Raises:
        ValueError: ``k < 1`` or fewer points than clusters.
    """
    if k < 1 or points.shape[0] < k:
        raise InputError(f"cannot make {k} clusters of {points.shape[0]} points")
    x = F.normalize(points.detach().float().cpu(), dim=1)
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(x), (1,), generator=generator))]
    for _ in range(1, k):
        distance = (1.0 - (x @ x[chosen].T).max(1).values).clamp_min(0.0)
        weights = distance**2 if distance.sum() > 0 else torch.ones(len(x))
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
    centres = x[chosen].clone()
    labels = torch.full((len(x),), -1, dtype=torch.int64)
    for _ in range(iterations):
        new_labels = (x @ centres.T).argmax(1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        filled = torch.bincount(labels, minlength=k) > 0  # an empty cluster keeps its centre
        centres[filled] = F.normalize(sums[filled], dim=1)
    return labels, centres


def _largest_component(region: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``region`` (ties: most ``weight``)."""
    labels, count = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return labels > 0
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    masses = np.bincount(labels.ravel(), weights=weight.ravel(), minlength=count + 1)[1:]
    best = max(range(count), key=lambda i: (areas[i], masses[i]))
    return labels == best + 1


def auto_start_mask(
    attn: Tensor,
    feats: Tensor,
    frame_size: tuple[int, int],
    *,
    mass: float = DEFAULT_MASS,
    objects: int = 1,
    box: Box | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A first-frame object mask derived from the class-token attention, without labels.

    1. The heads' renormalised maps are averaged; within the region (the whole frame, or
       the patches whose centres fall inside ``box``) the mean map is renormalised again and
       the smallest set of patches holding ``mass`` of it is the attention foreground.
    2. With a ``box``, the region's patch features are also split in two by k-means; the
       cluster with the higher mean attention is the feature foreground, and the object is
       the patches that both call foreground (the attention foreground alone if they share
       none).
    3. One object: the largest 8-connected component of the foreground. ``objects = N``:
       the foreground patches' features are clustered by k-means into N groups, and each
       group keeps its largest component; ids 1..N are given by decreasing attention mass.
    4. The patch mask is resized to the frame (nearest) and, with a ``box``, cut to it.

    Args:
        attn: ``[heads, h, w]`` class-token attention of the first frame (raw or
            renormalised).
        feats: ``[C, h, w]`` patch features of the same forward pass.
        frame_size: ``(H, W)`` of the frame.
        mass: Share of the attention mass the foreground holds, in (0, 1].
        objects: Number of objects to find, >= 1.
        box: ``(x0, y0, x1, y1)`` pixels (``x1``, ``y1`` exclusive) the start is restricted
            to, or None for the whole frame.
        seed: Seed of the k-means initialisation.

    Returns:
        ``[H, W]`` uint8 object ids (0 = background): 1 alone, or ``1..objects`` (fewer
        when k-means leaves a cluster empty), every id present.

    Raises:
        ValueError: Mismatched grids, a bad ``mass``, ``objects`` or ``box``, or fewer
            foreground patches than objects.
    """
    if attn.dim() != 3 or feats.dim() != 3 or attn.shape[-2:] != feats.shape[-2:]:
        raise InputError(
            f"attention [heads, h, w] {tuple(attn.shape)} and features [C, h, w] "
            f"{tuple(feats.shape)} must cover the same patch grid"
        )
    if not isinstance(objects, int) or not 1 <= objects <= 255:
        raise InputError(f"the number of objects must be an integer in 1..255, got {objects!r}")
    grid = (int(attn.shape[-2]), int(attn.shape[-1]))
    mean = normalize_attention(attn).mean(0).cpu()
    region = torch.ones(grid, dtype=torch.bool)
    if box is not None:
        box = check_box(box, frame_size)
        region = torch.from_numpy(box_patches(box, frame_size, grid))
    foreground = mass_threshold(mean * region, mass) & region
    points = feats.detach().float().cpu().permute(1, 2, 0)  # [h, w, C]
    if box is not None and int(region.sum()) >= 2:
        labels, _ = kmeans(points[region], 2, seed=seed)
        region_mean = mean[region]
        fg_cluster = max(
            range(2), key=lambda c: float(region_mean[labels == c].mean().nan_to_num(-1))
        )
        feature_fg = torch.zeros(grid, dtype=torch.bool)
        feature_fg[region] = labels == fg_cluster
        if (foreground & feature_fg).any():
            foreground &= feature_fg
    weight = mean.numpy()
    fg = foreground.numpy()
    ids = np.zeros(grid, dtype=np.uint8)
    if objects == 1:
        ids[_largest_component(fg, weight)] = 1
    else:
        count = int(fg.sum())
        if count < objects:
            raise InputError(
                f"the attention foreground holds {count} patches, too few for {objects} "
                "objects; ask for fewer objects, a larger mass or a larger short_side",
                parameter="short_side",
            )
        labels, _ = kmeans(points[foreground], objects, seed=seed)
        parts = []
        for cluster in range(objects):
            members = np.zeros(grid, dtype=bool)
            members[fg] = (labels == cluster).numpy()
            if members.any():
                part = _largest_component(members, weight)
                parts.append((float(weight[part].sum()), part))
        for index, (_, part) in enumerate(sorted(parts, key=lambda p: -p[0]), start=1):
            ids[part] = index
    mask = resize_mask(ids, *frame_size).astype(np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        inside = np.zeros(frame_size, dtype=bool)
        inside[y0:y1, x0:x1] = True
        mask[~inside] = 0
    return mask


@dataclass(frozen=True)
class AutoStart:
    """Settings of an annotation-free start, usable as the first mask of a track.

    ``Tracker.track(video, AutoStart(objects=2))`` derives the first mask from the first
    frame's attention and features (one forward pass for both) with :func:`auto_start_mask`.

    Attributes:
        mass: Share of the attention mass the foreground holds, in (0, 1].
        objects: Number of objects to find.
        box: ``(x0, y0, x1, y1)`` pixels restricting the start, or None.
        seed: Seed of the k-means initialisation.
    """

    mass: float = DEFAULT_MASS
    objects: int = 1
    box: Box | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.mass <= 1.0:
            raise InputError(f"the attention mass must be in (0, 1], got {self.mass}")
        if not isinstance(self.objects, int) or not 1 <= self.objects <= 255:
            raise InputError(f"objects must be an integer in 1..255, got {self.objects!r}")

    def __call__(self, frame: np.ndarray, feats: Tensor, attn: Tensor) -> np.ndarray:
        """The start mask of ``frame`` (``[H, W, 3]``) from its features ``[C, h, w]`` and
        attention ``[heads, h, w]``; ``[H, W]`` uint8 ids."""
        frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        return auto_start_mask(attn, feats, frame_size, **dataclasses.asdict(self))
