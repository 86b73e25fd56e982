"""Tracker and sessions: ids, streaming, mask checks, bring-your-own-features API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinotrack import Tracker, TrackerConfig, propagate_sequence
from dinotrack.masks import read_mask, resize_mask
from dinotrack.propagation import labels_to_mask, one_hot_labels

SMALL = dict(short_side=96, batch_size=3)


@pytest.fixture(scope="module")
def tracker():
    return Tracker.from_pretrained("test_vit_tiny", device="cpu", **SMALL)


def moving_square_video(n=6, height=72, width=120):
    """Textured background with two squares (ids 3 and 7) moving right by 4 px per frame."""
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


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_ids_are_kept_and_objects_followed(tracker):
    frames, masks = moving_square_video()
    results = list(tracker.track(frames, masks[0]))
    assert [i for i, _ in results] == list(range(len(frames)))
    np.testing.assert_array_equal(results[0][1], masks[0])
    for (_, got), truth in zip(results, masks, strict=True):
        assert got.shape == truth.shape and got.dtype == np.uint8
        assert set(np.unique(got)) <= {0, 3, 7}
        assert iou(got == 3, truth == 3) > 0.5 and iou(got == 7, truth == 7) > 0.5


def test_streaming_track_equals_frame_by_frame_session(tracker):
    frames, masks = moving_square_video()
    tracked = [m for _, m in tracker.track(frames, masks[0])]
    session = tracker.start(frames[0], masks[0])
    stepped = [masks[0]] + [session.step(f) for f in frames[1:]]
    for a, b in zip(tracked, stepped, strict=True):
        np.testing.assert_array_equal(a, b)
    assert session.object_ids == (3, 7) and session.state.frame_index == len(frames) - 1


def test_identical_frames_with_top1_copy_the_first_mask():
    tracker = Tracker.from_pretrained("test_vit_tiny", device="cpu", topk=1, **SMALL)
    frames, masks = moving_square_video(n=1)
    results = list(tracker.track([frames[0]] * 4, masks[0]))
    # Each patch's best match is itself: the output is the first mask on the patch grid,
    # brought back to pixels exactly as every prediction is.
    h, w = tracker.input_size(72, 120)
    grid = resize_mask(masks[0], h // 8, w // 8)
    channels = torch.from_numpy(Tracker.ids_to_channels(grid, (3, 7)))
    expected = labels_to_mask(one_hot_labels(channels, 3), 8, (72, 120)).numpy()
    expected = Tracker.channels_to_ids(expected, (3, 7))
    for _, got in results[1:]:
        np.testing.assert_array_equal(got, expected)


def test_context_queue_is_bounded():
    tracker = Tracker.from_pretrained("test_vit_tiny", device="cpu", n_last_frames=2, **SMALL)
    frames, masks = moving_square_video()
    session = tracker.start(frames[0], masks[0])
    for frame in frames[1:]:
        session.step(frame)
    assert len(session.state.propagator.recent) == 2


def test_ids_above_255_use_int32(tracker):
    frames, masks = moving_square_video(n=3)
    first = masks[0].astype(np.int32) * 100  # ids 300 and 700
    out = [m for _, m in tracker.track(frames, first)]
    assert out[-1].dtype == np.int32 and set(np.unique(out[-1])) <= {0, 300, 700}


def test_mask_checks(tracker):
    frames, masks = moving_square_video(n=2)
    with pytest.raises(ValueError, match="empty"):
        tracker.start(frames[0], np.zeros_like(masks[0]))
    with pytest.raises(ValueError, match="another aspect ratio"):
        tracker.start(frames[0], masks[0][:, :60])
    with pytest.raises(ValueError, match="integer object ids"):
        tracker.start(frames[0], masks[0].astype(np.float32))
    half = masks[0][::2, ::2]  # same aspect ratio, half size: resized with a warning
    with pytest.warns(UserWarning, match="resizing the mask"):
        session = tracker.start(frames[0], half)
    assert session.step(frames[1]).shape == masks[0].shape
    with pytest.raises(ValueError, match="all frames must have the same size"):
        list(tracker.track([frames[0], frames[1][:, :100]], masks[0]))


def test_config_validation():
    with pytest.raises(ValueError, match="topk"):
        TrackerConfig(topk=0)
    with pytest.raises(ValueError, match="resize_rule"):
        TrackerConfig(resize_rule="stretch")


def test_real_clip_from_davis(tracker, shared_data):
    seq = shared_data("davis2016-dev", "JPEGImages", "480p", "boat")
    first = read_mask(shared_data("davis2016-dev", "Annotations", "480p", "boat", "00000.png"))
    results = list(tracker.track(seq, first.ids, stop=4))
    assert len(results) == 4
    assert all(m.shape == (480, 854) for _, m in results)
    assert results[-1][1].any()  # the boat is still there


def test_propagate_sequence_with_own_features():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 6, 8, generator=g)
    feats = [base + 0.01 * torch.randn(16, 6, 8, generator=g) for _ in range(5)]
    labels = torch.zeros(6, 8, dtype=torch.long)
    labels[2:4, 3:6] = 2
    labels[0, 0] = 1
    out = list(propagate_sequence(feats, labels, topk=1, radius=2))
    assert len(out) == 4 and out[0].shape == (3, 6, 8)
    for soft in out:
        assert torch.equal(soft.argmax(0), labels)
