"""Tracker and sessions: ids, streaming, mask checks, bring-your-own-features API."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic_clips import moving_square_video

from dinotrack import Tracker, TrackerConfig, propagate_sequence
from dinotrack.io.masks import read_mask, resize_mask
from dinotrack.tracking.objects import channels_to_ids, check_first_mask, ids_to_channels
from dinotrack.tracking.propagation import labels_to_mask, one_hot_labels

SMALL = dict(short_side=96, batch_size=3)


@pytest.fixture
def tracker(tiny_tracker):
    return tiny_tracker(**SMALL)


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


def test_identical_frames_with_top1_copy_the_first_mask(tiny_tracker):
    tracker = tiny_tracker(topk=1, **SMALL)
    frames, masks = moving_square_video(n=1)
    results = list(tracker.track([frames[0]] * 4, masks[0]))
    # Each patch's best match is itself: the output is the first mask on the patch grid,
    # brought back to pixels exactly as every prediction is.
    h, w = tracker.input_size(72, 120)
    grid = resize_mask(masks[0], h // 8, w // 8)
    channels = torch.from_numpy(ids_to_channels(grid, (3, 7)))
    expected = labels_to_mask(one_hot_labels(channels, 3), 8, (72, 120)).numpy()
    expected = channels_to_ids(expected, (3, 7))
    for _, got in results[1:]:
        np.testing.assert_array_equal(got, expected)


def test_context_queue_is_bounded(tiny_tracker):
    tracker = tiny_tracker(n_last_frames=2, **SMALL)
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


@pytest.mark.parametrize(
    "setting,error,match",
    [
        (dict(temperature=float("nan")), ValueError, "temperature must be a finite number > 0"),
        (dict(temperature=float("inf")), ValueError, "temperature must be a finite number > 0"),
        (dict(temperature=-0.1), ValueError, "temperature must be a finite number > 0"),
        (dict(topk=2.5), TypeError, "topk must be an integer >= 1, got 2.5"),
        (dict(topk=True), TypeError, "topk must be an integer"),
        (dict(radius=1.5), TypeError, "radius must be an integer, got 1.5"),
        (dict(n_last_frames=-1), ValueError, "n_last_frames must be >= 0"),
        (dict(short_side=8), ValueError, "short_side must be >= 16 pixels"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(tile=2.0), TypeError, "tile must be an integer"),
    ],
)
def test_config_refuses_bad_numbers(setting, error, match):
    with pytest.raises(error, match=match):
        TrackerConfig(**setting)
    with pytest.raises(error, match=match):  # the API's overrides go through the same check
        Tracker.from_pretrained("test_vit_tiny", device="cpu", **setting)


def test_defaults_have_one_source():
    # The API's defaults are the config's (the DINO paper's), named once in dinotrack.config.
    import inspect

    from dinotrack.config import cpu_tile
    from dinotrack.tracking.memory import LabelPropagator
    from dinotrack.tracking.propagation import propagate_labels

    config = TrackerConfig()
    for func in (LabelPropagator.__init__, propagate_labels):
        params = inspect.signature(func).parameters
        for name in ("radius", "topk", "temperature"):
            assert params[name].default == getattr(config, name)
        assert params["tile"].default is None  # None: the config's CPU tile for the radius
    assert cpu_tile(config.radius) == 6  # so the DINO protocol keeps its tile of 6
    assert inspect.signature(LabelPropagator.__init__).parameters["n_last_frames"].default == 7
    assert (config.n_last_frames, config.radius, config.topk, config.temperature) == (7, 12, 5, 0.1)


def test_auto_precision_means_one_thing_for_tracking_and_pretraining():
    from dinotrack.config import resolve_precision
    from dinotrack.models.features import autocast_dtype

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and autocast_dtype("auto", cpu) is None
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        assert resolve_precision(name, cpu) == name and autocast_dtype(name, cpu) == dtype
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", cpu)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        assert resolve_precision("auto", cuda) == expected


def test_config_stores_plain_numbers():
    config = TrackerConfig(topk=np.int64(3), temperature=np.float32(0.5), radius=-1, tile=4)
    assert type(config.topk) is int and type(config.temperature) is float
    assert config.to_dict()["topk"] == 3 and config.temperature == 0.5


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


MASK_SIZE_CASES = {
    "4k": (3840, 2160),
    "1080p": (1920, 1080),
    "720p": (1280, 720),
    "half": (427, 240),
    "double": (1708, 960),
}


@pytest.mark.parametrize("width,height", MASK_SIZE_CASES.values(), ids=MASK_SIZE_CASES.keys())
def test_first_mask_of_a_rescaled_size_is_resized(width, height):
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : height // 2, width // 4 : width // 2] = 5
    with pytest.warns(
        UserWarning, match=f"the mask is {width}x{height} but the frames are 854x480"
    ):
        out = check_first_mask(mask, (480, 854))
    assert out.shape == (480, 854) and set(np.unique(out)) == {0, 5}


def test_first_mask_rescaled_exactly_comes_back_exactly():
    _, masks = moving_square_video(n=1, height=48, width=80)
    double = np.repeat(np.repeat(masks[0], 2, axis=0), 2, axis=1)
    with pytest.warns(UserWarning, match="resizing the mask"):
        np.testing.assert_array_equal(check_first_mask(double, (48, 80)), masks[0])


def test_track_warns_once_about_a_rescaled_first_mask(tracker):
    # track -> start: a rescaled first mask is resized, and the user warned, one time.
    frames, masks = moving_square_video(n=2, height=48, width=80)
    double = np.repeat(np.repeat(masks[0], 2, axis=0), 2, axis=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = list(tracker.track(frames, double))
    resized = [w for w in caught if "resizing the mask" in str(w.message)]
    assert len(resized) == 1
    np.testing.assert_array_equal(results[0][1], masks[0])


@pytest.mark.parametrize(
    "width,height,match",
    [
        (1, 1, "the mask is 1x1 but the frames are 854x480; a mask smaller than 16 pixels on "),
        (2, 2, "is too small to carry a shape. Give a mask of the first frame's size"),
        (480, 480, "the mask is 480x480 but the frames are 854x480 \\(another aspect ratio\\)"),
        (854, 400, "the mask is 854x400 but the frames are 854x480 \\(another aspect ratio\\)"),
        (860, 480, "another aspect ratio"),
    ],
)
def test_first_mask_of_another_shape_or_too_small_is_refused(width, height, match):
    with pytest.raises(ValueError, match=match):
        check_first_mask(np.ones((height, width), np.uint8), (480, 854))


def test_bool_masks_are_objects_0_and_1(tracker):
    frames, masks = moving_square_video(n=3)
    binary = masks[0] > 0
    expected = [m for _, m in tracker.track(frames, binary.astype(np.uint8))]
    got = [m for _, m in tracker.track(frames, binary)]
    assert got[0].dtype == np.uint8
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    session = tracker.start(frames[0], binary)
    assert session.object_ids == (1,)
    np.testing.assert_array_equal(session.step(frames[1]), expected[1])


def test_frames_are_checked_alike_by_start_step_and_track(tracker):
    frames, masks = moving_square_video(n=2)
    bad = frames[1].astype(np.float32)
    message = r"frames must be \[H, W, 3\] uint8 RGB, got float32 \(72, 120, 3\)"
    with pytest.raises(ValueError, match=message):
        list(tracker.track([bad], masks[0]))
    with pytest.raises(ValueError, match=message):
        tracker.start(bad, masks[0])
    session = tracker.start(frames[0], masks[0])
    with pytest.raises(ValueError, match=message):
        session.step(bad)
    with pytest.raises(ValueError, match=r"got uint8 \(72, 120\)"):
        session.step(frames[1][..., 0])
    with pytest.raises(TypeError, match="frames must be .* numpy arrays, got NoneType"):
        session.step(None)
    with pytest.raises(TypeError, match="got NoneType"):
        tracker.start(None, masks[0])
    assert session.state.frame_index == 0  # the refused frames were not counted
    session.step(frames[1])


def test_read_only_frames_do_not_warn(tracker):
    frames, masks = moving_square_video(n=3)
    expected = [m for _, m in tracker.track(frames, masks[0])]
    read_only = [np.asarray(Image.fromarray(f)) for f in frames]  # as users load frames
    assert not read_only[0].flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "non-writable array" UserWarning included
        session = tracker.start(read_only[0], masks[0])
        got = [masks[0]] + [session.step(f) for f in read_only[1:]]
        tracked = [m for _, m in tracker.track(read_only, masks[0])]
    for a, b, c in zip(got, tracked, expected, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)


def test_track_names_its_source_briefly(tracker):
    frames, masks = moving_square_video(n=2)
    with pytest.raises(ValueError, match="^no frames to track in the given frames$"):
        list(tracker.track([], masks[0]))
    with pytest.raises(ValueError, match="^no frames to track in the given frames from index 5$"):
        list(tracker.track(frames, masks[0], start=5))
    # Bad ranges are refused at the call, before any frame is read.
    with pytest.raises(ValueError, match=r"^stop must be greater than start \(1\), got 0$"):
        tracker.track(frames, masks[0], start=1, stop=0)
    with pytest.raises(ValueError, match="start must be >= 0, got -1"):
        tracker.track(frames, masks[0], start=-1)
    with pytest.raises(TypeError, match="start must be an integer >= 0, got 1.5"):
        tracker.track(frames, masks[0], start=1.5)
    assert [i for i, _ in tracker.track(frames, masks[1], start=np.int64(1))] == [1]


def test_track_from_a_directory_names_it(tracker, tmp_path):
    frames, masks = moving_square_video(n=2)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i:05d}.png")
    with pytest.raises(ValueError) as error:
        list(tracker.track(tmp_path, masks[0], start=2))
    assert str(error.value) == f"no frames to track in {tmp_path} from index 2"


def test_objects_smaller_than_a_patch_are_warned_about(tracker):
    frames, masks = moving_square_video(n=3)
    first = masks[0].copy()
    first[60, 5] = 9  # one pixel: 1.8 px at the 160x96 input, far below one 8x8 patch
    first[62:66, 100:104] = 4  # 16 px -> 28 px at the input, below 64
    message = (
        "objects 4, 9 of the first mask are smaller than one 8x8 patch at the network input "
        "(160x96) and may be lost after the first frame; a larger short side keeps small objects"
    )
    with pytest.warns(UserWarning) as record:
        session = tracker.start(frames[0], first)
    assert [str(w.message) for w in record] == [message]
    assert session.object_ids == (3, 4, 7, 9)  # kept, whatever becomes of them
    only_one = masks[0].copy()
    only_one[60, 5] = 9
    with pytest.warns(UserWarning, match="^object 9 of the first mask is smaller than one 8x8"):
        list(tracker.track(frames, only_one))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 24x24 squares are several patches: no warning
        tracker.start(frames[0], masks[0])
        first[56:64, 0:8] = 9  # 64 px -> 114 px at the input: above one patch now
        first[62:66, 100:104] = 0
        tracker.start(frames[0], first)
