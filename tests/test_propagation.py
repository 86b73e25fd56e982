"""Golden tests of the propagation algorithm against a dense reference of the same formula."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinotrack.config import cpu_tile
from dinotrack.tracking.memory import LabelPropagator, propagate_sequence
from dinotrack.tracking.propagation import (
    labels_to_mask,
    one_hot_labels,
    product_layout,
    propagate_labels,
)


def dense_reference(target, context, labels, radius, topk, temperature):
    """The official formulation: a dense N x N affinity per context frame, masked by the window."""
    n_ctx, c, h, w = context.shape
    tgt = F.normalize(target.reshape(c, -1), dim=0)  # [C, N]
    src = F.normalize(context.reshape(n_ctx, c, -1), dim=1)  # [T, C, N]
    aff = torch.exp(torch.einsum("cq,tcs->tsq", tgt, src) / temperature)  # [T, N_src, N_tgt]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    near = ((ys[:, None] - ys[None, :]).abs() <= radius) & (
        (xs[:, None] - xs[None, :]).abs() <= radius
    )
    aff = aff * near.float()[None]
    aff = aff.reshape(n_ctx * h * w, h * w)
    kth = aff.topk(topk, dim=0).values.min(dim=0).values
    aff = torch.where(aff < kth, torch.zeros_like(aff), aff)
    aff = aff / aff.sum(dim=0, keepdim=True)
    segs = labels.permute(1, 0, 2, 3).reshape(labels.shape[1], -1)  # [K, T*N]
    return (segs @ aff).reshape(-1, h, w)


def random_case(seed, n_ctx, c, h, w, k):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(c, h, w, generator=g, dtype=torch.float64)
    context = torch.randn(n_ctx, c, h, w, generator=g, dtype=torch.float64)
    ids = torch.randint(0, k, (n_ctx, h, w), generator=g)
    labels = torch.stack([one_hot_labels(i, k) for i in ids]).double()
    labels = labels * torch.rand(n_ctx, 1, h, w, generator=g, dtype=torch.float64)  # soft labels
    return target, context, labels


@pytest.mark.parametrize(
    "n_ctx,c,h,w,k,radius,topk,tile",
    [
        (1, 16, 9, 9, 2, 2, 3, 4),  # square, small window
        (3, 8, 7, 13, 3, 3, 5, 8),  # non-square, window crosses borders, tile > h
        (8, 32, 12, 20, 4, 4, 5, 5),  # 8 context frames, several objects, ragged tiles
        (2, 8, 6, 10, 3, 20, 4, 3),  # window larger than the frame = global search
        (4, 8, 11, 5, 2, 1, 1, 2),  # top-1, tall grid
    ],
)
@pytest.mark.parametrize("layout", ["per_row", "per_run"])
def test_windowed_equals_dense_reference(n_ctx, c, h, w, k, radius, topk, tile, layout):
    # Both layouts of the similarity products (CPU: per row of tiles; GPU: per run of rows),
    # each with all rows at once and with one row per chunk.
    target, context, labels = random_case(h * w + n_ctx, n_ctx, c, h, w, k)
    expected = dense_reference(target, context, labels, radius, topk, 0.1)
    for chunk_bytes in (2**30, 1):
        got = propagate_labels(
            target.float(),
            context.float(),
            labels.float(),
            radius=radius,
            topk=topk,
            tile=tile,
            chunk_bytes=chunk_bytes,
            layout=layout,
        )
        assert got.shape == (k, h, w)
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-4)
        assert torch.equal(got.argmax(0), expected.argmax(0))


def test_result_does_not_depend_on_tile_size():
    target, context, labels = random_case(1, 4, 16, 15, 17, 3)
    results = [
        propagate_labels(target.float(), context.float(), labels.float(), radius=4, tile=t)
        for t in (1, 3, 8, 32)
    ]
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], atol=1e-6, rtol=1e-5)


def test_cpu_tile_divides_the_radius_so_no_tile_compares_outside_its_window():
    assert cpu_tile(12) == 6  # the DINO protocol keeps its tile (and its outputs)
    assert cpu_tile(-1) == 6  # the whole frame
    for radius in (1, 2, 4, 8, 16):
        assert radius % cpu_tile(radius) == 0 or radius < cpu_tile(radius)
    # Where 6 does not divide the radius, the tile it picks gives the same labels.
    target, context, labels = random_case(2, 6, 16, 26, 30, 3)
    args = (target.float(), context.float(), labels.float())
    fast = propagate_labels(*args, radius=8, tile=cpu_tile(8))
    torch.testing.assert_close(fast, propagate_labels(*args, radius=8, tile=6))
    # Without a tile, the low-level calls pick the same one.
    assert torch.equal(propagate_labels(*args, radius=8), fast)
    memory = LabelPropagator(context[0].float(), labels[0].float(), radius=8)
    assert memory.kwargs["tile"] == cpu_tile(8) == 4
    assert LabelPropagator(context[0].float(), labels[0].float()).kwargs["tile"] == 6


def test_identical_features_copy_the_mask_exactly():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(32, 10, 14, generator=g)
    ids = torch.randint(0, 3, (10, 14), generator=g)
    labels = one_hot_labels(ids, 3)
    out = propagate_labels(feats, feats[None], labels[None], radius=3, topk=1)
    assert torch.equal(out, labels)
    # With top-5 the best match (itself, cos = 1) dominates but others leak in; argmax holds.
    out5 = propagate_labels(feats, feats[None], labels[None], radius=3, topk=5, temperature=0.01)
    assert torch.equal(out5.argmax(0), ids)


def test_top1_is_nearest_neighbour_within_window():
    g = torch.Generator().manual_seed(1)
    h, w, r = 8, 9, 2
    target = torch.randn(6, h, w, generator=g)
    context = torch.randn(2, 6, h, w, generator=g)
    ids = torch.randint(0, 4, (2, h, w), generator=g)
    labels = torch.stack([one_hot_labels(i, 4) for i in ids])
    out = propagate_labels(target, context, labels, radius=r, topk=1)
    tn, cn = F.normalize(target, dim=0), F.normalize(context, dim=1)
    for y in range(h):
        for x in range(w):
            best, best_id = -2.0, None
            for t in range(2):
                for sy in range(max(0, y - r), min(h, y + r + 1)):
                    for sx in range(max(0, x - r), min(w, x + r + 1)):
                        cos = float(tn[:, y, x] @ cn[t, :, sy, sx])
                        if cos > best:
                            best, best_id = cos, int(ids[t, sy, sx])
            assert int(out[:, y, x].argmax()) == best_id
            assert float(out[:, y, x].max()) == pytest.approx(1.0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="shape mismatch"):
        propagate_labels(torch.randn(4, 5, 5), torch.randn(2, 4, 5, 6), torch.randn(2, 2, 5, 6))
    with pytest.raises(ValueError, match="topk"):
        propagate_labels(
            torch.randn(4, 5, 5), torch.randn(1, 4, 5, 5), torch.randn(1, 2, 5, 5), topk=0
        )


def test_labels_to_mask_minmax_and_resize():
    soft = torch.zeros(3, 2, 3)
    soft[0] = 0.6  # background
    soft[0, 0, 0] = 0.5  # ... rescaled to [0, 1]: 0 here, 1 elsewhere
    soft[1, 0, 0] = 0.3  # object 1: weak, but rescaled to 1 at its peak
    out = labels_to_mask(soft, patch_size=4)
    assert out.shape == (8, 12)
    assert out[0, 0] == 1 and out[7, 11] == 0
    assert not (out == 2).any()  # an all-zero channel never wins
    assert set(out.unique().tolist()) <= {0, 1}
    small = labels_to_mask(soft, patch_size=4, out_size=(5, 7))
    assert small.shape == (5, 7) and small[0, 0] == 1


@pytest.mark.parametrize("radius", [0, 1, 3, 20, -1])
def test_topk_above_the_candidates_keeps_them_all(radius):
    # torch.topk fails past the candidates it is given; propagate_labels clamps topk, and
    # the -inf scores of border targets' missing candidates get weight 0.
    n_ctx, h, w = 3, 7, 9
    target, context, labels = random_case(radius + 5, n_ctx, 8, h, w, 3)
    window = max(h, w) if radius < 0 else radius
    expected = dense_reference(target, context, labels, window, n_ctx * h * w, 0.1)
    for tile in (2, 4):
        got = propagate_labels(
            target.float(), context.float(), labels.float(), radius=radius, topk=100_000, tile=tile
        )
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-4)


def test_every_target_has_a_finite_candidate():
    # With radius 0 a target's only candidates are its own position in each context frame
    # (the corner ones too): its weights still sum to 1, so one-hot labels stay a partition.
    g = torch.Generator().manual_seed(3)
    target, context = torch.randn(8, 5, 6, generator=g), torch.randn(2, 8, 5, 6, generator=g)
    ids = torch.randint(0, 3, (2, 5, 6), generator=g)
    labels = torch.stack([one_hot_labels(i, 3) for i in ids])
    for topk in (1, 2, 50):
        out = propagate_labels(target, context, labels, radius=0, topk=topk, tile=4)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.sum(0), torch.ones(5, 6))


@pytest.mark.parametrize(
    "setting,error,match",
    [
        (dict(temperature=float("nan")), ValueError, "temperature must be a finite number > 0"),
        (dict(temperature=float("inf")), ValueError, "temperature must be a finite number > 0"),
        (dict(temperature=0.0), ValueError, "temperature must be a finite number > 0, got 0.0"),
        (dict(temperature="0.1"), TypeError, "temperature must be a finite number"),
        (dict(topk=2.5), TypeError, "topk must be an integer >= 1, got 2.5"),
        (dict(topk=0), ValueError, "topk must be >= 1, got 0"),
        (dict(radius=1.5), TypeError, "radius must be an integer, got 1.5"),
        (dict(tile=0), ValueError, "tile must be >= 1"),
    ],
)
def test_settings_are_checked(setting, error, match):
    target, context, labels = torch.randn(4, 5, 5), torch.randn(1, 4, 5, 5), torch.rand(1, 2, 5, 5)
    with pytest.raises(error, match=match):
        propagate_labels(target, context, labels, **setting)
    with pytest.raises(error, match=match):  # at construction, not at the first step
        LabelPropagator(target, labels[0], **setting)


def test_product_layout_is_checked_and_auto_follows_the_device():
    target, context, labels = torch.randn(4, 5, 5), torch.randn(1, 4, 5, 5), torch.rand(1, 2, 5, 5)
    with pytest.raises(ValueError, match=r"layout must be one of \('auto', 'per_row', 'per_run'\)"):
        propagate_labels(target, context, labels, layout="per_tile")
    assert product_layout(torch.device("cpu")) == "per_row"
    assert product_layout(torch.device("cuda")) == "per_run"  # no GPU needed to ask
    auto = propagate_labels(target, context, labels)
    assert torch.equal(auto, propagate_labels(target, context, labels, layout="per_row"))


def test_label_propagator_checks_n_last_frames():
    with pytest.raises(ValueError, match="n_last_frames must be >= 0"):
        LabelPropagator(torch.randn(4, 5, 5), torch.rand(2, 5, 5), n_last_frames=-1)


def sequence_case():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 6, 8, generator=g)
    feats = [base + 0.01 * torch.randn(16, 6, 8, generator=g) for _ in range(3)]
    labels = torch.zeros(6, 8, dtype=torch.long)
    labels[2:4, 3:6] = 2
    labels[0, 0] = 1
    return feats, labels


def test_propagate_sequence_accepts_numpy_labels():
    feats, labels = sequence_case()
    expected = list(propagate_sequence(feats, labels, topk=2, radius=2))
    read_only = labels.numpy().astype(np.uint8)
    read_only.setflags(write=False)
    soft = one_hot_labels(labels, 3).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch
        for given in (labels.numpy(), read_only, soft):
            got = list(propagate_sequence(feats, given, topk=2, radius=2))
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                torch.testing.assert_close(a, b)


def test_propagate_sequence_checks_labels():
    feats, labels = sequence_case()
    with pytest.raises(ValueError, match="negative channel indices"):
        list(propagate_sequence(feats, labels - 1))
    with pytest.raises(ValueError, match="negative channel indices"):
        list(propagate_sequence(feats, (labels - 1).numpy()))
    with pytest.raises(TypeError, match="integer channel indices"):
        list(propagate_sequence(feats, labels.float()))
    with pytest.raises(ValueError, match=r"\[h, w\] channel indices or \[K, h, w\]"):
        list(propagate_sequence(feats, labels[None, None]))
    with pytest.raises(TypeError, match="tensor or numpy array"):
        list(propagate_sequence(feats, labels.tolist()))
