"""Hand-made cases with known answers for the J/F metrics, and fast paths against dense ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from eval.metrics import (
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    disk,
    f_measure_from_points,
    jaccard,
    label_boundary_points,
    label_frame_scores,
    statistics,
)


def _reference_boundary(mask: np.ndarray) -> np.ndarray:
    """The DAVIS rule written out: compare with east, south, south-east; then fix the last
    row (east only), the last column (south only) and the bottom-right pixel (never)."""
    m = mask.astype(bool)
    e = np.zeros_like(m)
    s = np.zeros_like(m)
    se = np.zeros_like(m)
    e[:, :-1] = m[:, 1:]
    s[:-1, :] = m[1:, :]
    se[:-1, :-1] = m[1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[-1, :] = m[-1, :] ^ e[-1, :]
    b[:, -1] = m[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _reference_f(true: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """Dense F-measure: dilate each boundary with a disk and count the covered pixels."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    selem = yy**2 + xx**2 <= radius**2
    tb, pb = _reference_boundary(true), _reference_boundary(pred)
    n_t, n_p = tb.sum(), pb.sum()
    if n_p == 0 and n_t > 0:
        p, r = 1.0, 0.0
    elif n_p > 0 and n_t == 0:
        p, r = 0.0, 1.0
    elif n_p == 0 and n_t == 0:
        p, r = 1.0, 1.0
    else:
        p = (pb & ndimage.binary_dilation(tb, selem)).sum() / n_p
        r = (tb & ndimage.binary_dilation(pb, selem)).sum() / n_t
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _random_labels(rng: np.random.Generator, shape: tuple[int, int], k: int) -> np.ndarray:
    """Blobby label images: smoothed noise thresholded into ids 0..k."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=3)
    edges = np.quantile(noise, np.linspace(0, 1, k + 2)[1:-1])
    return np.digitize(noise, edges).astype(np.uint8)


# --- boundaries --------------------------------------------------------------------------------


def test_boundary_of_a_single_pixel():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    expected = np.zeros((4, 4), bool)
    expected[[0, 0, 1, 1], [0, 1, 0, 1]] = True  # itself, left, above, above-left
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_boundary_in_the_bottom_right_corner_follows_the_last_row_and_column_rule():
    mask = np.zeros((4, 4), bool)
    mask[3, 3] = True
    expected = np.zeros((4, 4), bool)
    expected[2, 2] = expected[2, 3] = expected[3, 2] = True  # the corner itself is never on it
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_full_and_empty_masks_have_no_boundary():
    assert not boundary_map(np.ones((5, 7), bool)).any()
    assert not boundary_map(np.zeros((5, 7), bool)).any()


def test_boundary_map_equals_the_reference_and_is_batched():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 17, 23)) > 0.6
    out = boundary_map(masks)
    assert out.shape == masks.shape
    for m, b in zip(masks, out, strict=True):
        np.testing.assert_array_equal(b, _reference_boundary(m))


def test_label_boundaries_equal_per_object_boundaries():
    rng = np.random.default_rng(1)
    labels = _random_labels(rng, (37, 53), 4)
    labels[rng.random(labels.shape) > 0.97] = 255  # void and unknown ids are background
    labels[:3, :3] = 9
    points = label_boundary_points(labels, 4)
    assert len(points) == 4
    for k, pts in enumerate(points, start=1):
        np.testing.assert_array_equal(pts, np.argwhere(_reference_boundary(labels == k)))


# --- tolerance and disk ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "radius"), [(480, 854, 8), (480, 910, 9), (480, 1152, 10), (10, 10, 1)]
)
def test_boundary_tolerance_is_the_ceiled_fraction_of_the_diagonal(height, width, radius):
    assert boundary_tolerance(height, width) == radius


def test_boundary_tolerance_in_pixels_and_invalid():
    assert boundary_tolerance(480, 854, bound_th=3) == 3
    with pytest.raises(ValueError, match="positive"):
        boundary_tolerance(480, 854, bound_th=0)


def test_disk_holds_the_offsets_within_the_radius():
    expected = np.array(
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(disk(2), expected)
    assert disk(8).sum() == 197  # Gauss circle count N(8)


# --- J ------------------------------------------------------------------------------------------


def test_jaccard_known_values():
    true = np.zeros((2, 4, 4), bool)
    pred = np.zeros((2, 4, 4), bool)
    true[0, 0, :3] = True
    pred[0, 0, 1:4] = True  # intersection 2, union 4
    np.testing.assert_allclose(jaccard(true, pred), [0.5, 1.0])  # empty union scores 1


def test_jaccard_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="differ"):
        jaccard(np.zeros((3, 3)), np.zeros((3, 4)))


# --- F ------------------------------------------------------------------------------------------


def test_f_measure_empty_cases():
    some = np.array([[1, 2], [3, 4]])
    none = np.zeros((0, 2), int)
    assert f_measure_from_points(none, none, 3) == 1.0  # no boundary anywhere
    assert f_measure_from_points(some, none, 3) == 0.0  # empty prediction: P=1, R=0
    assert f_measure_from_points(none, some, 3) == 0.0  # empty truth: P=0, R=1


def test_f_measure_disk_is_inclusive_and_euclidean():
    true = np.array([[20, 20]])
    assert f_measure_from_points(true, np.array([[23, 24]]), 5) == 1.0  # distance exactly 5
    assert f_measure_from_points(true, np.array([[23, 24]]), 4) == 0.0  # P + R = 0 -> 0
    assert f_measure_from_points(true, np.array([[22, 22]]), 3) == 1.0  # sqrt(8) <= 3
    assert f_measure_from_points(true, np.array([[22, 22]]), 2) == 0.0  # sqrt(8) > 2


@pytest.mark.parametrize(("shift", "expected"), [(0, 1.0), (3, 1.0), (4, 0.0)])
def test_f_measure_of_shifted_edges(shift, expected):
    true = np.zeros((20, 40), bool)
    true[:, :20] = True  # boundary: column 19
    pred = np.zeros((20, 40), bool)
    pred[:, : 20 + shift] = True  # boundary: column 19 + shift
    assert boundary_f_measure(true, pred, bound_th=3) == expected


def test_f_measure_partial_match_known_value():
    # True boundary: column 9, 10 pixels. Prediction: a full 10x10 mask's boundary is also
    # column 9 only; a 5-row half mask adds a horizontal edge of 10 pixels in row 4.
    true = np.zeros((10, 20), bool)
    true[:, :10] = True
    pred = np.zeros((10, 20), bool)
    pred[:5, :10] = True
    # pred boundary: row 4 columns 0..9 (10 px) and column 9 rows 0..3 (4 px) = 14 px.
    # With radius 1: matched pred = column 9 rows 0..4 (5 px) + row 4 column 8 (1 px) = 6.
    # Matched true = column 9 rows 0..5 (6 px). P = 6/14, R = 6/10.
    p, r = 6 / 14, 6 / 10
    assert boundary_f_measure(true, pred, bound_th=1) == pytest.approx(2 * p * r / (p + r))


@pytest.mark.parametrize("radius", [1, 2, 5, 8])
def test_fast_f_equals_dense_dilation(radius):
    rng = np.random.default_rng(radius)
    for _ in range(6):
        true = _random_labels(rng, (48, 64), 1) > 0
        pred = _random_labels(rng, (48, 64), 1) > 0
        expected = _reference_f(true, pred, radius)
        assert boundary_f_measure(true, pred, bound_th=radius) == pytest.approx(expected, abs=0)


def test_label_frame_scores_equal_binary_scores_per_object():
    rng = np.random.default_rng(7)
    true = _random_labels(rng, (60, 90), 3)
    true[rng.random(true.shape) > 0.98] = 255
    true[:4, :4] = 5  # an id above K: background
    pred = _random_labels(rng, (60, 90), 3)
    j, f = label_frame_scores(true, pred, 3)
    radius = boundary_tolerance(60, 90)
    for k in range(1, 4):
        assert j[k - 1] == jaccard(true == k, pred == k)
        assert f[k - 1] == pytest.approx(_reference_f(true == k, pred == k, radius), abs=0)


@pytest.mark.parametrize(("top", "left"), [(0, 0), (10, 20), (44, 70), (44, 0), (0, 70), (20, 79)])
def test_label_frame_scores_on_objects_away_from_and_at_the_edges(top, left):
    # Objects occupy a small part of the frame, so only a window around them is examined;
    # placing them against each image edge checks the window keeps the edge rules.
    true = np.zeros((50, 80), np.uint8)
    pred = np.zeros((50, 80), np.uint8)
    true[top : top + 6, left : left + 9] = 1
    true[top : top + 3, left : left + 4] = 2
    pred[top + 1 : top + 6, left : left + 7] = 1
    pred[top : top + 2, left + 1 : left + 4] = 2
    j, f = label_frame_scores(true, pred, 2, bound_th=2)
    for k in (1, 2):
        assert j[k - 1] == jaccard(true == k, pred == k)
        assert f[k - 1] == _reference_f(true == k, pred == k, 2)
    j, f = label_frame_scores(np.zeros_like(true), np.zeros_like(pred), 2)
    assert list(j) == list(f) == [1.0, 1.0]


def test_label_frame_scores_absent_objects():
    true = np.zeros((10, 10), np.uint8)
    true[2:5, 2:5] = 1
    true[6:9, 6:9] = 3
    pred = true.copy()
    pred[pred == 3] = 0  # object 3 lost; object 2 absent from both
    j, f = label_frame_scores(true, pred, 3)
    np.testing.assert_array_equal(j, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(f, [1.0, 1.0, 0.0])
    pred[0:2, 0:2] = 2  # predicted where the truth has no object 2: J = 0, F = 0 (P=0, R=1)
    j, f = label_frame_scores(true, pred, 3)
    np.testing.assert_array_equal(j, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(f, [1.0, 0.0, 0.0])


def test_label_frame_scores_rejects_ids_above_k():
    with pytest.raises(ValueError, match="above the number of objects 2"):
        label_frame_scores(np.zeros((4, 4), np.uint8), np.full((4, 4), 3, np.uint8), 2)


def test_label_frame_scores_many_objects_use_the_wide_histogram():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 21, (30, 30)).astype(np.uint8)
    pred = rng.integers(0, 21, (30, 30)).astype(np.uint8)
    j, _ = label_frame_scores(true, pred, 20)
    expected = [jaccard(true == k, pred == k) for k in range(1, 21)]
    np.testing.assert_array_equal(j, expected)


# --- statistics ---------------------------------------------------------------------------------


def test_statistics_known_values():
    s = statistics(np.array([1, 1, 1, 1, 0, 0, 0, 0], float))
    # bins at round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7]: first [0..2], last [5..7]
    assert (s.mean, s.recall, s.decay) == (0.5, 0.5, 1.0)


def test_statistics_rounds_halves_up_as_the_official_tool():
    # linspace(1, 3, 5) = [1, 1.5, 2, 2.5, 3]; with +1e-10 the halves round up: bins
    # [0, 1, 1, 2, 2], first = values[0:2], last = values[2:3].
    s = statistics(np.array([1.0, 0.5, 0.0]))
    assert s.decay == pytest.approx(0.75)
    assert s.recall == pytest.approx(1 / 3)  # 0.5 is not above 0.5


def test_statistics_nan_aware():
    s = statistics(np.array([np.nan, 1.0, 0.4, 0.6]))
    assert s.mean == pytest.approx(2 / 3)
    assert s.recall == 0.5  # NaN counts as not above 0.5
    assert statistics(np.array([0.3])).decay == 0.0


def test_statistics_rejects_empty():
    with pytest.raises(ValueError, match="non-empty"):
        statistics(np.array([]))
