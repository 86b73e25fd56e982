"""``eval davis`` under torchrun: two gloo processes score exactly as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import tiny_flags

from dinotrack.cli import main

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = "dog-agility,soccerball"  # one per process
TINY = [*tiny_flags(96), "--workers", "0"]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_give_the_scores_of_one(shared_data, tmp_path, capsys):
    root = shared_data("davis2016-dev")
    args = ["eval", "davis", "--root", str(root), "--split", "dev", "--sequences", SEQUENCES]
    args += TINY
    assert main([*args, "--out", str(tmp_path / "1")]) == 0
    capsys.readouterr()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "dinotrack", *args, "--out", str(tmp_path / "2")]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Global") == 1  # only rank 0 reports

    records = [json.loads((tmp_path / o / "scores-dev-subset.json").read_text()) for o in "12"]
    for key in ("global", "per_object", "per_frame"):
        assert records[0][key] == records[1][key], key
    assert set(records[1]["timings"]["per_sequence"]) == set(SEQUENCES.split(","))
    for name in SEQUENCES.split(","):
        pngs = sorted((tmp_path / "1" / name).glob("*.png"))
        assert pngs
        for png in pngs:
            assert (tmp_path / "2" / name / png.name).read_bytes() == png.read_bytes()
    csvs = [(tmp_path / o / "global_results-dev-subset.csv").read_text() for o in "12"]
    assert csvs[0] == csvs[1]
