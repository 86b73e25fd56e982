"""The interactive engine (dinotrack.InteractiveSession), its frame cache, project file and
clicks: the same results as `Tracker.track` and `dinotrack segment`, byte for byte, with
re-propagation that recomputes only what a change can affect."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cli_support import run_cli, tiny_flags
from PIL import Image
from synthetic_clips import moving_square_folder

from dinotrack import InteractiveSession
from dinotrack.io.frame_cache import FrameCache
from dinotrack.io.masks import read_mask, write_mask
from dinotrack.io.video import FrameReader
from dinotrack.pipeline.interactive import StaleResultsError

SHORT_SIDE = 64
BATCH = 3  # resumed passes must start on the batch boundaries of a full run


@pytest.fixture
def tracker(tiny_tracker):
    return tiny_tracker(short_side=SHORT_SIDE, batch_size=BATCH)


@pytest.fixture
def clip(tmp_path):
    """A frames folder of 12 synthetic frames (two squares, ids 3 and 7) and its masks."""
    folder = tmp_path / "clip"
    return folder, moving_square_folder(folder, n=12)


def only(mask, obj):
    return np.where(mask == obj, mask, 0).astype(np.uint8)


def assert_same_run(got, expected):
    assert [i for i, _ in got] == [i for i, _ in expected]
    for (_, a), (_, b) in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("direction", ["forward", "backward", "both"])
def test_propagate_is_tracker_track(tracker, clip, tmp_path, direction):
    folder, masks = clip
    session = InteractiveSession(tracker, folder)
    session.set_prompt(4, only(masks[4], 3))
    session.set_prompt(8, masks[8])
    got = list(session.propagate(direction))
    expected = list(
        tracker.track(folder, prompts={4: only(masks[4], 3), 8: masks[8]}, direction=direction)
    )
    assert_same_run(got, expected)
    assert session.stats.computed == len(got) + (direction == "both")  # the pass's first frame
    assert session.result_frames == sorted(i for i, _ in got)
    np.testing.assert_array_equal(session.mask(got[-1][0]), got[-1][1])


def test_correction_recomputes_only_the_frames_after_it(tracker, clip):
    folder, masks = clip
    session = InteractiveSession(tracker, folder)
    session.set_prompt(0, masks[0])
    list(session.propagate())
    assert session.stats.computed == 12
    corrected = 7
    session.set_prompt(corrected, only(masks[corrected], 7))
    got = list(session.propagate())
    # Frames before the correction are kept, from the batch boundary at or before it on
    # (6 = 7 - 7 % 3) they are recomputed: the session is rebuilt from its snapshot.
    assert session.stats.reused == 6 and session.stats.computed == 6
    prompts = {0: masks[0], corrected: only(masks[corrected], 7)}
    assert_same_run(got, list(tracker.track(folder, prompts=prompts)))
    # Deleting the correction goes back to the first run's results, recomputed from frame 6.
    session.delete_prompt(corrected)
    got = list(session.propagate())
    assert session.stats.reused == 6
    assert_same_run(got, list(tracker.track(folder, prompts={0: masks[0]})))


def test_backward_correction_keeps_the_frames_after_it(tracker, clip):
    folder, masks = clip
    session = InteractiveSession(tracker, folder)
    session.set_prompt(11, masks[11])
    list(session.propagate("backward"))
    session.set_prompt(5, only(masks[5], 3))
    got = list(session.propagate("backward"))
    assert session.stats.reused == 6 and session.stats.computed == 6  # frames 11..6 kept
    expected = tracker.track(
        folder, prompts={11: masks[11], 5: only(masks[5], 3)}, direction="backward"
    )
    assert_same_run(got, list(expected))


def test_cancelled_propagation_resumes_where_it_stopped(tracker, clip):
    folder, masks = clip
    session = InteractiveSession(tracker, folder)
    with pytest.raises(StaleResultsError, match="nothing to export yet: give an object a mask"):
        session.export(["png"], directory=folder.parent / "out")  # before any prompt
    session.set_prompt(0, masks[0])
    results = session.propagate()
    first = [next(results) for _ in range(5)]
    session.cancel()
    rest = list(results)  # stops after the current frame
    assert len(first) + len(rest) < 12 and not session.running
    assert not session.up_to_date()
    with pytest.raises(StaleResultsError, match="propagate first"):
        session.export(["png"], directory=folder.parent / "out")
    got = list(session.propagate())
    assert session.stats.computed < 12 and session.stats.reused > 0
    assert_same_run(got, list(tracker.track(folder, prompts={0: masks[0]})))
    assert session.up_to_date()


def test_export_is_byte_identical_to_segment(tracker, clip, tmp_path, capsys):
    folder, masks = clip
    prompts = {0: only(masks[0], 3), 5: masks[5]}
    session = InteractiveSession(tracker, folder, out=tmp_path / "studio")
    for frame, ids in prompts.items():
        session.set_prompt(frame, ids)
    list(session.propagate("forward"))
    session.set_prompt(8, only(masks[8], 7))  # a correction, then re-propagation
    list(session.propagate("forward"))
    written = session.export(["png", "coco", "mot", "objects"])
    results = tmp_path / "studio" / "results"
    assert written[0].parent == results and (results / "coco.json") in written
    prompt_flags = []
    for frame in session.prompt_frames:
        path = tmp_path / f"prompt{frame}.png"
        write_mask(path, session.prompt(frame))
        prompt_flags += ["--prompt", f"{frame}:{path}"]
    flags = tiny_flags(SHORT_SIDE) + ["--batch-size", str(BATCH), "--save", "png,coco,mot,objects"]
    code, _, err = run_cli(
        ["segment", folder, *prompt_flags, "--out", tmp_path / "seg", *flags], capsys
    )
    assert code == 0, err
    ours = sorted(p.relative_to(results) for p in results.rglob("*") if p.is_file())
    theirs = sorted(
        p.relative_to(tmp_path / "seg") for p in (tmp_path / "seg").rglob("*") if p.is_file()
    )
    assert ours == theirs and len(ours) > 12
    for relative in ours:
        if relative.name != ".dinotrack-output":
            assert (results / relative).read_bytes() == (tmp_path / "seg" / relative).read_bytes()


def test_export_on_a_real_clip_is_byte_identical_to_segment(tiny_tracker, boat, tmp_path, capsys):
    frames_dir, annotation = boat
    clip = tmp_path / "boat"
    clip.mkdir()
    for name in sorted(p.name for p in frames_dir.iterdir())[:6]:
        shutil.copy(frames_dir / name, clip / name)
    first = read_mask(annotation).ids
    tracker = tiny_tracker(short_side=SHORT_SIDE)
    session = InteractiveSession(tracker, clip, out=tmp_path / "studio")
    session.set_prompt(0, first)
    corrected = np.zeros_like(first)
    corrected[200:300, 300:500] = 1
    session.set_prompt(3, corrected)
    list(session.propagate("both"))
    session.export(["png", "coco"])
    flags = tiny_flags(SHORT_SIDE) + ["--save", "png,coco", "--direction", "both"]
    write_mask(tmp_path / "p3.png", corrected)
    prompts = ["--prompt", f"0:{annotation}", "--prompt", f"3:{tmp_path / 'p3.png'}"]
    code, _, err = run_cli(["segment", clip, *prompts, "--out", tmp_path / "seg", *flags], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "seg").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "studio" / "results").iterdir())
    for name in names:
        ours = (tmp_path / "studio" / "results" / name).read_bytes()
        assert ours == (tmp_path / "seg" / name).read_bytes() or name == ".dinotrack-output"


def test_project_is_restored_and_never_replaces_foreign_files(tracker, clip, tmp_path):
    folder, masks = clip
    out = tmp_path / "studio"
    session = InteractiveSession(tracker, folder, out=out)
    car = session.add_object("car")
    session.set_prompt(2, masks[2])  # ids 3 and 7 become objects
    session.update_object(7, name="bus", hidden=True)
    session.update_settings({"opacity": 0.4})
    session.set_object_mask(6, car.id, masks[6] == 3)
    data = json.loads((out / "studio.json").read_text())
    assert data["prompts"] == [2, 6]

    again = InteractiveSession(tracker, folder, out=out)
    assert [(o.id, o.name, o.hidden) for o in again.objects] == [
        (1, "car", False),
        (3, "object 3", False),
        (7, "bus", True),
    ]
    assert again.prompt_frames == [2, 6] and again.settings == {"opacity": 0.4}
    np.testing.assert_array_equal(again.prompt(2), masks[2])
    np.testing.assert_array_equal(again.prompt(6), np.where(masks[6] == 3, 1, 0))
    again.delete_prompt(6)
    assert sorted(p.name for p in (out / ".studio" / "prompts").iterdir()) == ["00002.png"]

    other = tmp_path / "other"
    shutil.copytree(folder, other)
    (other / "00000.png").unlink()
    with pytest.raises(ValueError, match="is the project of"):
        InteractiveSession(tracker, other, out=out)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "studio.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not a dinotrack studio project"):
        InteractiveSession(tracker, folder, out=tmp_path / "foreign")
    # An export never replaces what dinotrack did not write.
    list(again.propagate())
    (out / "results").mkdir()
    (out / "results" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        again.export(["png"])
    assert (out / "results" / "notes.txt").read_text() == "mine"


def test_results_survive_a_restart_and_resume_after_a_correction(
    tracker, tiny_tracker, clip, tmp_path
):
    folder, masks = clip
    out = tmp_path / "studio"
    session = InteractiveSession(tracker, folder, out=out)
    session.set_prompt(0, masks[0])
    results = session.propagate()
    first = [next(results) for _ in range(7)]
    session.cancel()
    list(results)
    assert (out / ".studio" / "results.pt").is_file()

    # A new process on the same folder shows the frames computed, stale as they were...
    again = InteractiveSession(tracker, folder, out=out)
    assert again.result_frames == [i for i, _ in first] and not again.up_to_date()
    np.testing.assert_array_equal(again.mask(6), first[6][1])
    # ...and the propagation resumes from them, byte-identical to a run from scratch.
    got = list(again.propagate())
    assert again.stats.reused == 6 and again.stats.computed == 6
    assert_same_run(got, list(tracker.track(folder, prompts={0: masks[0]})))
    assert again.up_to_date()

    # After a restart, a correction recomputes only the frames after it.
    third = InteractiveSession(tracker, folder, out=out)
    assert third.up_to_date() and third.result_frames == list(range(12))
    third.set_prompt(9, only(masks[9], 7))
    got = list(third.propagate())
    assert third.stats.reused == 9 and third.stats.computed == 3
    expected = tracker.track(folder, prompts={0: masks[0], 9: only(masks[9], 7)})
    assert_same_run(got, list(expected))

    # Another model or other settings never show these results.
    with pytest.warns(UserWarning, match="another model or settings"):
        other = InteractiveSession(
            tiny_tracker(short_side=SHORT_SIDE, batch_size=2), folder, out=out
        )
    assert other.result_frames == [] and other.prompt_frames == [0, 9]
    assert len(other.notices) == 1 and "another model or settings" in other.notices[0]
    assert third.notices == []
    # Results copied from the project of another video are refused too.
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    elsewhere = InteractiveSession(tracker, copy, out=tmp_path / "elsewhere")
    elsewhere.set_prompt(0, masks[0])
    list(elsewhere.propagate())
    shutil.copy(tmp_path / "elsewhere" / ".studio" / "results.pt", out / ".studio" / "results.pt")
    with pytest.warns(UserWarning, match="computed on another video"):
        assert InteractiveSession(tracker, folder, out=out).result_frames == []
    # A damaged file is reported and left aside; a reset removes the results.
    (out / ".studio" / "results.pt").write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="cannot be read"):
        damaged = InteractiveSession(tracker, folder, out=out)
    assert damaged.result_frames == []
    list(damaged.propagate())
    assert (out / ".studio" / "results.pt").is_file()
    damaged.reset()
    assert not (out / ".studio" / "results.pt").exists()
    assert InteractiveSession(tracker, folder, out=out).result_frames == []


def test_kept_results_of_a_changed_video_are_not_shown_and_a_failed_save_is_said(
    tracker, clip, tmp_path
):
    folder, masks = clip
    out = tmp_path / "studio"
    session = InteractiveSession(tracker, folder, out=out)
    session.set_prompt(0, masks[0])
    list(session.propagate())
    # A frame rewritten in place (same size, same count): the masks are another video's.
    frame = sorted(folder.iterdir())[5]
    pixels = np.asarray(Image.open(frame))
    Image.fromarray(255 - pixels).save(frame)
    with pytest.warns(UserWarning, match="has changed since the kept results"):
        again = InteractiveSession(tracker, folder, out=out)
    assert again.result_frames == [] and "has changed" in again.notices[0]
    list(again.propagate())  # new results replace them: the notice is past
    assert again.notices == [] and again.up_to_date()
    # Results that cannot be written (here a folder in the file's place) are said so, kept
    # in memory, and still exported.
    (out / ".studio" / "results.pt").unlink()
    (out / ".studio" / "results.pt").mkdir()
    again.set_prompt(3, only(masks[3], 7))
    with pytest.warns(UserWarning, match="could not be kept"):
        list(again.propagate())
    assert again.notices[0].startswith("warning: the results could not be kept")
    assert again.up_to_date() and again.export(["png"])


def test_results_are_saved_during_a_propagation(tracker, clip, tmp_path):
    """A propagation that never ends (a crash, a killed process) loses at most `save_every`
    seconds of work: a new session on the folder finds the frames saved so far."""
    folder, masks = clip
    out = tmp_path / "studio"
    with pytest.raises(ValueError, match="save_every"):
        InteractiveSession(tracker, folder, out=out, save_every=-1)
    session = InteractiveSession(tracker, folder, out=out, save_every=0)
    session.set_prompt(0, masks[0])
    results = session.propagate()
    first = [next(results) for _ in range(5)]  # the run stays suspended, as if killed
    again = InteractiveSession(tracker, folder, out=out)
    assert again.result_frames == [i for i, _ in first]
    for index, mask in first:
        np.testing.assert_array_equal(again.mask(index), mask)
    results.close()


def test_objects_and_prompt_edits(tracker, clip):
    folder, masks = clip
    session = InteractiveSession(tracker, folder)
    session.set_prompt(0, masks[0])
    session.set_prompt(4, only(masks[4], 7))
    session.remove_object(7)
    assert [o.id for o in session.objects] == [3]
    assert session.prompt_frames == [0]  # frame 4 held object 7 only
    assert 7 not in session.prompt(0)
    assert session.objects[0].color == "#808000"  # DAVIS palette entry 3
    with pytest.raises(ValueError, match="the prompt of frame 2: the first mask is empty"):
        session.set_prompt(2, np.zeros_like(masks[2]))
    with pytest.raises(ValueError, match="another aspect ratio"):
        session.set_prompt(2, np.ones((50, 50), np.uint8))
    with pytest.raises(IndexError, match="the video has 12 frames"):
        session.set_prompt(12, masks[0])
    with pytest.raises(KeyError):
        session.delete_prompt(5)
    with pytest.raises(ValueError, match="exists already"):
        session.add_object(object_id=3)
    session.reset()
    assert session.objects == [] and session.prompt_frames == []


def test_frame_cache_holds_few_frames_and_matches_the_reader(clip):
    folder, _ = clip
    cache = FrameCache(folder, capacity=4)
    with FrameReader(folder) as reader:
        frames = list(reader)
    for i in (0, 5, 11, 5, 3, 2, 1):
        np.testing.assert_array_equal(cache.get(i), frames[i])
    assert len(cache.cached()) <= 4
    assert not cache.get(0).flags.writeable
    with pytest.raises(IndexError, match="0 to 11"):
        cache.get(12)


def test_frame_cache_of_a_video_file_reads_chunks(shared_data):
    video = shared_data("videos", "boat.mp4")
    cache = FrameCache(video, capacity=16, chunk=8)
    with FrameReader(video, start=20, stop=22) as reader:
        expected = list(reader)
    np.testing.assert_array_equal(cache.get(21), expected[1])
    assert cache.cached() == list(range(16, 24))


def two_regions(height=96, width=160):
    """A frame of two flat colours (a red rectangle on blue) and the rectangle's mask."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:] = (30, 90, 200)
    truth = np.zeros((height, width), bool)
    truth[24:72, 48:120] = True
    frame[truth] = (220, 60, 40)
    return frame, truth


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_clicks_and_box_grow_the_region(tracker, tmp_path):
    frame, truth = two_regions()
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    session = InteractiveSession(tracker, folder)
    obj = session.add_object("red").id
    mask = session.add_clicks(1, obj, [(80, 50)], [1])
    assert iou(mask, truth) > 0.9
    np.testing.assert_array_equal(session.prompt(1) == obj, mask)
    # A click on the blue selects the blue, not the red.
    blue = session.add_clicks(2, 2, [(10, 10)], [1])
    assert iou(blue, ~truth) > 0.9
    # A box alone, on another object.
    boxed = session.add_clicks(0, 3, box=(40, 16, 128, 80))
    assert iou(boxed, truth) > 0.8 and not boxed[:16].any()
    # A negative click on the red cuts the red out of object 2 (its mask seeds the growth).
    session.add_clicks(2, 2, [(80, 50)], [0])
    assert not (session.prompt(2) == 2)[truth].any()
    with pytest.raises(ValueError, match="outside the frame"):
        session.add_clicks(0, obj, [(160, 10)], [1])
    with pytest.raises(ValueError, match="nothing to grow"):
        session.add_clicks(0, 9, [(10, 10)], [0])


