"""``dinotrack segment --batch``: the list, per-video errors, resume, and two gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import run_cli, tiny_flags

from dinotrack.cli.batch import SUMMARY_FILE, read_batch_list
from dinotrack.results.writer import RECORD_NAME

FAST = tiny_flags(96)
DEV_CLIPS = ("dog-agility", "soccerball", "dance-jump", "horsejump-low")
REPO = Path(__file__).resolve().parents[1]


def write_list(path: Path, rows: list[str], header: str = "video,mask,start_frame,out") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def clip_row(shared_data, name: str, start: int = 0, out: str = "") -> str:
    video = shared_data("videos", f"{name}.mp4")
    mask = shared_data("davis2016-dev", "Annotations", "480p", name, f"{start:05d}.png")
    return f"{video},{mask},{start},{out}"


def run(args, capsys):
    code, _, err = run_cli(args, capsys)
    return code, err.strip().splitlines()


def tree(root: Path) -> dict[str, bytes]:
    """Every result file under ``root`` (less the batch summary) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != SUMMARY_FILE
    }


def summary(root: Path) -> dict[str, dict]:
    return {v["out"]: v for v in json.loads((root / SUMMARY_FILE).read_text())["videos"]}


def env_with_repo() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("DINOTRACK_DEBUG", None)
    return env


# --- the list ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, rows, message",
    [
        ("video,start_frame", ["a.mp4,0"], "missing column(s) mask"),
        ("clip,mask", ["a.mp4,m.png"], "missing column(s) video"),
        ("video,mask,prompt", ["a.mp4,m.png,x"], "unknown column(s) prompt"),
        ("video,mask,start_frame", ["a.mp4,m.png,two"], "row 2: start_frame must be an integer"),
        ("video,mask,start_frame", ["a.mp4,m.png,-1"], "start_frame must be 0 or more"),
        ("video,mask", ["a.mp4,"], "row 2: the mask cell is empty"),
        ("video,mask,out", ["a.mp4,m.png,../up"], "must be a folder name inside --out"),
        ("video,mask", ["a.mp4,m.png", "x/a.mp4,n.png"], "rows 2 and 3 both write to 'a'"),
        ("video,mask", [], "names no video"),
    ],
)
def test_bad_lists_are_refused_with_the_reason(tmp_path, header, rows, message):
    path = write_list(tmp_path / "list.csv", rows, header)
    with pytest.raises(ValueError) as error:
        read_batch_list(path)
    assert message in str(error.value)


def test_list_paths_are_relative_to_the_list(tmp_path):
    (tmp_path / "in").mkdir()
    path = write_list(tmp_path / "in" / "list.csv", ["clips/a.mp4, m.png, 3, runs/a"])
    (item,) = read_batch_list(path)
    assert item.video == tmp_path / "in" / "clips" / "a.mp4"
    assert item.mask == tmp_path / "in" / "m.png"
    assert (item.start_frame, item.out, item.row) == (3, os.path.join("runs", "a"), 2)


def test_a_bad_list_or_flags_exit_2_with_one_line(tmp_path, capsys):
    bad = write_list(tmp_path / "bad.csv", ["a.mp4"], "video")
    code, err = run(["segment", "--batch", bad, "--out", tmp_path / "runs", *FAST], capsys)
    assert code == 2 and len(err) == 1 and "missing column(s) mask" in err[0]
    good = write_list(tmp_path / "good.csv", ["a.mp4,m.png,0,"])
    for extra, message in (
        (["video.mp4"], "--batch takes its videos from the list"),
        (["--mask", "m.png"], "--mask cannot be used with --batch"),
        (["--start-frame", "3"], "--start-frame cannot be used with --batch"),
    ):
        args = ["segment", *extra, "--batch", good, "--out", tmp_path / "runs", *FAST]
        code, err = run(args, capsys)
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists()


# --- running a batch -----------------------------------------------------------------------------


