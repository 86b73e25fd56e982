"""Issue 20, batch and results: nothing stale, foreign or half-read is trusted.

Each class of the audit is a table of cases built on the fly (tiny synthetic clips, the random
test backbone on the CPU):

- ``--batch`` refuses one video's prompt flags; the list's ``prompts`` and ``direction`` columns;
- batch resume reuses a result only when its record describes the same run and its files are
  whole;
- bad outs (the summary's name, nested outs, a symbolic link out of ``--out``, two batches on
  one ``--out``);
- bad lists are one line and exit 2, never a traceback; SIGTERM says what was published.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import adversarial_inputs as bad
import numpy as np
import pytest
from cli_support import run_cli, tiny_flags

from dinotrack.cli.batch import SUMMARY_FILE, read_batch_list
from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.masks import read_mask, write_mask
from dinotrack.results.writer import RECORD_NAME, owned_files

FAST = tiny_flags(64)
REPO = Path(__file__).resolve().parents[1]


def write_list(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run(args, capsys) -> tuple[int, list[str]]:
    code, _, err = run_cli(args, capsys)
    return code, err.strip().splitlines()


def statuses(root: Path) -> dict[str, str]:
    videos = json.loads((root / SUMMARY_FILE).read_text())["videos"]
    return {v["out"]: v["status"] for v in videos}


def start_batch(path: Path, runs: Path):
    """``dinotrack segment --batch PATH --out RUNS`` in a new process; returns it, its command
    and its environment."""
    command = [sys.executable, "-m", "dinotrack", "segment", "--batch", str(path)]
    command += ["--out", str(runs), *FAST]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True), command, env


def one_error_line(err: list[str]) -> str:
    """The single error line of a refused command (and no traceback)."""
    assert not any("Traceback" in line for line in err), err
    errors = [line for line in err if line.startswith("dinotrack: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def clip(tmp_path) -> dict[str, Path]:
    """A 4-frame folder clip with a mask for frame 0 and one for frame 2 (another object)."""
    folder = bad.frames_dir(tmp_path / "clip", count=4)
    return {
        "video": folder,
        "m0": bad.mask(tmp_path / "m0.png"),
        "m2": bad.mask(tmp_path / "m2.png", palette_ids=(0, 2)),
    }


# --- 1. --batch refuses one video's prompts; the list has prompts and direction columns ---------


@pytest.mark.parametrize(
    "flags",
    [["--prompt", "0:m.png"], ["--prompt", "0:m.png", "--prompt", "3:n.png"], ["--prompts", "p"]],
)
def test_batch_refuses_the_prompt_flags_of_one_video(tmp_path, capsys, flags):
    path = write_list(tmp_path / "l.csv", "video,mask\na.mp4,m.png\n")
    code, err = run(["segment", "--batch", path, "--out", tmp_path / "r", *flags, *FAST], capsys)
    assert code == 2
    assert f"{flags[0]} cannot be used with --batch" in one_error_line(err)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "header, row, expected",
    [
        ("video,prompts", "a.mp4,0:m.png;40:n.png", {"prompt": ("0:m.png", "40:n.png")}),
        ("video,prompts", "a.mp4, 7:m.png", {"prompt": ("7:m.png",)}),
        ("video,prompts", "a.mp4,masks", {"prompts": "masks"}),
        ("video,prompts,direction", "a.mp4,5:m.png,backward", {"direction": "backward"}),
        ("video,mask,direction", "a.mp4,m.png,both", {"direction": "both", "mask": "m.png"}),
        ("video,mask,prompts", "a.mp4,m.png,", {"mask": "m.png", "prompt": ()}),
        ("video,mask,prompts", "a.mp4,,3:m.png", {"mask": None, "prompt": ("3:m.png",)}),
        ("video,mask,direction", "a.mp4,m.png,", {"direction": None}),
    ],
)
def test_prompts_and_direction_columns_are_read(tmp_path, header, row, expected):
    path = write_list(tmp_path / "l.csv", f"{header}\n{row}\n")
    (item,) = read_batch_list(path)
    for name, value in expected.items():
        got = getattr(item, name)
        if name == "prompt":
            value = tuple(f"{v.split(':')[0]}:{tmp_path / v.split(':')[1]}" for v in value)
        elif name in ("prompts", "mask") and value is not None:
            value = tmp_path / value
        assert got == value, (name, got)


@pytest.mark.parametrize(
    "header, row, message",
    [
        ("video,mask,prompts", "a.mp4,m.png,3:n.png", "not both"),
        ("video,mask,prompts", "a.mp4,,", "the mask or prompts cell is empty"),
        ("video,prompts", "a.mp4,3:n.png;x.png", "FRAME:MASK"),
        ("video,prompts", "a.mp4,3:", "FRAME:MASK"),
        ("video,prompts", "a.mp4,a.png;b.png", "write each as FRAME:MASK"),
        ("video,prompts,start_frame", "a.mp4,3:n.png,3", "start_frame goes with mask"),
        ("video,mask,direction", "a.mp4,m.png,sideways", "direction must be one of"),
        ("video,start_frame", "a.mp4,0", "missing column(s) mask (or prompts)"),
    ],
)
def test_bad_prompt_cells_are_refused(tmp_path, header, row, message):
    path = write_list(tmp_path / "l.csv", f"{header}\n{row}\n")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_batch_list(path)


def test_prompt_and_direction_columns_segment_like_the_single_video_flags(clip, tmp_path, capsys):
    video, m0, m2 = clip["video"], clip["m0"], clip["m2"]
    rows = [
        f"{video},0:{m0};2:{m2},,two-prompts",
        f"{video},2:{m2},backward,back",
        f"{video},{tmp_path / 'prompts'},,folder",
    ]
    (tmp_path / "prompts").mkdir()
    write_mask(tmp_path / "prompts" / "00000.png", read_mask(m0).ids)
    write_mask(tmp_path / "prompts" / "00002.png", read_mask(m2).ids)
    path = write_list(tmp_path / "l.csv", "video,prompts,direction,out\n" + "\n".join(rows))
    runs = tmp_path / "runs"
    code, err = run(["segment", "--batch", path, "--out", runs, *FAST], capsys)
    assert code == 0, err
    for out, flags in (
        ("two-prompts", ["--prompt", f"0:{m0}", "--prompt", f"2:{m2}"]),
        ("back", ["--prompt", f"2:{m2}", "--direction", "backward"]),
        ("folder", ["--prompts", tmp_path / "prompts"]),
    ):
        single = tmp_path / f"single-{out}"
        code, err = run(["segment", video, *flags, "--out", single, *FAST], capsys)
        assert code == 0, err
        pngs = sorted(p.name for p in (runs / out).glob("*.png"))
        assert pngs == sorted(p.name for p in single.glob("*.png")), out
        for name in pngs:
            assert np.array_equal(read_mask(runs / out / name).ids, read_mask(single / name).ids)
    assert sorted(p.name for p in (runs / "back").glob("*.png")) == [
        "00000.png",
        "00001.png",
        "00002.png",
    ]


# --- 2. batch resume reuses a result only when it was made the same way and is whole -----------


def _change_mask(clip, root):
    ids = read_mask(clip["m0"]).ids
    ids[:] = 0
    ids[30:40, 40:60] = 1
    write_mask(clip["m0"], ids)


def _change_frame(clip, root):
    frame = clip["video"] / "00001.png"
    from PIL import Image

    pixels = np.asarray(Image.open(frame)).copy()
    pixels[:5] = 255
    Image.fromarray(pixels).save(frame)


def _delete_png(clip, root):
    (root / "clip" / "00002.png").unlink()


def _old_record(clip, root):
    record = root / "clip" / RECORD_NAME
    data = json.loads(record.read_text())
    del data["run"]
    record.write_text(json.dumps(data))


RESUME_CASES = {
    # case: (change before the rerun, extra flags of the rerun, expected status, reason)
    "same run": (None, [], "skipped", None),
    "same run, other batch size": (None, ["--batch-size", "2"], "skipped", None),
    "mask changed": (_change_mask, [], "done", "another prompts"),
    "a frame changed": (_change_frame, [], "done", "another input"),
    "short side": (None, ["--short-side", "96"], "done", "another settings"),
    "model": (None, ["--model", "test_vit_tiny16"], "done", "another model"),
    "preset": (None, ["--preset", "dinov3"], "done", "another settings"),
    "topk": (None, ["--topk", "3"], "done", "another settings"),
    "max frames": (None, ["--max-frames", "2"], "done", "another settings"),
    "direction": (None, ["--direction", "both"], "done", "another settings"),
    "formats": (None, ["--save", "png,mot"], "done", "another formats"),
    "result PNG deleted": (_delete_png, [], "done", "00002.png is missing"),
    "record of an older dinotrack": (_old_record, [], "done", "does not describe the run"),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_reuses_only_a_whole_result_of_the_same_run(clip, tmp_path, capsys, case):
    change, flags, status, reason = RESUME_CASES[case]
    path = write_list(tmp_path / "l.csv", f"video,mask\n{clip['video']},{clip['m0']}\n")
    runs = tmp_path / "runs"
    code, err = run(["segment", "--batch", path, "--out", runs, *FAST], capsys)
    assert code == 0, err
    if change is not None:
        change(clip, runs)
    rerun = [*FAST, *flags]
    code, err = run(["segment", "--batch", path, "--out", runs, *rerun], capsys)
    assert code == 0, err
    assert statuses(runs) == {"clip": status}
    if reason is not None:
        assert any("segmenting again: " in line and reason in line for line in err), err
    # Whatever happened, the result now is exactly what a fresh run with these flags makes.
    fresh = tmp_path / "fresh"
    code, err = run(["segment", "--batch", path, "--out", fresh, *rerun], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (runs / "clip").iterdir() if p.name != RECORD_NAME)
    assert names == sorted(p.name for p in (fresh / "clip").iterdir() if p.name != RECORD_NAME)
    for name in names:
        assert (runs / "clip" / name).read_bytes() == (fresh / "clip" / name).read_bytes()


@pytest.mark.parametrize("changed", [False, True])
def test_resume_checks_the_weights_file(clip, tmp_path, capsys, changed):
    import torch

    from dinotrack.models.build import create_model
    from dinotrack.models.registry import get_backbone_spec

    weights = tmp_path / "w.pth"
    net = create_model(get_backbone_spec("test_vit_tiny"))
    torch.save(net.state_dict(), weights)
    path = write_list(tmp_path / "l.csv", f"video,mask\n{clip['video']},{clip['m0']}\n")
    runs = tmp_path / "runs"
    flags = ["--weights", weights, *FAST]
    assert run(["segment", "--batch", path, "--out", runs, *flags], capsys)[0] == 0
    if changed:
        with torch.no_grad():
            next(net.parameters()).add_(1.0)
        torch.save(net.state_dict(), weights)
    code, err = run(["segment", "--batch", path, "--out", runs, *flags], capsys)
    assert code == 0, err
    assert statuses(runs) == {"clip": "done" if changed else "skipped"}
    assert any("segmenting again: another weights" in line for line in err) is changed


def test_an_emptied_result_file_is_refused_naming_it(clip, tmp_path, capsys):
    path = write_list(tmp_path / "l.csv", f"video,mask\n{clip['video']},{clip['m0']}\n")
    runs = tmp_path / "runs"
    assert run(["segment", "--batch", path, "--out", runs, *FAST], capsys)[0] == 0
    (runs / "clip" / "00001.png").write_bytes(b"")
    code, err = run(["segment", "--batch", path, "--out", runs, *FAST], capsys)
    assert code == 1
    assert statuses(runs) == {"clip": "failed"}
    assert any("00001.png was changed" in line for line in err), err
    assert (runs / "clip" / "00001.png").read_bytes() == b""  # the user's edit is kept


# --- 3. bad outs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outs, message",
    [
        (["batch-summary.json"], "the batch's own file"),
        (["batch-summary.json/x"], "the batch's own file"),
        (["./batch-summary.json"], "the batch's own file"),
        (["p", "p/q"], "inside row 2's out 'p'"),
        (["p/q", "p"], "inside row 3's out 'p'"),
        (["a/b/c", "a"], "inside row 3's out 'a'"),
        (["a", "x", "./a/b"], "inside row 2's out 'a'"),
        (["p/q", "p/r"], None),
        (["p", "pq"], None),
    ],
)
def test_outs_that_clash_with_the_batch_or_each_other_are_refused(tmp_path, outs, message):
    rows = [f"v{k}.mp4,m.png,{out}" for k, out in enumerate(outs)]
    path = write_list(tmp_path / "l.csv", "video,mask,out\n" + "\n".join(rows) + "\n")
    if message is None:
        assert len(read_batch_list(path)) == len(outs)
    else:
        with pytest.raises(InputError, match=message):
            read_batch_list(path)


@pytest.mark.parametrize("out", ["link/r", "link", "deep/link/r"])
def test_an_out_through_a_symbolic_link_cannot_write_outside(clip, tmp_path, capsys, out):
    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = runs / out.split("/link")[0] / "link" if out.startswith("deep") else runs / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    path = write_list(tmp_path / "l.csv", f"video,mask,out\n{clip['video']},{clip['m0']},{out}\n")
    code, err = run(["segment", "--batch", path, "--out", runs, *FAST], capsys)
    assert code == 2
    assert "through a symbolic link" in one_error_line(err)
    assert list(elsewhere.iterdir()) == []


def test_a_second_batch_on_the_same_out_is_refused(clip, tmp_path, capsys):
    path = write_list(tmp_path / "l.csv", f"video,mask\n{clip['video']},{clip['m0']}\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    holder = os.open(runs, os.O_RDONLY)  # what a running batch holds
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, err = run(["segment", "--batch", path, "--out", runs, *FAST], capsys)
        assert code == 2
        assert "another batch is running on --out" in one_error_line(err)
        assert list(runs.iterdir()) == []
    finally:
        os.close(holder)
    code, err = run(["segment", "--batch", path, "--out", runs, *FAST], capsys)
    assert code == 0, err
    assert sorted(p.name for p in runs.iterdir()) == [SUMMARY_FILE, "clip"]


def test_two_batch_processes_on_one_out_one_runs_one_is_refused(clip, tmp_path):
    long_clip = bad.frames_dir(tmp_path / "long", count=30)
    rows = [f"{long_clip},{clip['m0']},,c{k}" for k in range(12)]
    path = write_list(tmp_path / "l.csv", "video,mask,start_frame,out\n" + "\n".join(rows))
    runs = tmp_path / "runs"
    first, command, env = start_batch(path, runs)
    deadline = time.monotonic() + 120
    while not list(runs.glob("c*")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first batch ended before the second could start"
    second = subprocess.run(command, env=env, capture_output=True, text=True)
    assert first.wait() == 0
    assert second.returncode == 2, second.stderr
    assert "another batch is running on --out" in second.stderr
    assert statuses(runs) == {f"c{k}": "done" for k in range(12)}


# --- 5. bad lists: one line and exit 2; SIGTERM says what was published ---------------------------


def _huge_cell(path):
    path.write_text("video,mask\n" + "a" * (129 * 1024) + ".mp4,m.png\n")


def _unclosed_quote(path):
    path.write_text('video,mask\n"a.mp4,m.png\nb.mp4,n.png\n')


def _unclosed_quote_last_cell(path):
    path.write_text('video,mask\na.mp4,"m.png\n')


def _extra_cells(path):
    path.write_text("video,mask\na.mp4,m.png,extra\n")


def _extra_cells_unquoted_comma(path):
    path.write_text("video,mask,out\nmy,clip.mp4,m.png,out\n")


def _duplicate_columns(path):
    path.write_text("video,mask,mask\na.mp4,m.png,n.png\n")


def _duplicate_out_column(path):
    path.write_text("video,mask,out,out\na.mp4,m.png,x,y\n")


def _fifo(path):
    bad.fifo(path)


def _folder(path):
    path.mkdir()


def _not_utf8(path):
    path.write_bytes(b"video,mask\n\xff\xfe.mp4,m.png\n")


def _nul_byte(path):
    path.write_bytes(b"video,mask\na\x00.mp4,m.png\n")


def _missing(path):
    pass


LIST_CASES = {
    "cell over 128 KiB": (_huge_cell, "a cell is longer than 128 KiB"),
    "unclosed quote": (_unclosed_quote, 'a quote (") is opened and never closed'),
    "unclosed quote, last cell": (_unclosed_quote_last_cell, "never closed"),
    "extra cell": (_extra_cells, "3 cells, but the header names 2 columns"),
    "comma in an unquoted name": (_extra_cells_unquoted_comma, "4 cells, but the header"),
    "duplicate columns": (_duplicate_columns, "column(s) mask named twice"),
    "duplicate out columns": (_duplicate_out_column, "column(s) out named twice"),
    "FIFO": (_fifo, "is not a regular file"),
    "folder": (_folder, "is not a regular file"),
    "not UTF-8": (_not_utf8, "is not UTF-8 text"),
    "NUL byte": (_nul_byte, "a cell holds a NUL byte"),
    "missing": (_missing, "does not exist"),
}


@pytest.mark.parametrize("case", list(LIST_CASES))
def test_bad_lists_are_one_line_and_exit_2(tmp_path, capsys, case):
    build, message = LIST_CASES[case]
    path = tmp_path / "l.csv"
    build(path)
    with pytest.raises((InputError, MissingFileError)) as error:
        read_batch_list(path)
    assert message in str(error.value)
    code, err = run(["segment", "--batch", path, "--out", tmp_path / "r", *FAST], capsys)
    assert code == 2
    assert message in one_error_line(err)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_sigterm_says_how_many_videos_were_published(clip, tmp_path):
    rows = [f"{clip['video']},{clip['m0']},c{k}" for k in range(8)]
    path = write_list(tmp_path / "l.csv", "video,mask,out\n" + "\n".join(rows))
    runs = tmp_path / "runs"
    process, _, _ = start_batch(path, runs)
    deadline = time.monotonic() + 120
    while not (runs / "c1" / RECORD_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate()
    assert process.returncode == 143, err
    published = len(list(runs.glob(f"c*/{RECORD_NAME}")))
    assert 2 <= published < 8
    assert "no output was published" not in err
    assert f"{published} video(s) of this run were published before it" in err


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_with_a_bad_row_ends_cleanly(clip, tmp_path):
    rows = [
        f"{clip['video']},{clip['m0']},good",
        f"{tmp_path / 'missing.mp4'},{clip['m0']},missing",
        f"{clip['video']},{clip['m2']},other",
    ]
    path = write_list(tmp_path / "l.csv", "video,mask,out\n" + "\n".join(rows))
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "dinotrack", "segment", "--batch", str(path)]
    command += ["--out", str(runs), "--max-frames", "2", *FAST]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
    assert "SIGTERM" not in result.stderr  # no rank was killed
    assert statuses(runs) == {"good": "done", "missing": "failed", "other": "done"}
    assert "1 failed" in result.stderr and "exit status is 0" in result.stderr


# --- 4. export records what it writes; --overwrite replaces only dinotrack's files ----------------


def _segment(clip, out, capsys, *flags) -> None:
    code, err = run(
        ["segment", clip["video"], "--mask", clip["m0"], "--out", out, *FAST, *flags], capsys
    )
    assert code == 0, err


@pytest.mark.parametrize("formats", ["coco", "mot", "objects", "coco,mot,objects", "mot,coco"])
def test_segment_reruns_into_a_folder_that_export_wrote_into(clip, tmp_path, capsys, formats):
    out = tmp_path / "res"
    _segment(clip, out, capsys)
    code, err = run(["export", out, "--to", formats], capsys)
    assert code == 0, err
    _segment(clip, out, capsys, "--short-side", "96")  # replaces the export's files as its own
    assert not (out / "coco.json").exists() and not (out / "objects").exists()
    # ... and a batch resumes from a result that was exported into
    path = write_list(tmp_path / "l.csv", f"video,mask,out\n{clip['video']},{clip['m0']},res\n")
    runs = tmp_path / "runs"
    assert run(["segment", "--batch", path, "--out", runs, *FAST], capsys)[0] == 0
    assert run(["export", runs / "res", "--to", formats], capsys)[0] == 0
    code, err = run(["segment", "--batch", path, "--out", runs, *FAST], capsys)
    assert code == 0 and statuses(runs) == {"res": "skipped"}, err


USER_FILES = ["notes.txt", "1/notes.txt", "9/00000.png", "extra/deep/readme.md"]


@pytest.mark.parametrize("user_file", USER_FILES)
@pytest.mark.parametrize("made_by", ["export", "segment --save objects"])
def test_export_overwrite_keeps_the_users_files_in_objects(
    clip, tmp_path, capsys, user_file, made_by
):
    out = tmp_path / "res"
    if made_by == "export":
        _segment(clip, out, capsys)
        assert run(["export", out, "--to", "objects"], capsys)[0] == 0
    else:
        _segment(clip, out, capsys, "--save", "png,objects")
    kept = out / "objects" / user_file
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(b"the user's own")
    before = sorted(p.relative_to(out).as_posix() for p in (out / "objects").rglob("*.png"))
    code, err = run(["export", out, "--to", "objects", "--overwrite"], capsys)
    assert code == 0, err
    assert kept.read_bytes() == b"the user's own"
    after = sorted(p.relative_to(out).as_posix() for p in (out / "objects").rglob("*.png"))
    assert after == before
    assert f"objects/{user_file}" not in owned_files(out)  # still not dinotrack's


def test_export_overwrite_removes_its_own_stale_objects(tmp_path, capsys):
    res = tmp_path / "res"
    res.mkdir()
    ids = np.zeros((20, 20), np.uint8)
    ids[2:8, 2:8], ids[10:15, 10:15] = 1, 2
    write_mask(res / "00000.png", ids)
    assert run(["export", res, "--to", "objects"], capsys)[0] == 0
    assert (res / "objects" / "2" / "00000.png").exists()
    ids[ids == 2] = 0
    write_mask(res / "00000.png", ids)
    (res / "objects" / "notes.txt").write_text("mine")
    assert run(["export", res, "--to", "objects", "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in (res / "objects").iterdir()) == ["1", "notes.txt"]
    assert sorted(owned_files(res)) == ["objects/1/00000.png"]


# --- 6. habits: logs, models, COCO file names, export's video name, attention's --out ------------


def test_off_a_terminal_progress_is_a_line_every_tenth_and_per_video(tmp_path, capsys):
    video = bad.frames_dir(tmp_path / "walk", count=30)
    m0 = bad.mask(tmp_path / "m0.png")
    code, err = run(["segment", video, "--mask", m0, "--out", tmp_path / "r", *FAST], capsys)
    assert code == 0, err
    lines = [line for line in err if line.startswith("walk: ")]
    assert [line.split()[1] for line in lines] == [f"{k}/30" for k in range(3, 31, 3)]
    assert all(" fps, " in line and line.endswith(" left") for line in lines)
    rows = "\n".join(f"{video},{m0},v{k}" for k in range(3))
    path = write_list(tmp_path / "l.csv", f"video,mask,out\n{rows}\n")
    code, err = run(["segment", "--batch", path, "--out", tmp_path / "b", *FAST], capsys)
    assert code == 0, err
    assert [line for line in err if line.startswith("video ")] == [
        f"video {k + 1}/3 (row {k + 2}) v{k}: done in {line.split(' in ')[1]}"
        for k, line in enumerate(line for line in err if line.startswith("video "))
    ]
    assert sum(line.startswith("walk: 30/30") for line in err) == 3


def test_the_bar_on_a_terminal_shows_the_time_left(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    video = bad.frames_dir(tmp_path / "walk", count=12)
    m0 = bad.mask(tmp_path / "m0.png")
    code, _, err = run_cli(["segment", video, "--mask", m0, "--out", tmp_path / "r", *FAST], capsys)
    assert code == 0, err
    # The time-left column: a time, or its placeholder before the first estimate (a fast run).
    assert "fps" in err and re.search(r"(\d:\d\d:\d\d|-:--:--)", err), err[-500:]


@pytest.mark.parametrize("flags, shown", [([], False), (["--all"], True)])
def test_models_hides_the_test_backbones_unless_asked(capsys, flags, shown):
    code, out, _ = run_cli(["models", *flags], capsys)
    assert code == 0
    names = {line.split()[1] for line in out.splitlines() if line.startswith("│ ")}
    assert "dino_vits8" in names
    assert ("test_vit_tiny" in names) is shown and ("test_dinov3_tiny" in names) is shown


def _frames_jpg(tmp_path):
    folder = tmp_path / "jpgclip"
    folder.mkdir()
    from PIL import Image

    for k, frame in enumerate(bad.frames(4)):
        Image.fromarray(frame).save(folder / f"frame{k + 1}.jpg")
    return folder


@pytest.mark.parametrize("kind", ["png folder", "jpg folder", "mp4", "mp4 from frame 1"])
@pytest.mark.parametrize("how", ["segment --save", "export"])
def test_coco_file_names_are_files_that_exist(tmp_path, capsys, kind, how):
    if kind == "png folder":
        source = bad.frames_dir(tmp_path / "pngclip", count=4)
    elif kind == "jpg folder":
        source = _frames_jpg(tmp_path)
    else:
        source = bad.video(tmp_path / "bedroom.mp4", count=4)
    start = 1 if kind.endswith("frame 1") else 0
    out = tmp_path / "results"
    flags = ["--start-frame", start, "--save", "png,coco" if how == "segment --save" else "png"]
    code, err = run(
        ["segment", source, "--mask", bad.mask(tmp_path / "m.png"), "--out", out, *flags, *FAST],
        capsys,
    )
    assert code == 0, err
    if how == "export":
        assert run(["export", out, "--to", "coco"], capsys)[0] == 0
    (video,) = json.loads((out / "coco.json").read_text())["videos"]
    assert video["name"] == source.stem  # the input's, not the results folder's
    assert len(video["file_names"]) == 4 - start
    for index, name in zip(video["frame_indices"], video["file_names"], strict=True):
        if source.is_dir():
            assert (source.parent / name).is_file(), name
        else:
            file, _, frame = name.partition("#")
            assert (source.parent / file).is_file() and int(frame) == index, name


def test_coco_file_names_of_another_methods_results_are_its_pngs(tmp_path, capsys):
    res = tmp_path / "other"
    res.mkdir()
    for k in range(3):
        write_mask(res / f"{k:05d}.png", np.ones((8, 8), np.uint8))
    assert run(["export", res, "--to", "coco"], capsys)[0] == 0
    (video,) = json.loads((res / "coco.json").read_text())["videos"]
    assert video["name"] == "other"
    assert all((res.parent / name).is_file() for name in video["file_names"])


@pytest.mark.parametrize(
    "out", ["att.png", "att.PNG", "att.jpg", "att.npy", "att.json", "att.mp4", "att.webm"]
)
def test_attention_of_an_image_refuses_a_file_name_as_out(tmp_path, capsys, out):
    image = tmp_path / "img.jpg"
    from PIL import Image

    Image.fromarray(bad.frames(1)[0]).save(image)
    code, err = run(["attention", image, "--out", tmp_path / out, *FAST], capsys)
    assert code == 2
    assert "--out names a directory of PNGs" in one_error_line(err)
    assert not (tmp_path / out).exists()


def test_attention_of_an_image_writes_a_folder(tmp_path, capsys):
    image = tmp_path / "img.jpg"
    from PIL import Image

    Image.fromarray(bad.frames(1)[0]).save(image)
    code, err = run(["attention", image, "--out", tmp_path / "att", *FAST], capsys)
    assert code == 0, err
    assert (tmp_path / "att").is_dir()