def test_click_and_box_on_a_real_frame_with_the_shipped_model(boat):
    from dinotrack import Tracker
    from dinotrack.io.video import read_image
    from dinotrack.tracking.clicks import click_mask

    frames_dir, annotation = boat
    frame = read_image(frames_dir / "00000.jpg")
    truth = read_mask(annotation).ids > 0
    tracker = Tracker.from_pretrained("dinotrack_vitt16_v3", device="cpu")
    feats = tracker.extractor(frame[None].copy(), tracker.input_size(*frame.shape[:2]))[0]
    ys, xs = np.nonzero(truth)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    mask = click_mask(frame, feats, [(330, 280)], [1], box)  # on the hull
    assert mask[280, 330] and not mask[: box[1]].any() and not mask[:, box[2] :].any()
    assert iou(mask, truth) > 0.3


def test_segment_points_are_the_engine_clicks(tracker, clip, tmp_path, capsys):
    folder, _ = clip
    flags = tiny_flags(SHORT_SIDE) + ["--batch-size", str(BATCH)]
    args = ["--point", "20,20:3", "--neg-point", "100,60:3", "--box", "5:60,40,110,70:7"]
    code, _, err = run_cli(["segment", folder, *args, "--out", tmp_path / "seg", *flags], capsys)
    assert code == 0, err
    session = InteractiveSession(tracker, folder, out=tmp_path / "studio")
    session.add_clicks(0, 3, [(20, 20), (100, 60)], [1, 0])
    session.add_clicks(5, 7, box=(60, 40, 110, 70))
    list(session.propagate())
    session.export(["png"])
    for path in sorted((tmp_path / "seg").glob("*.png")):
        assert path.read_bytes() == (tmp_path / "studio" / "results" / path.name).read_bytes()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--point", "500,10"], "--point 500,10: click (500, 10) is outside the frame"),
        (["--point", "10"], "--point expects [FRAME:]X,Y[:OBJ]"),
        (["--point", "40:10,10"], "frame 40 does not exist"),
        (["--neg-point", "10,10"], "has only negative clicks"),
        (["--box", "10,10,5,50"], "x0 < x1 and y0 < y1"),
        (["--box", "10,10,500,50"], "--box 10,10,500,50: the box 10,10,500,50 is not inside"),
        (["--point", "10,10", "--auto"], "do not go with --auto"),
    ],
)
def test_segment_click_errors_are_one_line(clip, tmp_path, capsys, flag, message):
    folder, _ = clip
    code, _, err = run_cli(
        ["segment", folder, *flag, "--out", tmp_path / "o", *tiny_flags()], capsys
    )
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_export_of_a_range_with_an_overlay(tracker, clip, tmp_path):
    folder, masks = clip
    out = tmp_path / "studio"
    session = InteractiveSession(tracker, folder, out=out)
    session.set_prompt(0, masks[0])
    list(session.propagate(stop=6))
    written = session.export(["png", "overlay"])
    assert [p.name for p in written] == [f"{i:05d}.png" for i in range(6)] + ["overlay.mp4"]
    with FrameReader(out / "overlay.mp4") as reader:
        assert sum(1 for _ in reader) == 6
    session.export(["png", "overlay"])  # its own overlay, unchanged, is replaced
    (out / "overlay.mp4").write_bytes(b"the user's video")
    with pytest.raises(FileExistsError):
        session.export(["png", "overlay"])
    assert (out / "overlay.mp4").read_bytes() == b"the user's video"


