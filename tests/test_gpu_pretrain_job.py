"""tools/gpu/pretrain_job.sh end to end on the CPU with a tiny model: train, compare, ship."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dinotrack.models.build import load_backbone

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_job_trains_evaluates_both_and_ships_split_weights(shared_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("dog-agility.mp4", "rollerblade.mp4"):
        (data / name).symlink_to(shared_data("videos", name))
    davis = tmp_path / "davis"
    shutil.copytree(
        shared_data("davis2016-dev", "Annotations/480p/dog-agility"),
        davis / "Annotations/480p/dog-agility",
    )
    (davis / "ImageSets/2016").mkdir(parents=True)
    (davis / "ImageSets/2016/dev.txt").write_text("dog-agility\n")
    out, run = tmp_path / "out", tmp_path / "run"
    env = dict(
        os.environ,
        ARCH="test_vit_tiny",
        BATCH="4",
        EPOCHS="2",
        TIME_LIMIT="600",
        RUN=str(run),
        NAME="tiny_job",
        PY=sys.executable,
        PRETRAIN_ARGS="--device cpu --out-dim 64 --global-crop-size 32 --local-crop-size 16 "
        "--local-crops 2 --frames-per-video 4 --num-workers 0 --warmup-epochs 1",
        EVAL_ARGS="--device cpu --short-side 64",
    )
    job = [str(REPO / "tools/gpu/pretrain_job.sh"), str(davis), str(out), str(data)]
    done = subprocess.run(job, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    # Frames were rebuilt from the videos, both backbones were scored on them.
    assert len(list((davis / "JPEGImages/480p/dog-agility").glob("*.jpg"))) == 25
    trained = json.loads((out / "scores-dev-trained.json").read_text())
    init = json.loads((out / "scores-dev-init.json").read_text())
    assert trained["weights"] == str(run / "backbone.pth")
    assert init["weights"] == str(run) + "-init/backbone.pth"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4  # 2 epochs of 2 steps: the schedule's end
    # The parts join into the shipped fp16 weights, whose checksum is recorded and which load.
    parts = sorted(out.glob("tiny_job.pth.part-*"))
    joined = tmp_path / "tiny_job.pth"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    digest = hashlib.sha256(joined.read_bytes()).hexdigest()
    assert (out / "tiny_job.pth.sha256").read_text().split() == [digest, "tiny_job.pth"]
    assert digest in (out / "tiny_job.md").read_text()
    net, spec = load_backbone(None, weights=joined)
    stored = torch.load(joined, weights_only=True)
    assert stored["info"]["steps"] == 4 and spec.patch_size == 8
    assert next(net.parameters()).dtype == torch.float32
