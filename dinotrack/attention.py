"""Class-token attention of the last ViT block: maps, mass thresholds, pictures, start masks.

DINO's class token attends, in the last block, to the main objects of the scene (Caron et al.
2021, Figure 1). :meth:`dinotrack.features.FeatureExtractor.forward` returns that attention
from the same forward pass as the patch features; this module turns it into:

- maps per head and their mean, each a probability distribution over the patches
  (:func:`normalize_attention`), upsampled to the frame (:func:`upsample_attention`);
- the smallest set of patches holding a given share of a map's mass, 60% by default as in
  the paper's figures (:func:`mass_threshold`);
- coloured overlays of a map on its frame (:func:`attention_overlay`);
- a first-frame object mask derived without annotation (:func:`auto_start_mask`, and
  :class:`AutoStart`, which :meth:`dinotrack.Tracker.track` accepts in place of a mask).

About the mass: the softmax of the class token's query runs over every token, the prefix
tokens (the class token itself, and any register tokens) included, so the patch part of a head
sums to 1 minus the prefix tokens' share, a different amount per head and per image. Every map
here is renormalised over the patches first, so "60% of the mass" means 60% of the attention
given to patches.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from dinotrack.config import DEFAULT_MASS, UPSAMPLE_MODES
from dinotrack.masks import resize_mask

Box = tuple[int, int, int, int]

# Five stops of the viridis colour map (dark blue -> yellow), linearly interpolated.
_COLOUR_STOPS = np.array(
    [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float32
)


def normalize_attention(attn: Tensor) -> Tensor:
    """Renormalises attention maps so that each sums to 1 over its patches.

    Args:
        attn: ``[..., h, w]`` non-negative attention of the class token to the patches (e.g.
            ``[B, heads, h/p, w/p]`` from ``FeatureExtractor.forward(..., attention=True)``),
            whose sums are below 1 because the prefix tokens took the rest.

    Returns:
        ``[..., h, w]`` float32, each map divided by its sum over the last two dimensions.
    """
    attn = attn.float()
    total = attn.sum(dim=(-2, -1), keepdim=True)
    return attn / total.clamp_min(torch.finfo(torch.float32).tiny)


def mass_threshold(attn: Tensor, mass: float = DEFAULT_MASS) -> Tensor:
    """The smallest set of patches holding at least ``mass`` of each map's attention.

    Patches are taken from the most attended down until their summed share reaches
    ``mass``; no smaller set can hold as much. Shares are computed in float64 after
    renormalising each map over its patches (see the module docstring). Among patches of
    exactly equal attention at the cut, the one earlier in raster order is kept.

    Args:
        attn: ``[..., h, w]`` non-negative attention maps (any scale).
        mass: Share of the mass to keep, in (0, 1].

    Returns:
        ``[..., h, w]`` bool, True for the kept patches.

    Raises:
        ValueError: ``mass`` outside (0, 1], or negative or all-zero maps.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"the attention mass to keep must be in (0, 1], got {mass}")
    flat = attn.detach().flatten(-2).double()
    if flat.shape[-1] == 0:
        raise ValueError("cannot threshold an empty attention map")
    if (flat < 0).any() or not (flat.sum(-1) > 0).all():
        raise ValueError("attention maps must be non-negative with a positive sum")
    flat = flat / flat.sum(-1, keepdim=True)
    values, order = flat.sort(dim=-1, descending=True, stable=True)
    cumulative = values.cumsum(-1)
    before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    keep_sorted = before < mass  # a prefix: the patches needed before the mass is reached
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return keep.reshape(attn.shape)


def upsample_attention(attn: Tensor, size: tuple[int, int], mode: str = "nearest") -> Tensor:
    """Resizes patch-level maps to an image size.

    Args:
        attn: ``[..., h, w]`` maps.
        size: Output ``(H, W)``, usually the frame's.
        mode: ``"nearest"`` (each patch a flat block, as the DINO figures; an output pixel
            takes the patch under its centre, as :func:`dinotrack.masks.resize_mask` does
            except maybe for a centre exactly on a patch border) or ``"bilinear"`` (smooth,
            ``align_corners=False``).

    Returns:
        ``[..., H, W]`` float32. Values are resampled, not renormalised.

    Raises:
        ValueError: Unknown mode.
    """
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsampling mode {mode!r}; choose one of {UPSAMPLE_MODES}")
    lead, grid = attn.shape[:-2], attn.shape[-2:]
    flat = attn.float().reshape(-1, 1, *grid)
    if mode == "nearest":  # the source pixel under each output pixel's centre, as PIL
        out = F.interpolate(flat, size=tuple(size), mode="nearest-exact")
    else:
        out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


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
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if frame.ndim != 3 or tuple(frame.shape[:2]) != tuple(values.shape):
        raise ValueError(
            f"the map {tuple(values.shape)} must have the frame's size {frame.shape[:2]}"
        )
    mixed = (1.0 - alpha) * frame.astype(np.float32) + alpha * colourize(values)
    return np.rint(mixed).astype(np.uint8)


def parse_box(text: str) -> Box:
    """Parses ``"x0,y0,x1,y1"`` (pixels) into a box.

    Raises:
        ValueError: Not four integers, or not ``x0 < x1`` and ``y0 < y1``.
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        x0, y0, x1, y1 = (int(part) for part in parts)
    except ValueError:
        raise ValueError(
            f"box {text!r} must be four integers x0,y0,x1,y1 (pixels, e.g. 100,50,400,300)"
        ) from None
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"box {text!r} must have x0 < x1 and y0 < y1 (corners, in pixels)")
    return x0, y0, x1, y1


def check_box(box: Box, frame_size: tuple[int, int]) -> Box:
    """Checks that ``box`` lies inside a frame of ``(H, W)``; returns it as ints.

    Raises:
        ValueError: The box is empty or reaches outside the frame.
    """
    height, width = frame_size
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
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
        raise ValueError(f"cannot make {k} clusters of {points.shape[0]} points")
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
        raise ValueError(
            f"attention [heads, h, w] {tuple(attn.shape)} and features [C, h, w] "
            f"{tuple(feats.shape)} must cover the same patch grid"
        )
    if not isinstance(objects, int) or not 1 <= objects <= 255:
        raise ValueError(f"the number of objects must be an integer in 1..255, got {objects!r}")
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
            raise ValueError(
                f"the attention foreground holds {count} patches, too few for {objects} "
                "objects; ask for fewer objects, a larger mass or a larger --short-side"
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
            raise ValueError(f"the attention mass must be in (0, 1], got {self.mass}")
        if not isinstance(self.objects, int) or not 1 <= self.objects <= 255:
            raise ValueError(f"objects must be an integer in 1..255, got {self.objects!r}")

    def __call__(self, frame: np.ndarray, feats: Tensor, attn: Tensor) -> np.ndarray:
        """The start mask of ``frame`` (``[H, W, 3]``) from its features ``[C, h, w]`` and
        attention ``[heads, h, w]``; ``[H, W]`` uint8 ids."""
        frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        return auto_start_mask(attn, feats, frame_size, **dataclasses.asdict(self))