def test_a_tracker_with_redetect_resumes_byte_identically(tiny_tracker, tmp_path):
    """With `redetect`, the snapshots carry the re-detection's state (an object lost and
    searched for): a correction after it, and a restart, resume as a full run computes."""
    from PIL import Image
    from synthetic_clips import moving_square_video

    frames, masks = moving_square_video(n=13)
    background = np.random.default_rng(0).integers(0, 255, frames[0].shape, dtype=np.uint8)
    folder = tmp_path / "hidden"
    folder.mkdir()
    for i, frame in enumerate(frames):
        if 4 <= i <= 9:  # object 3 hidden for six frames: the background shows
            frame = np.where((masks[i] == 3)[..., None], background, frame)
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    tracker = tiny_tracker(short_side=128, batch_size=BATCH, redetect=True)
    session = tracker.start(np.asarray(Image.open(folder / "00000.png")), masks[0])
    lost = []
    for i in range(1, 13):
        session.step(np.asarray(Image.open(folder / f"{i:05d}.png")))
        lost.append(max(e[4] for e in session.state.groups[0].propagator.redetector.state()))
    # Lost from frame 4, still searched for at frame 8 (where the passes below resume), found
    # again when it shows at frame 10: the resumed passes need that state.
    assert lost[3] > 0 and lost[7] > 0 and lost[9] == 0, lost

    out = tmp_path / "studio"
    studio = InteractiveSession(tracker, folder, out=out)
    studio.set_prompt(0, masks[0])
    assert_same_run(list(studio.propagate()), list(tracker.track(folder, prompts={0: masks[0]})))
    prompts = {0: masks[0], 9: only(masks[9], 7)}
    studio.set_prompt(9, prompts[9])
    got = list(studio.propagate())
    assert studio.stats.reused == 9
    assert_same_run(got, list(tracker.track(folder, prompts=prompts)))
    again = InteractiveSession(tracker, folder, out=out)  # a restart, then a correction
    again.set_prompt(10, only(masks[10], 3))
    prompts[10] = only(masks[10], 3)
    got = list(again.propagate())
    assert again.stats.reused == 9
    assert_same_run(got, list(tracker.track(folder, prompts=prompts)))