def test_failing_videos_are_reported_and_the_others_finish(shared_data, tmp_path, capsys):
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but then nothing")
    good = shared_data("davis2016-dev", "Annotations", "480p", "dog-agility", "00000.png")
    rows = [
        f"corrupt.mp4,{good},0,",
        clip_row(shared_data, "dog-agility"),
        f"missing.mp4,{good},0,",
        f"{shared_data('videos', 'soccerball.mp4')},no-mask.png,0,",
    ]
    path = write_list(tmp_path / "list.csv", rows)
    runs = tmp_path / "runs"
    args = ["segment", "--batch", path, "--out", runs, "--max-frames", 3, "--save", "mot", *FAST]
    code, err = run(args, capsys)
    assert code == 1
    records = summary(runs)
    assert {k: v["status"] for k, v in records.items()} == {
        "corrupt": "failed",
        "dog-agility": "done",
        "missing": "failed",
        "soccerball": "failed",
    }
    assert "cannot read video" in records["corrupt"]["error"]
    assert "does not exist" in records["missing"]["error"]
    assert "no-mask.png does not exist" in records["soccerball"]["error"]
    errors = [line for line in err if line.startswith("dinotrack: error:")]
    assert len(errors) == 3 and all("(row " in line for line in errors)
    assert sorted(p.name for p in runs.iterdir()) == [SUMMARY_FILE, "dog-agility"]
    assert sorted(p.name for p in (runs / "dog-agility").iterdir()) == [RECORD_NAME, "mot.txt"]
    assert len((runs / "dog-agility" / "mot.txt").read_text().splitlines()) == 3


def test_a_killed_batch_does_not_redo_finished_videos(shared_data, tmp_path, capsys):
    rows = [clip_row(shared_data, "dog-agility"), clip_row(shared_data, "soccerball")]
    path = write_list(tmp_path / "list.csv", rows)
    runs = tmp_path / "runs"
    args = ["segment", "--batch", path, "--out", runs, *FAST]
    first_done = runs / "dog-agility" / RECORD_NAME
    process = subprocess.Popen(
        [sys.executable, "-m", "dinotrack", *map(str, args)],
        env=env_with_repo(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not first_done.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first_done.exists(), "the first video never finished"
    assert not (runs / "soccerball").exists(), "the batch ended before it could be killed"
    assert not (runs / SUMMARY_FILE).exists()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (runs / "dog-agility").iterdir()}

    code, err = run(args, capsys)
    assert code == 0, err
    assert {k: v["status"] for k, v in summary(runs).items()} == {
        "dog-agility": "skipped",
        "soccerball": "done",
    }
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (runs / "dog-agility").iterdir()}
    assert after == before  # not rewritten
    assert len(list((runs / "soccerball").glob("*.png"))) == 48
    code, err = run(args, capsys)  # nothing left to do
    assert code == 0 and set(v["status"] for v in summary(runs).values()) == {"skipped"}


@pytest.mark.distributed
@pytest.mark.slow
def test_two_gloo_processes_write_exactly_the_outputs_of_one(shared_data, tmp_path, capsys):
    rows = [clip_row(shared_data, name) for name in DEV_CLIPS]
    rows[1] = clip_row(shared_data, "soccerball", start=2, out="soccer-from-2")
    path = write_list(tmp_path / "list.csv", rows)
    flags = ["--max-frames", 6, "--save", "png,coco,mot,objects", *FAST]
    one, two = tmp_path / "one", tmp_path / "two"
    code, err = run(["segment", "--batch", path, "--out", one, *flags], capsys)
    assert code == 0, err
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "dinotrack", "segment", "--batch", str(path)]
    command += ["--out", str(two), *map(str, flags)]
    result = subprocess.run(command, env=env_with_repo(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert tree(one) == tree(two)
    assert len(tree(one)) == 4 * (1 + 6 + 2 + 6)  # marker, PNGs, coco, mot, objects
    ranks = {k: v["rank"] for k, v in summary(two).items()}
    assert ranks == {"dog-agility": 0, "soccer-from-2": 1, "dance-jump": 0, "horsejump-low": 1}
    assert set(summary(one)) == set(ranks)
