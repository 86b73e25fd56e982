"""Region (J) and boundary (F) measures of the DAVIS semi-supervised benchmark.

Pure functions on numpy arrays, no I/O. The semantics are those of the official DAVIS-2017
evaluation (``davis2017-evaluation``):

* J is the intersection over union of a predicted and a true object mask; an empty union
  scores 1.
* F is the boundary F-measure. A mask's boundary is a one-pixel map: a pixel is on it where
  the mask differs from the pixel's right, lower or lower-right neighbour, a neighbour outside
  the image counting as equal (so the last row compares only to the right, the last column only
  downwards, and the bottom-right pixel is never on it). A boundary pixel is matched when the
  other boundary, dilated by a disk of radius ``ceil(0.008 * sqrt(H**2 + W**2))`` (the pixels
  with ``dx**2 + dy**2 <= r**2``), covers it. Precision is the matched share of the predicted
  boundary, recall that of the true boundary, ``F = 2PR / (P + R)``; no boundary on either side
  gives P = R = 1, an empty prediction P = 1 and R = 0, an empty truth P = 0 and R = 1, and
  ``P + R = 0`` gives F = 0.
* Per object, over the scored frames: mean (NaN-aware), recall (share of frames above 0.5) and
  decay (mean of the first quarter minus mean of the last quarter).

The fast path works on label images: it finds every object's boundary pixels from one pass of
neighbour comparisons, and tests each boundary pixel against the other boundary with one
lookup per disk row in row-wise prefix sums (over the boundaries' bounding box), so its cost
grows with the boundary length rather than with the frame area times the disk area.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from dinotrack.errors import InputError

__all__ = [
    "BOUNDARY_THRESHOLD",
    "Statistics",
    "boundary_f_measure",
    "boundary_map",
    "boundary_tolerance",
    "disk",
    "f_measure_from_points",
    "jaccard",
    "label_boundary_points",
    "label_frame_scores",
    "statistics",
]

BOUNDARY_THRESHOLD = 0.008
"""Boundary tolerance as a fraction of the image diagonal (the DAVIS default)."""


def boundary_tolerance(height: int, width: int, bound_th: float = BOUNDARY_THRESHOLD) -> int:
    """Radius in pixels of the disk within which boundary pixels match.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        bound_th: A fraction of the image diagonal when below 1, else a radius in pixels.

    Returns:
        ``ceil(bound_th * sqrt(height**2 + width**2))``, or ``ceil(bound_th)`` when
        ``bound_th >= 1``; for 480x854 frames this is 8.
    """
    if bound_th <= 0:
        raise InputError(f"bound_th must be positive, got {bound_th}")
    if bound_th >= 1:
        return int(math.ceil(bound_th))
    return int(np.ceil(bound_th * np.linalg.norm([height, width])))


def disk(radius: int) -> np.ndarray:
    """Disk structuring element: the offsets with ``dx**2 + dy**2 <= radius**2``.

    Args:
        radius: Non-negative radius in pixels.

    Returns:
        Bool array ``[2 * radius + 1, 2 * radius + 1]``.
    """
    if radius < 0:
        raise InputError(f"radius must be non-negative, got {radius}")
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def jaccard(true_masks: np.ndarray, pred_masks: np.ndarray) -> np.ndarray:
    """Region similarity J: intersection over union, 1 where the union is empty.

    Args:
        true_masks: Bool (or 0/1) array ``[..., H, W]``, the annotation.
        pred_masks: Array of the same shape, the prediction.

    Returns:
        Float64 array ``[...]`` of values in [0, 1].
    """
    _check_same_shape(true_masks, pred_masks)
    true_masks = true_masks.astype(bool, copy=False)
    pred_masks = pred_masks.astype(bool, copy=False)
    inter = np.count_nonzero(true_masks & pred_masks, axis=(-2, -1))
    union = np.count_nonzero(true_masks | pred_masks, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    return np.where(union == 0, 1.0, j)


def boundary_map(masks: np.ndarray) -> np.ndarray:
    """One-pixel boundary maps of binary masks, as the DAVIS tools draw them.

    A pixel is on the boundary where the mask differs from its right, lower or lower-right
    neighbour; neighbours outside the image count as equal.

    Args:
        masks: Bool (or 0/1) array ``[..., H, W]``.

    Returns:
        Bool array ``[..., H, W]``.
    """
    masks = np.asarray(masks).astype(bool, copy=False)
    if masks.ndim < 2:
        raise InputError(f"masks must have shape [..., H, W], got {masks.shape}")
    bmap = np.zeros(masks.shape, dtype=bool)
    bmap[..., :, :-1] = masks[..., :, :-1] != masks[..., :, 1:]
    bmap[..., :-1, :] |= masks[..., :-1, :] != masks[..., 1:, :]
    bmap[..., :-1, :-1] |= masks[..., :-1, :-1] != masks[..., 1:, 1:]
    return bmap


def f_measure_from_points(true_points: np.ndarray, pred_points: np.ndarray, radius: int) -> float:
    """Boundary F-measure of two sets of boundary pixels.

    Args:
        true_points: Int array ``[N, 2]`` of (row, column) coordinates of the true boundary.
        pred_points: Int array ``[M, 2]`` of the predicted boundary.
        radius: Match tolerance in pixels (a disk, ``dx**2 + dy**2 <= radius**2``).

    Returns:
        F in [0, 1], with the official conventions for empty boundaries (see module docs).
    """
    n_true, n_pred = len(true_points), len(pred_points)
    if n_pred == 0 and n_true > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_true == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_true == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = _count_within(pred_points, true_points, radius) / float(n_pred)
        recall = _count_within(true_points, pred_points, radius) / float(n_true)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def boundary_f_measure(
    true_masks: np.ndarray, pred_masks: np.ndarray, bound_th: float = BOUNDARY_THRESHOLD
) -> np.ndarray:
    """Boundary F-measure of binary masks, frame by frame.

    Args:
        true_masks: Bool (or 0/1) array ``[..., H, W]``, the annotation.
        pred_masks: Array of the same shape, the prediction.
        bound_th: Tolerance as a fraction of the image diagonal (or pixels when >= 1).

    Returns:
        Float64 array ``[...]`` of F values in [0, 1].
    """
    _check_same_shape(true_masks, pred_masks)
    height, width = true_masks.shape[-2:]
    radius = boundary_tolerance(height, width, bound_th)
    true_b = boundary_map(true_masks).reshape(-1, height, width)
    pred_b = boundary_map(pred_masks).reshape(-1, height, width)
    out = np.empty(len(true_b))
    for i in range(len(true_b)):
        out[i] = f_measure_from_points(np.argwhere(true_b[i]), np.argwhere(pred_b[i]), radius)
    return out.reshape(true_masks.shape[:-2])


def label_boundary_points(labels: np.ndarray, num_objects: int) -> list[np.ndarray]:
    """Boundary pixels of the objects 1..K of a label image, all found in one pass.

    The boundary of object k is that of the binary mask ``labels == k``. A pixel lies on it
    exactly when its label differs from one of its right, lower or lower-right in-image
    neighbours and k is its own label or that neighbour's. Labels outside 1..K (background,
    255 void, objects that appear only later) are background for every object.

    Args:
        labels: Integer array ``[H, W]`` of object ids.
        num_objects: K, the number of objects.

    Returns:
        K int arrays ``[N_k, 2]`` of (row, column) coordinates, sorted row-major.
    """
    if labels.ndim != 2:
        raise InputError(f"labels must have shape [H, W], got {labels.shape}")
    height, width = labels.shape
    changed = np.zeros((height, width), dtype=bool)
    np.not_equal(labels[:, :-1], labels[:, 1:], out=changed[:, :-1])
    changed[:-1, :] |= labels[:-1, :] != labels[1:, :]
    changed[:-1, :-1] |= labels[:-1, :-1] != labels[1:, 1:]
    flat = np.flatnonzero(changed)
    rows, cols = np.divmod(flat, width)
    flat_labels = labels.reshape(-1)
    own = flat_labels[flat]
    # Neighbours outside the image count as equal: substitute the pixel's own label.
    has_right = cols < width - 1
    has_below = rows < height - 1
    right = np.where(has_right, flat_labels[np.where(has_right, flat + 1, flat)], own)
    below = np.where(has_below, flat_labels[np.where(has_below, flat + width, flat)], own)
    corner_ok = has_right & has_below
    below_right = np.where(corner_ok, flat_labels[np.where(corner_ok, flat + width + 1, flat)], own)
    points = np.stack([rows, cols], axis=1)
    result = []
    for k in range(1, num_objects + 1):
        on = (own == k) | (right == k) | (below == k) | (below_right == k)
        result.append(points[on])
    return result


def label_frame_scores(
    true_labels: np.ndarray,
    pred_labels: np.ndarray,
    num_objects: int,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of every object of one frame, from label images.

    Args:
        true_labels: Integer array ``[H, W]`` of annotated ids; ids outside 1..K (0, 255 void,
            objects that appear only later) are background.
        pred_labels: Integer array ``[H, W]`` of predicted ids in 0..K; ids absent from it are
            empty objects.
        num_objects: K; objects are 1..K.
        bound_th: Boundary tolerance as a fraction of the image diagonal.

    Returns:
        ``(j, f)``, two float64 arrays ``[K]``.
    """
    _check_same_shape(true_labels, pred_labels)
    if num_objects < 1:
        return np.zeros(0), np.zeros(0)
    if pred_labels.size and int(pred_labels.max()) > num_objects:
        raise InputError(
            f"predicted id {int(pred_labels.max())} is above the number of objects "
            f"{num_objects} (the largest id of the first annotation)"
        )
    height, width = true_labels.shape
    radius = boundary_tolerance(height, width, bound_th)
    window = _foreground_window(true_labels, pred_labels)
    if window is None:  # no object anywhere: empty unions and no boundaries
        return np.ones(num_objects), np.ones(num_objects)
    # Outside the window both images are background: it changes no count, and matching is
    # invariant to the shift of both boundaries.
    true_labels, pred_labels = true_labels[window], pred_labels[window]
    n = num_objects + 1
    # Joint histogram of (true id, predicted id); true ids above K are pooled into row K + 1.
    if n * (n + 1) <= 256 and true_labels.dtype == pred_labels.dtype == np.uint8:
        codes = np.minimum(true_labels, np.uint8(n))
        codes *= np.uint8(n)
        codes += pred_labels
    else:
        codes = np.minimum(true_labels, n).astype(np.intp) * n + pred_labels
    pair_counts = np.bincount(codes.reshape(-1), minlength=(n + 1) * n).reshape(n + 1, n)
    inter = np.diagonal(pair_counts)[1:n]
    union = pair_counts[1:n].sum(axis=1) + pair_counts[:, 1:n].sum(axis=0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        j = np.where(union == 0, 1.0, inter / union)

    true_points = label_boundary_points(true_labels, num_objects)
    pred_points = label_boundary_points(pred_labels, num_objects)
    f = np.array(
        [f_measure_from_points(t, p, radius) for t, p in zip(true_points, pred_points, strict=True)]
    )
    return j, f


@dataclass(frozen=True)
class Statistics:
    """Summary of one object's per-frame scores.

    Attributes:
        mean: Mean over the scored frames, NaNs ignored.
        recall: Share of the scored frames with a score above 0.5 (NaN counts as not above).
        decay: Mean of the first quarter of the frames minus mean of the last quarter.
    """

    mean: float
    recall: float
    decay: float


def statistics(values: np.ndarray) -> Statistics:
    """Mean, recall and decay of one object's per-frame scores, as the DAVIS tools compute them.

    The frames are split into four bins at ``round(linspace(1, N, 5) + 1e-10) - 1``, each bin
    including both its end indices; decay is the NaN-aware mean of the first bin minus that of
    the last. (The official tool casts these indices to uint8, which wraps around for sequences
    of more than 256 scored frames; we keep them exact. Every DAVIS sequence is shorter.)

    Args:
        values: Float array ``[N]`` of per-frame scores, N >= 1.

    Returns:
        The :class:`Statistics`.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise InputError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.mean(values > 0.5))
        ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.intp)
        first = values[ids[0] : ids[1] + 1]
        last = values[ids[3] : ids[4] + 1]
        decay = float(np.nanmean(first) - np.nanmean(last))
    return Statistics(mean=mean, recall=recall, decay=decay)


def _foreground_window(
    true_labels: np.ndarray, pred_labels: np.ndarray
) -> tuple[slice, slice] | None:
    """Smallest window that holds every non-zero pixel plus a one-pixel margin, or None.

    The margin (clipped to the image) keeps the boundary maps exact: a background pixel above
    or left of an object can be on its boundary, and the first background row below and column
    right of the objects supply the neighbours that the last object pixels differ from, while
    at the image's own edges the out-of-image rule still applies.
    """
    if true_labels.dtype == pred_labels.dtype:
        nonzero = np.bitwise_or(true_labels, pred_labels)
    else:
        nonzero = (true_labels != 0) | (pred_labels != 0)
    rows = np.flatnonzero(nonzero.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(nonzero.any(axis=0))
    height, width = nonzero.shape
    return (
        slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, height)),
        slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, width)),
    )


def _count_within(points: np.ndarray, others: np.ndarray, radius: int) -> int:
    """How many of ``points`` lie within Euclidean distance ``radius`` of one of ``others``.

    Equivalent to counting the ``points`` covered by ``others`` dilated with :func:`disk`: a
    point matches when, for some row offset ``dy``, row ``y + dy`` holds one of ``others``
    within ``isqrt(radius**2 - dy**2)`` columns of ``x``. Row-wise prefix sums over the
    bounding box answer each of these interval questions with two lookups.
    """
    # Both point sets are sorted row-major, so their first and last rows bound them.
    top = min(points[0, 0], others[0, 0])
    bottom = max(points[-1, 0], others[-1, 0])
    left = min(points[:, 1].min(), others[:, 1].min())
    right = max(points[:, 1].max(), others[:, 1].max())
    # Pad by the radius on every side so that no lookup leaves the grid; column 0 of the prefix
    # sums is the empty prefix.
    height = int(bottom - top) + 1 + 2 * radius
    stride = int(right - left) + 2 + 2 * radius
    prefix = np.zeros((height, stride), dtype=np.int32)
    prefix[others[:, 0] - (top - radius), others[:, 1] - (left - radius - 1)] = 1
    np.cumsum(prefix, axis=1, out=prefix)
    flat = prefix.reshape(-1)
    centre = (points[:, 0] - (top - radius)) * stride + (points[:, 1] - (left - radius))
    # The centre row holds the widest interval and settles most points; only the others are
    # tested against the remaining rows of the disk.
    on_centre_row = flat[centre + radius + 1] - flat[centre - radius] > 0
    rest = centre[~on_centre_row]
    matched = int(np.count_nonzero(on_centre_row))
    if rest.size == 0 or radius == 0:
        return matched
    offsets = np.array([dy for dy in range(-radius, radius + 1) if dy != 0])
    half_widths = np.array([math.isqrt(radius * radius - dy * dy) for dy in offsets.tolist()])
    start = rest[:, None] + (offsets * stride)[None, :]
    hits = flat[start + (half_widths + 1)] - flat[start - half_widths]
    return matched + int(np.count_nonzero(hits.any(axis=1)))


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise InputError(f"annotation shape {a.shape} and prediction shape {b.shape} differ")
