"""``dinotrack eval score`` and ``dinotrack eval davis`` end to end, in-process."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from cli_support import tiny_flags
from davis_fixtures import blob_sequence, write_davis, write_palette_png, write_results
from PIL import Image

from dinotrack.cli import main
from dinotrack.io.masks import read_mask
from eval.davis import open_davis
from eval.runner import output_complete, run_davis
from eval.scoring import GLOBAL_COLUMNS

TINY = tiny_flags(64)


def _sequences() -> dict[str, np.ndarray]:
    return {
        "alpha": blob_sequence(num_frames=5, height=48, width=64, seed=1),
        "beta": blob_sequence(num_frames=4, height=48, width=64, num_objects=1, seed=2),
    }


# --- eval score ---------------------------------------------------------------------------------


def test_score_writes_csvs_json_and_prints_the_table(tmp_path, capsys):
    seqs = _sequences()
    root = write_davis(tmp_path / "davis", seqs)
    results = write_results(tmp_path / "res", seqs)
    assert main(["eval", "score", "--root", str(root), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "alpha_1" in out and "beta_1" in out and "Global" in out
    with (results / "global_results-val.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert [float(row[c]) for c in GLOBAL_COLUMNS] == [1, 1, 1, 0, 1, 1, 0]
    record = json.loads((results / "scores-val.json").read_text())
    assert set(record["per_object"]) == {"alpha_1", "alpha_2", "beta_1"}
    assert record["results"] == str(results)


def test_score_sequences_flag_restricts(tmp_path):
    seqs = _sequences()
    root = write_davis(tmp_path / "davis", seqs)
    results = write_results(tmp_path / "res", {"beta": seqs["beta"]})
    args = ["eval", "score", "--root", str(root), "--results", str(results)]
    assert main([*args, "--sequences", "beta"]) == 0
    record = json.loads((results / "scores-val-subset.json").read_text())
    assert list(record["per_object"]) == ["beta_1"]
    # A part of the split has its own files: the whole split's scores are not overwritten.
    names = sorted(p.name for p in results.iterdir() if p.is_file())
    assert names == [
        "global_results-val-subset.csv",
        "per-sequence_results-val-subset.csv",
        "scores-val-subset.json",
    ]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing-folder", "results folder .*alpha not found"),
        ("rgb", "00001.png is a RGB image"),
        ("big-id", "00002.png holds object id 7"),
        ("missing-frame", "misses 1 of the 3 scored frames: 00003.png"),
    ],
)
def test_score_errors_exit_2_with_one_line(tmp_path, capsys, damage, message):
    seqs = _sequences()
    root = write_davis(tmp_path / "davis", seqs)
    results = write_results(tmp_path / "res", seqs)
    alpha = results / "alpha"
    if damage == "missing-folder":
        for f in alpha.iterdir():
            f.unlink()
        alpha.rmdir()
    elif damage == "rgb":
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(alpha / "00001.png")
    elif damage == "big-id":
        write_palette_png(alpha / "00002.png", np.full((48, 64), 7, np.uint8))
    else:
        (alpha / "00003.png").unlink()
    code = main(["eval", "score", "--root", str(root), "--results", str(results), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    error_lines = [line for line in err.splitlines() if line.startswith("dinotrack: error:")]
    assert len(error_lines) == 1 and "Traceback" not in err
    assert re.search(message, error_lines[0])


def test_score_checks_its_outputs_before_writing_any(tmp_path, capsys):
    seqs = _sequences()
    root = write_davis(tmp_path / "davis", seqs)
    results = write_results(tmp_path / "res", seqs)
    args = ["eval", "score", "--root", str(root), "--results", str(results)]
    assert main([*args, "--json", str(results)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not list(results.glob("*.csv")) and not list(results.glob("*.json"))
    assert (
        main(
            [
                "eval",
                "score",
                "--root",
                str(root),
                "--results",
                str(root / "ImageSets" / "2017" / "val.txt"),
            ]
        )
        == 2
    )
    assert "is a file, not a folder of PNG masks" in capsys.readouterr().err


def test_score_bad_split_exits_2(tmp_path, capsys):
    root = write_davis(tmp_path / "davis", _sequences())
    code = main(["eval", "score", "--root", str(root), "--split", "test", "--results", str(root)])
    assert code == 2
    assert "split file for split 'test' not found" in capsys.readouterr().err


# --- eval davis ---------------------------------------------------------------------------------


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.png"))}


def test_davis_tracks_scores_and_resumes(tmp_path, capsys):
    seqs = _sequences()
    root = write_davis(tmp_path / "davis", seqs, images=True)
    out = tmp_path / "run"
    args = ["eval", "davis", "--root", str(root), "--out", str(out), *TINY]
    assert main(args) == 0
    assert "Global" in capsys.readouterr().out
    for name, ids in seqs.items():
        files = sorted((out / name).glob("*.png"))
        assert [f.name for f in files] == [f"{t:05d}.png" for t in range(len(ids))]
        loaded = read_mask(files[0])
        assert loaded.format == "palette"
        np.testing.assert_array_equal(loaded.ids, ids[0])  # the first frame is the given mask
        assert set(np.unique(read_mask(files[-1]).ids)) <= set(np.unique(ids[0]))
    record = json.loads((out / "scores-val.json").read_text())
    assert record["backbone"] == "test_vit_tiny" and record["weights"] == "random"
    assert record["config"]["short_side"] == 64 and record["config"]["topk"] == 5
    assert record["timings"]["frames_tracked"] == 9
    assert set(record["timings"]["per_sequence"]) == {"alpha", "beta"}
    assert record["resumed_sequences"] == []
    assert 0 <= record["global"]["J&F-Mean"] <= 1
    assert (out / "global_results-val.csv").is_file()
    assert (out / "per-sequence_results-val.csv").is_file()

    # A complete run is not redone; a sequence with a missing frame is.
    before = {name: _mtimes(out / name) for name in seqs}
    (out / "beta" / "00002.png").unlink()
    assert main(args) == 0
    record = json.loads((out / "scores-val.json").read_text())
    assert record["resumed_sequences"] == ["alpha"]
    assert list(record["timings"]["per_sequence"]) == ["beta"]
    assert _mtimes(out / "alpha") == before["alpha"]
    assert (out / "beta" / "00002.png").is_file()

    # --overwrite redoes everything.
    assert main([*args, "--overwrite"]) == 0
    record = json.loads((out / "scores-val.json").read_text())
    assert record["resumed_sequences"] == [] and record["timings"]["frames_tracked"] == 9


def test_davis_refuses_to_mix_configurations(tmp_path, capsys):
    seqs = {"beta": _sequences()["beta"]}
    root = write_davis(tmp_path / "davis", seqs, images=True)
    out = tmp_path / "run"
    args = ["eval", "davis", "--root", str(root), "--out", str(out), *TINY]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--topk", "3"]) == 2
    err = capsys.readouterr().err
    assert "holds outputs of another run (different config" in err
    assert main([*args, "--topk", "3", "--overwrite"]) == 0


def test_davis_2016_layout_and_later_first_annotation(tmp_path):
    seqs = {"gamma": (blob_sequence(num_frames=5, height=48, width=64, seed=4) > 0)}
    root = write_davis(tmp_path / "davis", seqs, layout="2016", images=True)
    (root / "Annotations" / "480p" / "gamma" / "00000.png").unlink()  # first annotation: 00001
    dataset = open_davis(root, "val", require_images=True)
    from dinotrack import Tracker, TrackerConfig

    tracker = Tracker.from_pretrained(
        "test_vit_tiny", device="cpu", config=TrackerConfig(short_side=64)
    )
    events = []

    class Recorder:
        def sequence_started(self, name, num_frames):
            events.append(("start", name, num_frames))

        def frame_done(self):
            events.append("frame")

        def sequence_done(self, name, resumed):
            events.append(("done", name, resumed))

    run = run_davis(dataset, tracker, tmp_path / "run", progress=Recorder())
    names = sorted(p.name for p in (tmp_path / "run" / "gamma").glob("*.png"))
    assert names == ["00001.png", "00002.png", "00003.png", "00004.png"]
    first = read_mask(tmp_path / "run" / "gamma" / "00001.png").ids
    np.testing.assert_array_equal(first, seqs["gamma"][1].astype(np.uint8))  # 255 became 1
    assert events == [
        ("start", "gamma", 4),
        "frame",
        "frame",
        "frame",
        "frame",
        ("done", "gamma", False),
    ]
    assert [o.name for o in run.evaluation.objects] == ["gamma_1"]
    assert run.evaluation.objects[0].frames == ("00002", "00003")
    assert output_complete(dataset.sequences[0], tmp_path / "run")


def test_davis_without_frames_exits_2(tmp_path, capsys):
    root = write_davis(tmp_path / "davis", _sequences())  # no JPEGImages
    code = main(["eval", "davis", "--root", str(root), "--out", str(tmp_path / "o"), *TINY])
    assert code == 2
    assert "no JPEG frames in" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_score_runs_without_importing_torch(tmp_path):
    # Scoring needs numpy and PIL only: the CLI must not pay torch's start-up for it.
    seqs = _sequences()
    root = write_davis(tmp_path / "davis", seqs)
    results = write_results(tmp_path / "res", seqs)
    code = (
        "import sys\n"
        "from dinotrack.cli import main\n"
        f"status = main(['eval', 'score', '--root', {str(root)!r}, '--results', "
        f"{str(results)!r}, '--workers', '1'])\n"
        "assert status == 0, status\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'av') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (results / "global_results-val.csv").is_file()


def test_python_m_eval_scores_and_reports_errors_in_one_line(tmp_path):
    seqs = _sequences()
    root = write_davis(tmp_path / "davis", seqs)
    results = write_results(tmp_path / "res", seqs)
    run = [sys.executable, "-m", "eval", "score", "--root"]
    done = subprocess.run([*run, str(root), "--results", str(results)], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert (results / "scores-val.json").is_file()
    bad = subprocess.run(
        [*run, str(tmp_path / "nope"), "--results", str(results)], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr
