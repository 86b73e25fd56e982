"""`dinotrack segment` on bad settings and unusual first masks: one error line and exit 2,
or a run that goes through with one warning line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from cli_support import run_cli, tiny_flags
from PIL import Image, ImageFilter

from dinotrack.io.masks import read_mask, resize_mask, write_mask

FAST = tiny_flags(64)


def segment(args, capsys):
    code, _, err = run_cli(["segment", *args, *FAST], capsys)
    return code, [line for line in err.splitlines() if line.strip()]


def segment_process(args):
    """Runs the CLI in a subprocess, where Python prints warnings as the user sees them (pytest
    captures them in process); returns the exit status and the non-blank stderr lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "dinotrack", "segment", *(str(a) for a in args), *FAST],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]


def assert_one_error(code, lines, match, tmp_path):
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("dinotrack: error: "), lines
    assert match in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0"])
def test_non_finite_or_zero_temperature_is_an_error(boat, tmp_path, capsys, value):
    frames, mask = boat
    args = [frames, "--mask", mask, "--out", tmp_path / "out", f"--temperature={value}"]
    code, lines = segment([*args, "--max-frames", 2], capsys)
    assert_one_error(code, lines, "temperature must be a finite number > 0", tmp_path)


def test_topk_above_the_candidates_runs(boat, tmp_path, capsys):
    frames, mask = boat
    out = tmp_path / "out"
    code, lines = segment(
        [frames, "--mask", mask, "--out", out, "--topk", 100000, "--max-frames", 3], capsys
    )
    assert code == 0, lines
    assert sorted(out.glob("*.png")) == [out / f"0000{i}.png" for i in range(3)]


def test_4k_mask_for_480p_frames_is_resized_with_a_warning(boat, tmp_path):
    frames, mask = boat
    big = resize_mask(read_mask(mask).ids, 2160, 3840)
    write_mask(tmp_path / "4k.png", big)
    out = tmp_path / "out"
    code, lines = segment_process(
        [frames, "--mask", tmp_path / "4k.png", "--out", out, "--max-frames", 2]
    )
    assert code == 0, lines
    assert lines[0] == (
        "dinotrack: warning: the mask is 3840x2160 but the frames are 854x480; resizing the "
        "mask (nearest neighbour)"
    )
    first = read_mask(out / "00000.png").ids
    assert first.shape == (480, 854)
    assert (first == read_mask(mask).ids).mean() > 0.99


def test_tiny_mask_is_an_error(boat, tmp_path, capsys):
    frames, _ = boat
    write_mask(tmp_path / "tiny.png", np.ones((2, 2), np.uint8))
    code, lines = segment(
        [frames, "--mask", tmp_path / "tiny.png", "--out", tmp_path / "out"], capsys
    )
    assert_one_error(code, lines, "the mask is 2x2 but the frames are 854x480", tmp_path)
    assert "too small to carry a shape" in lines[0]


def test_anti_aliased_gray_mask_is_an_error(boat, tmp_path, capsys):
    frames, mask = boat
    with Image.open(mask) as image:
        image.convert("L").filter(ImageFilter.GaussianBlur(2)).save(tmp_path / "soft.png")
    code, lines = segment(
        [frames, "--mask", tmp_path / "soft.png", "--out", tmp_path / "out"], capsys
    )
    assert_one_error(code, lines, "looks like an anti-aliased binary mask", tmp_path)
    assert "Threshold it to 0/255, or save the objects as a palette PNG" in lines[0]


def test_object_smaller_than_a_patch_is_warned_about(boat, tmp_path):
    frames, mask = boat
    ids = read_mask(mask).ids.astype(np.uint8)
    ids[10, 10] = 2  # one pixel
    write_mask(tmp_path / "first.png", ids)
    out = tmp_path / "out"
    code, lines = segment_process(
        [frames, "--mask", tmp_path / "first.png", "--out", out, "--max-frames", 2]
    )
    assert code == 0, lines
    assert lines[0] == (
        "dinotrack: warning: object 2 of the first mask is smaller than one 8x8 patch at the "
        "network input (112x64) and may be lost after the first frame; a larger short side "
        "keeps small objects"
    )
    progress = [line for line in lines[1:] if " frames (" in line]  # off a terminal
    rest = [line for line in lines[1:] if line not in progress]
    assert rest[0].startswith("segmented 2 frames, 2 object(s) [1, 2]") and len(rest) == 1
