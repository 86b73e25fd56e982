"""Golden tests of the propagation algorithm against a dense reference of the same formula."""

import pytest
import torch
import torch.nn.functional as F

from dinotrack import propagation
from dinotrack.propagation import labels_to_mask, one_hot_labels, propagate_labels


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
@pytest.mark.parametrize("per_row", [True, False], ids=["product-per-row", "product-per-run"])
def test_windowed_equals_dense_reference(
    n_ctx, c, h, w, k, radius, topk, tile, per_row, monkeypatch
):
    # Both layouts of the similarity products (CPU: per row of tiles; GPU: per run of rows),
    # each with all rows at once and with one row per chunk.
    monkeypatch.setattr(propagation, "_product_per_row", lambda device: per_row)
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
