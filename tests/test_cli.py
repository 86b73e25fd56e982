"""`dinotrack segment` end to end on real clips, and its error cases."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_cli, tiny_flags
from PIL import Image

from dinotrack.io.masks import davis_palette, read_mask, write_mask
from dinotrack.io.video import iter_frames, probe_video
from dinotrack.results.writer import RECORD_NAME as MARKER_NAME

FAST = tiny_flags(96)
run = run_cli


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def results(folder):
    """The files of a results directory, less the marker that lets a later run replace it."""
    names = sorted(p.name for p in folder.iterdir())
    assert MARKER_NAME in names
    return [name for name in names if name != MARKER_NAME]


def test_segment_frames_directory(boat, tmp_path, capsys):
    frames, mask = boat
    out = tmp_path / "res"
    code, _, err = run(
        ["segment", frames, "--mask", mask, "--out", out, "--max-frames", 5, *FAST], capsys
    )
    assert code == 0, err
    names = results(out)
    assert names == [f"{i:05d}.png" for i in range(5)]  # named like the input frames
    first = Image.open(out / "00000.png")
    assert first.mode == "P" and first.size == (854, 480)
    np.testing.assert_array_equal(np.asarray(first) > 0, read_mask(mask).ids > 0)
    assert "segmented 5 frames, 1 object(s)" in err and str(out) in err.replace("\n", "")
    assert not leftovers(tmp_path)


def test_segment_video_file_with_overlay_and_palette_ids(shared_data, tmp_path, capsys):
    video = shared_data("videos", "bear.mp4")
    frame0 = next(iter_frames(video))
    ids = np.zeros(frame0.shape[:2], np.uint8)
    ids[200:300, 300:500] = 4  # palette index 4 must stay 4
    ids[50:90, 50:120] = 9
    palette = davis_palette().copy()
    palette[4] = (10, 200, 30)
    write_mask(tmp_path / "first.png", ids, palette)
    out, overlay = tmp_path / "bear", tmp_path / "bear.mp4"
    code, _, err = run(
        [
            "segment",
            video,
            "--mask",
            tmp_path / "first.png",
            "--out",
            out,
            "--overlay",
            overlay,
            "--max-frames",
            4,
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err
    assert results(out) == [f"{i:05d}.png" for i in range(4)]
    last = read_mask(out / "00003.png")
    assert last.format == "palette" and set(np.unique(last.ids)) <= {0, 4, 9}
    np.testing.assert_array_equal(last.palette[4], (10, 200, 30))  # the input's palette
    info = probe_video(overlay)
    assert (info.height, info.width) == frame0.shape[:2]
    assert len(list(iter_frames(overlay))) == 4


def test_start_frame_tracks_from_the_masked_frame(boat, shared_data, tmp_path, capsys):
    frames, _ = boat
    mask = shared_data("davis2016-dev", "Annotations", "480p", "boat", "00003.png")
    out = tmp_path / "res"
    args = ["segment", frames, "--mask", mask, "--out", out, "--start-frame", 3, *FAST]
    code, _, err = run([*args, "--max-frames", 3], capsys)
    assert code == 0, err
    assert results(out) == ["00003.png", "00004.png", "00005.png"]  # named as the frames
    given = read_mask(mask).ids
    np.testing.assert_array_equal(read_mask(out / "00003.png").ids, given)  # the mask, as given

    # The same from a video file: the names follow the start frame.
    video = shared_data("videos", "boat.mp4")
    code, _, err = run(
        ["segment", video, "--mask", mask, "--out", tmp_path / "v", "--start-frame", 3]
        + ["--max-frames", 2, *FAST],
        capsys,
    )
    assert code == 0, err
    assert results(tmp_path / "v") == ["00003.png", "00004.png"]

    code, _, err = run(
        ["segment", frames, "--mask", mask, "--out", out, "--start-frame", 75, *FAST], capsys
    )
    assert code == 2 and "--start-frame 75 is past the last frame" in err and "75 frames" in err


def test_rerun_replaces_its_own_output_and_nothing_else(boat, tmp_path, capsys):
    frames, mask = boat
    out = tmp_path / "res"
    args = ["segment", frames, "--mask", mask, "--out", out, *FAST]
    code, _, err = run([*args, "--max-frames", 3], capsys)
    assert code == 0 and "replacing" not in err, err
    code, _, err = run([*args, "--max-frames", 2], capsys)
    assert code == 0 and "(replacing the earlier result there)" in err, err  # said, not silent
    assert results(out) == ["00000.png", "00001.png"]  # the earlier result, replaced whole
    assert not leftovers(tmp_path)

    # A directory of the user's own files, or the input frames, is refused, not deleted.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = run([*args[:4], "--out", mine, *FAST], capsys)
    assert code == 2 and "did not write (e.g. notes.txt)" in err
    assert (mine / "notes.txt").read_text() == "keep"
    copy = tmp_path / "frames"
    copy.mkdir()
    for name in ("00000.jpg", "00001.jpg"):
        (copy / name).write_bytes((Path(frames) / name).read_bytes())
    code, _, err = run(["segment", copy, "--mask", mask, "--out", copy, *FAST], capsys)
    assert code == 2 and sorted(p.name for p in copy.iterdir()) == ["00000.jpg", "00001.jpg"]


def test_overlay_paths_are_checked_before_any_work(boat, shared_data, tmp_path, capsys):
    frames, mask = boat
    args = ["segment", frames, "--mask", mask, "--out", tmp_path / "res", *FAST]
    video = tmp_path / "clip.mp4"
    shutil.copyfile(shared_data("videos", "dog-agility.mp4"), video)
    before = video.read_bytes()
    cases = [
        ([*args, "--overlay", tmp_path / "res" / "ov.mp4"], "is inside --out"),
        ([*args, "--overlay", tmp_path], "is a directory"),
        (
            ["segment", video, "--mask", mask, "--out", tmp_path / "r2", "--overlay", video, *FAST],
            "is the input",
        ),
    ]
    for case, match in cases:
        code, _, err = run(case, capsys)
        assert code == 2 and match in err, err
    assert video.read_bytes() == before
    assert not (tmp_path / "res").exists() and not (tmp_path / "r2").exists()
    # Missing parents of the overlay are created, as for --out.
    code, _, err = run([*args, "--max-frames", 2, "--overlay", tmp_path / "a" / "ov.mp4"], capsys)
    assert code == 0, err
    assert (tmp_path / "a" / "ov.mp4").is_file()


def error_case(args, capsys, tmp_path, match):
    code, out, err = run(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dinotrack: error: "), err
    assert match in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_error_missing_input(tmp_path, capsys, boat):
    _, mask = boat
    args = ["segment", tmp_path / "nope.mp4", "--mask", mask, "--out", tmp_path / "out", *FAST]
    error_case(args, capsys, tmp_path, "nope.mp4")


def test_error_unreadable_video(tmp_path, capsys, boat):
    _, mask = boat
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 not a video" * 50)
    error_case(
        ["segment", bad, "--mask", mask, "--out", tmp_path / "out", *FAST],
        capsys,
        tmp_path,
        "broken.mp4",
    )


def test_error_unknown_model(tmp_path, capsys, boat):
    frames, mask = boat
    args = ["segment", frames, "--mask", mask, "--out", tmp_path / "out", "--model", "vit_nope"]
    error_case(args, capsys, tmp_path, "unknown model 'vit_nope'")


def test_error_mask_of_other_aspect_comes_before_loading_weights(tmp_path, capsys, boat):
    # dino_vits8's weights cannot be downloaded here: the mask's error must come first.
    frames, _ = boat
    write_mask(tmp_path / "m.png", np.ones((100, 100), np.uint8))
    args = ["segment", frames, "--mask", tmp_path / "m.png", "--out", tmp_path / "out"]
    error_case([*args, "--model", "dino_vits8"], capsys, tmp_path, "another aspect ratio")


def test_error_empty_mask(tmp_path, capsys, boat):
    frames, _ = boat
    write_mask(tmp_path / "m.png", np.zeros((480, 854), np.uint8))
    args = ["segment", frames, "--mask", tmp_path / "m.png", "--out", tmp_path / "out", *FAST]
    error_case(args, capsys, tmp_path, "empty")


def test_error_corrupt_checkpoint(tmp_path, capsys, boat):
    frames, mask = boat
    (tmp_path / "w.pth").write_bytes(b"garbage")
    args = [
        "segment",
        frames,
        "--mask",
        mask,
        "--out",
        tmp_path / "out",
        "--weights",
        tmp_path / "w.pth",
        *FAST,
    ]
    error_case(args, capsys, tmp_path, "corrupt")


def test_error_output_is_a_file(tmp_path, capsys, boat):
    frames, mask = boat
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, _, err = run(["segment", frames, "--mask", mask, "--out", target, *FAST], capsys)
    assert code == 2 and "not a directory" in err and "Traceback" not in err
    assert target.read_text() == "keep me"


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dinotrack",
            "segment",
            str(tmp_path / "none.mp4"),
            "--mask",
            str(tmp_path / "none.png"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("dinotrack: error:") and "Traceback" not in proc.stderr


def test_models_lists_backbones(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "dino_vits8" in out and "test_vit_tiny" not in out
    code, out, _ = run(["models", "--all"], capsys)
    assert code == 0 and "dino_vits8" in out and "test_vit_tiny" in out


def test_package_exports_resolve_lazily():
    import dinotrack

    assert sorted(dinotrack._EXPORTS) == sorted(dinotrack.__all__)
    for name in dinotrack.__all__:
        assert getattr(dinotrack, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dinotrack.nope  # noqa: B018
