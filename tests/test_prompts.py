"""Prompts on any frame: objects that enter later, corrections, backward and two-way tracking."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from cli_support import run_cli, tiny_flags
from PIL import Image
from synthetic_clips import moving_square_video

from dinotrack.io.masks import read_mask, resize_mask, write_mask
from dinotrack.io.video import FrameReader, available_backends, iter_frames
from dinotrack.tracking.memory import apply_prompt_labels, merge_group_labels
from dinotrack.tracking.objects import object_labels

SMALL = dict(short_side=96, batch_size=3)


@pytest.fixture
def tracker(tiny_tracker):  # the tracker of test_session.py
    return tiny_tracker(**SMALL)


def only(mask, obj):
    return np.where(mask == obj, mask, 0).astype(np.uint8)


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_one_prompt_is_the_first_mask_run(tracker):
    frames, masks = moving_square_video(n=8)
    plain = list(tracker.track(frames, masks[0]))
    prompted = list(tracker.track(frames, prompts={0: masks[0]}))
    assert [i for i, _ in prompted] == list(range(len(frames)))
    for (i, a), (j, b) in zip(plain, prompted, strict=True):
        assert i == j and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_object_entering_later_is_tracked_from_its_prompt_only(tracker):
    frames, masks = moving_square_video(n=8)
    enter = 3
    prompts = {0: only(masks[0], 3), enter: only(masks[enter], 7)}
    results = dict(tracker.track(frames, prompts=prompts))
    assert sorted(results) == list(range(len(frames)))
    for t in range(enter):  # object 7 does not exist before its prompt
        assert 7 not in results[t]
    np.testing.assert_array_equal(results[enter] == 7, masks[enter] == 7)
    for t in range(enter + 1, len(frames)):
        assert iou(results[t] == 7, masks[t] == 7) > 0.5
        assert iou(results[t] == 3, masks[t] == 3) > 0.5
    # Object 3 before frame 3 is what a run without the later prompt gives.
    alone = dict(tracker.track(frames, only(masks[0], 3)))
    for t in range(enter):
        np.testing.assert_array_equal(results[t], alone[t])


def test_a_later_group_remembers_nothing_from_before_its_prompt(tracker):
    """Object 7's own memory equals that of a run that starts at its prompt: frames before the
    prompt (where 7 is visible but unannotated) never vote it background."""
    frames, masks = moving_square_video(n=8)
    session = tracker.start(frames[0], only(masks[0], 3))
    for t in range(1, 3):
        session.step(frames[t])
    session.step(frames[3], prompt=only(masks[3], 7))
    alone = tracker.start(frames[3], only(masks[3], 7))
    for t in range(4, len(frames)):
        session.step(frames[t])
        alone.step(frames[t])
    late, own = session.state.groups[1].propagator, alone.state.groups[0].propagator
    assert session.state.groups[1].object_ids == (7,) and session.state.groups[1].first_frame == 3
    for (fa, la), (fb, lb) in zip(
        [*late.permanent, *late.recent], [*own.permanent, *own.recent], strict=True
    ):
        torch.testing.assert_close(fa, fb, rtol=0, atol=0)
        torch.testing.assert_close(la, lb, rtol=0, atol=0)


def test_correction_sets_the_prompted_pixels_and_keeps_the_others(tracker):
    frames, masks = moving_square_video(n=8)
    session = tracker.start(frames[0], masks[0])
    for t in range(1, 4):
        session.step(frames[t])
    fix = only(masks[4], 3)
    fix[fix == 3] = 0
    fix[12:20, 30:40] = 3  # a deliberately odd correction of object 3, object 7 absent
    out = session.step(frames[4], prompt=fix)
    np.testing.assert_array_equal(out == 3, fix == 3)  # exactly the prompt's pixels
    assert iou(out == 7, masks[4] == 7) > 0.5  # object 7 was still tracked there
    assert len(session.state.groups) == 1 and len(session.state.propagator.permanent) == 2


def test_prompt_memory_is_capped_keeping_the_first_and_latest(tiny_tracker):
    tracker = tiny_tracker(max_prompt_frames=3, **SMALL)
    frames, masks = moving_square_video(n=8)
    session = tracker.start(frames[0], masks[0])
    first = session.state.propagator.first[1]
    for t in range(1, 8):
        session.step(frames[t], prompt=masks[t])
    permanent = session.state.propagator.permanent
    assert len(permanent) == 3 and permanent[0][1] is first
    grid = tracker.grid_size(session.state.input_size)
    for (_, labels), t in zip(permanent[1:], (6, 7), strict=True):  # a full prompt is exact
        expected = object_labels(resize_mask(masks[t], *grid), (3, 7))
        torch.testing.assert_close(labels, expected, rtol=0, atol=0)


def test_backward_equals_forward_over_reversed_frames(tracker):
    frames, masks = moving_square_video(n=8)
    n = len(frames)
    backward = list(tracker.track(frames, prompts={n - 1: masks[-1]}, direction="backward"))
    forward = list(tracker.track(frames[::-1], masks[-1]))
    assert [i for i, _ in backward] == list(range(n - 1, -1, -1))
    for (i, a), (j, b) in zip(backward, forward, strict=True):
        assert i == n - 1 - j
        np.testing.assert_array_equal(a, b)


def test_both_directions_fill_the_frames_before_the_prompt(tracker):
    frames, masks = moving_square_video(n=8)
    middle = 4
    both = list(tracker.track(frames, prompts={middle: masks[middle]}, direction="both"))
    assert [i for i, _ in both] == [*range(middle, len(frames)), *range(middle - 1, -1, -1)]
    by_index = dict(both)
    forward = dict(tracker.track(frames, masks[middle], start=middle))
    for t in range(middle, len(frames)):
        np.testing.assert_array_equal(by_index[t], forward[t])
    backward = dict(tracker.track(frames, prompts={middle: masks[middle]}, direction="backward"))
    for t in range(middle):
        np.testing.assert_array_equal(by_index[t], backward[t])
        assert iou(by_index[t] == 3, masks[t] == 3) > 0.5


def test_bad_prompts_are_refused(tracker):
    frames, masks = moving_square_video(n=3)
    with pytest.raises(ValueError, match="either as first_mask or as prompts"):
        tracker.track(frames, masks[0], prompts={0: masks[0]})
    with pytest.raises(ValueError, match="direction must be one of"):
        tracker.track(frames, prompts={0: masks[0]}, direction="sideways")
    with pytest.raises(ValueError, match="prompts is empty"):
        tracker.track(frames, prompts={})
    with pytest.raises(ValueError, match=r"prompt for frame 1 is outside the frames tracked \(2"):
        tracker.track(frames, prompts={1: masks[0]}, start=2)
    with pytest.raises(ValueError, match="prompt for frame 5 is past the end of the given frames"):
        list(tracker.track(frames, prompts={0: masks[0], 5: masks[0]}))
    with pytest.raises(ValueError, match="prompt for frame 5 is past the end"):
        list(tracker.track(frames, prompts={0: masks[0], 5: masks[0]}, direction="both"))
    with pytest.raises(ValueError, match="the prompt of frame 2: the mask is 60x72"):
        list(tracker.track(frames, prompts={0: masks[0], 2: masks[0][:, :60]}))
    session = tracker.start(frames[0], masks[0])
    with pytest.raises(ValueError, match="the prompt of frame 1: the first mask is empty"):
        session.step(frames[1], prompt=np.zeros_like(masks[0]))
    assert session.state.frame_index == 0


def test_merge_and_prompt_labels_on_small_tensors():
    a = torch.tensor([[[0.9, 0.2]], [[0.1, 0.8]]])  # [2, 1, 2]: background, object
    b = torch.tensor([[[0.3, 1.0]], [[0.7, 0.0]]])
    torch.testing.assert_close(merge_group_labels([a]), a)
    merged = merge_group_labels([a, b], "min")
    torch.testing.assert_close(merged[0], torch.tensor([[0.3, 0.2]]))
    torch.testing.assert_close(merged[1:], torch.cat([a[1:], b[1:]]))
    torch.testing.assert_close(merge_group_labels([a, b], "product")[0], a[0] * b[0])
    labels = torch.tensor(
        [[[0.5, 0.2, 0.1]], [[0.3, 0.5, 0.1]], [[0.2, 0.3, 0.8]]]
    )  # [3, 1, 3]: background, objects 1 and 2; the prompt gives object 1 pixel 2 only and
    # some other group's object pixel 0
    prompt = torch.tensor([[0, 0, 1]])
    covered = torch.tensor([[True, False, True]])
    out = apply_prompt_labels(labels, prompt, covered, torch.tensor([False, True, False]))
    expected = torch.tensor([[[1.0, 0.7, 0.0]], [[0.0, 0.0, 1.0]], [[0.0, 0.3, 0.0]]])
    torch.testing.assert_close(out, expected)


# Real clips: backward reading streams and equals forward reading reversed.


@pytest.fixture(scope="module")
def boat_clip(shared_data):
    root = shared_data("davis2016-dev")
    frames = sorted((root / "JPEGImages" / "480p" / "boat").glob("*.jpg"))[:10]
    mask = read_mask(root / "Annotations" / "480p" / "boat" / "00009.png").ids
    return frames, mask


@pytest.mark.parametrize("backend", [b for b in available_backends() if b != "frames"])
def test_reverse_reader_of_a_video_file_is_the_frames_reversed(shared_data, backend):
    video = shared_data("videos", "boat.mp4")
    forward = list(iter_frames(video, backend=backend, start=3, stop=20))
    with FrameReader(video, backend=backend, start=3, stop=20, reverse=True, chunk=6) as reader:
        backward = list(reader)
    assert len(backward) == len(forward) == 17
    for a, b in zip(backward, forward[::-1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_backward_on_a_frame_folder_and_an_mp4(tracker, boat_clip, shared_data, tmp_path):
    files, mask = boat_clip
    folder, flipped = tmp_path / "frames", tmp_path / "flipped"
    folder.mkdir()
    flipped.mkdir()
    n = len(files)
    for i, path in enumerate(files):
        image = Image.open(path)
        image.save(folder / f"{i:05d}.png")
        image.save(flipped / f"{n - 1 - i:05d}.png")
    backward = list(tracker.track(folder, prompts={n - 1: mask}, direction="backward"))
    forward = list(tracker.track(flipped, mask))
    assert [i for i, _ in backward] == list(range(n - 1, -1, -1))
    for (i, a), (j, b) in zip(backward, forward, strict=True):
        assert i == n - 1 - j
        np.testing.assert_array_equal(a, b)
    video = shared_data("videos", "boat.mp4")
    decoded = list(iter_frames(video, stop=n))
    backward = list(tracker.track(video, prompts={n - 1: mask}, direction="backward", stop=n))
    forward = list(tracker.track(decoded[::-1], mask))
    assert len(backward) == n
    for (i, a), (j, b) in zip(backward, forward, strict=True):
        assert i == n - 1 - j
        np.testing.assert_array_equal(a, b)


# The command line: --prompt, --prompts, --direction, and their errors.

FAST = tiny_flags(64)


def test_cli_prompts_on_several_frames_and_both_directions(
    shared_data, tiny_tracker, tmp_path, capsys
):
    root = shared_data("davis2016-dev")
    frames = root / "JPEGImages" / "480p" / "boat"
    truth = root / "Annotations" / "480p" / "boat"
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shutil.copy(truth / "00003.png", prompts / "00003.png")
    out = tmp_path / "res"
    args = ["segment", frames, "--prompts", prompts, "--direction", "both", "--out", out]
    code, _, err = run_cli([*args, "--max-frames", 6, *FAST], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(6)]
    np.testing.assert_array_equal(
        read_mask(out / "00003.png").ids > 0, read_mask(truth / "00003.png").ids > 0
    )
    # The same run from the API gives the same masks.
    tracker = tiny_tracker(short_side=64)
    mask = read_mask(truth / "00003.png").ids
    for index, got in tracker.track(frames, prompts={3: mask}, direction="both", stop=6):
        np.testing.assert_array_equal(read_mask(out / f"{index:05d}.png").ids, got)
    # --prompt twice: the second one's object is new from frame 2 on.
    two = tmp_path / "two.png"
    write_mask(two, np.where(read_mask(truth / "00002.png").ids > 0, 2, 0))
    out2 = tmp_path / "res2"
    args = ["segment", frames, "--prompt", f"0:{truth / '00000.png'}", "--prompt", f"2:{two}"]
    code, _, err = run_cli([*args, "--out", out2, "--max-frames", 4, *FAST], capsys)
    assert code == 0, err
    assert 2 not in read_mask(out2 / "00001.png").ids and 2 in read_mask(out2 / "00003.png").ids
    assert "2 object(s) [1, 2]" in err


def test_cli_prompt_errors_are_one_line_and_status_2(shared_data, tmp_path, capsys):
    root = shared_data("davis2016-dev")
    frames = root / "JPEGImages" / "480p" / "boat"
    mask = root / "Annotations" / "480p" / "boat" / "00000.png"
    small = tmp_path / "small.png"
    write_mask(small, np.ones((100, 100), np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    base = ["segment", frames, "--out", tmp_path / "res", *FAST]
    cases = [
        (["--prompt", f"75:{mask}"], "is for frame 75, past the last frame"),
        (["--prompt", f"0:{broken}"], "broken.png"),
        (["--prompt", f"0:{small}"], "the prompt of frame 0: the mask is 100x100"),
        (["--prompt", f"4:{mask}", "--prompt", f"4:{small}"], "two prompts for frame 4"),
        (["--auto", "--direction", "backward"], "--direction backward needs a prompt"),
        (["--prompt", f"x:{mask}"], "--prompt expects FRAME:MASK"),
        (["--prompts", tmp_path], "prompt broken.png in"),
    ]
    for flags, message in cases:
        code, _, err = run_cli([*base, *flags], capsys)
        assert code == 2 and message in err, (flags, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("dinotrack: error:")
        assert not (tmp_path / "res").exists()
    with pytest.raises(SystemExit):  # argparse: one way of giving the objects
        run_cli([*base, "--mask", mask, "--prompt", f"3:{mask}"], capsys)
    assert "argument --prompt: not allowed with argument --mask" in capsys.readouterr().err
