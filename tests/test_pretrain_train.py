"""Training on real frames, exact resumption, the exported backbone in dinotrack, the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_support import SHORT_VIDEOS, tiny_config

from dinotrack.models.build import load_backbone
from dinotrack.models.checkpoints import read_checkpoint
from pretrain.checkpoint import load_checkpoint
from pretrain.cli import main, register
from pretrain.model import build_networks, resolve_backbone
from pretrain.train import Trainer, train


@pytest.fixture
def videos(shared_data):
    return [shared_data("videos", name) for name in SHORT_VIDEOS]


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_two_steps_on_real_video_frames(videos, tmp_path):
    cfg = tiny_config(tmp_path / "run", videos, max_steps=2)
    result = train(cfg)
    assert result.step == 2 and result.resumed_from == 0
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2]
    for record in log:
        assert math.isfinite(record["loss"]) and record["loss"] > 0
        assert 0 < record["teacher_entropy"] <= math.log(32) + 1e-4
        assert record["kl"] == pytest.approx(record["loss"] - record["teacher_entropy"], 1e-4)
        assert record["images_per_s"] > 0 and record["data_s"] >= 0
    assert log[0]["lr"] == 0.0 and log[1]["lr"] > 0  # linear warmup from 0
    assert log[0]["teacher_temp"] == pytest.approx(0.02)

    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pth")  # weights_only=True
    assert ckpt["step"] == 2 and ckpt["epoch"] == 1
    assert ckpt["resolved"]["global_batch"] == 2 and ckpt["resolved"]["steps_per_epoch"] == 2
    student, teacher = ckpt["student"], ckpt["teacher"]
    # Epoch 0 leaves the head's last layer at its initial value; everything else moved, and
    # the teacher (an EMA with momentum ~0.996) moved less than the student.
    initial, _ = build_networks(resolve_backbone("test_vit_tiny"), cfg.model, cfg.seed)
    initial = initial.state_dict()
    assert torch.equal(student["head.last_layer.weight_v"], initial["head.last_layer.weight_v"])
    key = "backbone.blocks.0.attn.qkv.weight"
    student_moved = (student[key] - initial[key]).abs().max()
    teacher_moved = (teacher[key] - initial[key]).abs().max()
    assert 0 < teacher_moved < 0.1 * student_moved
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["model"]["arch"] == "test_vit_tiny"
    assert config["resolved"]["precision"] == "fp32"

    # The exported teacher backbone loads into dinotrack with no model name and no conversion.
    net, spec = load_backbone(None, result.export)
    assert spec.name == "test_vit_tiny" and spec.patch_size == 8
    frames = torch.rand(2, 3, 48, 64)
    reference, _ = load_backbone("test_vit_tiny")
    reference.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in teacher.items() if k.startswith("backbone.")}
    )
    with torch.no_grad():
        torch.testing.assert_close(net(frames), reference(frames))
        features = net.forward_features(frames)
    assert features.shape == (2, 1 + 6 * 8, 64) and torch.isfinite(features).all()


def test_log_lines_average_the_steps_since_the_previous_line(videos, tmp_path):
    steps = []
    cfg = tiny_config(tmp_path / "run", videos, max_steps=3, log_every=2)
    train(cfg, on_step=lambda info: steps.append(info.metrics))
    log = read_log(tmp_path / "run")
    assert [(r["step"], r["steps_logged"]) for r in log] == [(2, 2), (3, 1)]
    for key in ("loss", "teacher_entropy", "kl", "step_s"):
        assert log[0][key] == pytest.approx((steps[0][key] + steps[1][key]) / 2)
        assert log[1][key] == pytest.approx(steps[2][key])
    assert log[0]["lr"] == steps[1]["lr"]  # schedules: the line's own step


def test_exported_backbone_tracks_a_clip(videos, tmp_path):
    from dinotrack import Tracker
    from dinotrack.io.video import iter_frames

    result = train(tiny_config(tmp_path / "run", videos, max_steps=1))
    tracker = Tracker.from_pretrained(weights=result.export, device="cpu", short_side=96)
    first = next(iter_frames(videos[0]))
    mask = np.zeros(first.shape[:2], np.uint8)
    mask[150:350, 300:600] = 1
    masks = list(tracker.track(str(videos[0]), mask, stop=4))
    assert [i for i, _ in masks] == [0, 1, 2, 3]
    for _, m in masks:
        assert m.shape == first.shape[:2] and set(np.unique(m)) <= {0, 1}
    assert (masks[-1][1] == 1).any()


def states_equal(a, b, path="ckpt"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            states_equal(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            states_equal(x, y, f"{path}[{k}]")
    else:
        assert a == b, path


def test_interrupted_and_resumed_run_equals_uninterrupted_run(videos, tmp_path):
    # 2 steps per epoch; steps 1-2 keep the last layer frozen, 3-4 do not.
    whole = tiny_config(tmp_path / "whole", videos, max_steps=4)
    train(whole)
    parts = tmp_path / "parts"
    first = train(tiny_config(parts, videos, max_steps=1))  # stopped mid-epoch 0
    assert first.step == 1
    # Resumes mid-epoch 1 the second time, with DataLoader workers this time.
    second = train(tiny_config(parts, videos, max_steps=3, data={"num_workers": 2}))
    assert (second.resumed_from, second.step) == (1, 3)
    third = train(tiny_config(parts, videos, max_steps=4))
    assert (third.resumed_from, third.step) == (3, 4)
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pth")
    b = load_checkpoint(parts / "checkpoint.pth")
    for key in ("student", "teacher", "optimizer", "loss", "rng", "step", "epoch"):
        states_equal(a[key], b[key], key)
    log_a, log_b = read_log(tmp_path / "whole"), read_log(parts)
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]

    # Running the finished command again changes nothing; other settings are refused.
    again = train(tiny_config(parts, videos, max_steps=4))
    assert (again.resumed_from, again.step) == (4, 4)
    with pytest.raises(ValueError, match=r"optim.lr: 0.0005 -> 0.001.*--no-resume"):
        train(tiny_config(parts, videos, max_steps=5, optim={"lr": 0.001}))


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from pretrain_support import tiny_config
from pretrain.train import train

def on_step(info):
    if info.step == 3:  # after step 3 is logged; the last checkpoint is step 2's
        os.kill(os.getpid(), signal.SIGKILL)

out, videos = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
train(tiny_config(out, videos, max_steps=4, save_every=2), on_step=on_step)
"""


def test_killed_run_resumes_exactly(videos, tmp_path):
    whole = train(tiny_config(tmp_path / "whole", videos, max_steps=4))
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    args = [sys.executable, "-c", KILLED_RUN, str(run), *map(str, videos)]
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [r["step"] for r in read_log(run)] == [1, 2, 3]
    assert load_checkpoint(run / "checkpoint.pth")["step"] == 2
    stale = run / ".checkpoint.pth.0123456789ab.tmp"  # as a kill during a save leaves it
    stale.write_bytes(b"half a checkpoint")

    resumed = train(tiny_config(run, videos, max_steps=4, save_every=2))
    assert (resumed.resumed_from, resumed.step) == (2, 4)
    assert not stale.exists()
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("student", "teacher", "optimizer", "loss", "step", "epoch"):
        states_equal(a[key], b[key], key)
    # Step 3's line of the killed run was dropped and written again by the resumed run.
    assert [r["loss"] for r in read_log(run)] == [r["loss"] for r in read_log(tmp_path / "whole")]


def test_time_limit_saves_and_the_same_command_goes_on(videos, tmp_path):
    # save_every 100: the only checkpoints are the time limit's and the last step's.
    cfg = tiny_config(tmp_path / "run", videos, max_steps=3, save_every=100, time_limit=0.0)
    first = train(cfg)
    assert (first.step, first.timed_out) == (1, True)
    assert load_checkpoint(first.checkpoint)["step"] == 1
    assert read_checkpoint(first.export)["info"]["steps"] == 1
    second = train(cfg)
    assert (second.resumed_from, second.step, second.timed_out) == (1, 2, True)
    last = train(dataclasses.replace(cfg, time_limit=None))
    assert (last.resumed_from, last.step, last.timed_out) == (2, 3, False)
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2, 3]


def test_non_finite_loss_names_the_step_and_terms(tmp_path):
    from pretrain.distributed import setup

    cfg = tiny_config(tmp_path, [tmp_path])
    trainer = Trainer(cfg, setup("cpu"), resolve_backbone("test_vit_tiny"), steps_per_epoch=2)
    views = [torch.randn(2, 3, 32, 32) for _ in range(2)] + [torch.randn(2, 3, 16, 16)] * 2
    views[3] = views[3].clone()
    views[3][0, 0, 0, 0] = float("nan")
    with pytest.raises(
        RuntimeError,
        match=r"non-finite loss at step 1 \(epoch 0\).*"
        r"CE\(teacher view 0, student view 3\)=nan",
    ):
        trainer.train_step(views)
    assert trainer.step == 0


def test_cli_errors_are_one_line(capsys, tmp_path):
    code = main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nothing does not exist" in err
    code = main(["--data", str(tmp_path), "--arch", "dino_vits16", "--patch-size", "8"])
    assert code == 2 and "has patch 16, not 8" in capsys.readouterr().err
    code = main(["--data", str(tmp_path), "--epochs", "5"])
    assert code == 2 and "--warmup-epochs 10 must be smaller than --epochs 5" in (
        capsys.readouterr().err
    )
    code = main(["--data", str(tmp_path), "--arch", "test_vit_tiny16", "--local-crop-size", "40"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "multiples of the patch size 16 of test_vit_tiny16; e.g. --global-crop-size 224 " in err


def test_damaged_image_met_by_a_loader_worker_is_one_error_line(shared_data, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for k in range(4):
        name = f"{k:05d}.jpg"
        (data / name).write_bytes(
            shared_data("davis2016-dev", "JPEGImages", "480p", "boat", name).read_bytes()
        )
    (data / "00002.jpg").write_bytes((data / "00002.jpg").read_bytes()[:3000])  # cut off
    args = ["--data", str(data), "--arch", "test_vit_tiny", "--out", str(tmp_path / "run")]
    args += ["--global-crop-size", "32", "--local-crop-size", "16", "--out-dim", "64"]
    args += ["--batch-size", "4", "--num-workers", "1", "--device", "cpu", "--no-progress"]
    args += ["--epochs", "2", "--warmup-epochs", "1", "--max-steps", "1"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith("pretrain: error: cannot read image ") and err.count("\n") == 1
    assert "00002.jpg" in err and "run the same command again" in err


def test_registers_the_dinotrack_subcommand():
    parser = argparse.ArgumentParser(prog="dinotrack")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "pretrain",
            "--data",
            "a",
            "--data",
            "b",
            "--arch",
            "vit_small",
            "--patch-size",
            "8",
            "--out",
            "runs/s8",
            "--batch-size",
            "7",
            "--max-steps",
            "3",
            "--device",
            "cpu",
        ]
    )
    from pretrain.cli import config_from_args

    cfg = config_from_args(args)
    assert cfg.data.paths == ("a", "b") and cfg.model.patch_size == 8
    assert (cfg.optim.batch_size, cfg.max_steps, cfg.device) == (7, 3, "cpu")
    assert cfg.optim.epochs == 100 and cfg.model.out_dim == 65536  # the paper's defaults
    assert cfg.augment.blur_p == (1.0, 0.1, 0.5) and cfg.augment.solarize_p == 0.2
    assert cfg.model.depth is None and cfg.probe_davis is None
    assert callable(args.func)
    more = ["pretrain", "--data", "a", "--arch", "vit_tiny", "--depth", "4"]
    more += ["--color-jitter-p", "0.3", "--grayscale-p", "0", "--solarize-p", "0"]
    more += ["--blur-p", "0.5", "0.1", "0.2", "--probe-davis", "D", "--probe-sequences", "x,y"]
    cfg = config_from_args(parser.parse_args(more))
    a = cfg.augment
    assert (a.color_jitter_p, a.grayscale_p, a.solarize_p, a.blur_p) == (0.3, 0, 0, (0.5, 0.1, 0.2))
    assert cfg.model.depth == 4
    assert (cfg.probe_davis, cfg.probe_sequences) == ("D", ("x", "y"))


def test_out_of_range_augmentation_and_probe_flags_are_one_line(capsys, tmp_path):
    for flags, message in (
        (["--grayscale-p", "1.5"], "--grayscale-p and --solarize-p must be in [0, 1]"),
        (["--blur-p", "0.5", "2", "0"], "--blur-p needs three probabilities in [0, 1]"),
        (["--probe-every", "0"], "--probe-every must be at least 1"),
        (["--depth", "0", "--arch", "vit_tiny"], "--depth must be positive"),
    ):
        code = main(["--data", str(tmp_path), "--epochs", "20", *flags])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_paths_run_on_the_cpu(tmp_path, precision):
    """The autocast (and, for fp16, gradient-scaler) code that CUDA runs use, here on the CPU."""
    from pretrain.distributed import setup

    def losses(precision):
        cfg = tiny_config(tmp_path, [tmp_path], precision=precision)
        trainer = Trainer(cfg, setup("cpu"), resolve_backbone("test_vit_tiny"), 2)
        gen = torch.Generator().manual_seed(0)
        views = [torch.randn(2, 3, 32, 32, generator=gen) for _ in range(2)]
        views += [torch.randn(2, 3, 16, 16, generator=gen) for _ in range(2)]
        torch.manual_seed(0)
        return trainer, [trainer.train_step(views)["loss"] for _ in range(2)]

    reference = losses("fp32")[1]
    trainer, mixed = losses(precision)
    assert trainer.precision == precision and trainer.step == 2
    assert mixed[0] == pytest.approx(reference[0], rel=0.02)
    assert all(math.isfinite(x) for x in mixed)
    assert (trainer.scaler is not None) == (precision == "fp16")
    if trainer.scaler is not None:
        assert trainer.state_dict()["scaler"]["scale"] > 0


def test_init_from_a_checkpoint_or_a_backbone_starts_a_new_run_from_its_weights(
    videos, tmp_path, capsys
):
    first = train(tiny_config(tmp_path / "first", videos, max_steps=2))
    ckpt = load_checkpoint(first.checkpoint)
    # Other crops and a fresh schedule: what a run cannot change when it resumes.
    changes = {"augment": {"global_crop_size": 48, "local_crop_size": 16}, "max_steps": 0}
    seen = {}

    def keep(info) -> None:
        teacher = info.trainer.teacher.state_dict()
        seen.setdefault("teacher", {k: v.clone() for k, v in teacher.items()})

    from_ckpt = tiny_config(tmp_path / "a", videos, init_from=str(first.checkpoint), **changes)
    result = train(dataclasses.replace(from_ckpt, max_steps=1), on_step=keep)
    assert result.resumed_from == 0 and result.step == 1
    # One step at the new run's first learning rate (0 in warm-up) moves the teacher from
    # the checkpoint's by the EMA only: it starts from the checkpoint's weights.
    start = ckpt["teacher"]
    for name, value in seen["teacher"].items():
        assert torch.allclose(value, start[name], atol=1e-6), name

    fresh = train(dataclasses.replace(tiny_config(tmp_path / "b", videos, **changes), max_steps=1))
    fresh_teacher = load_checkpoint(fresh.checkpoint)["teacher"]
    assert not torch.allclose(fresh_teacher["backbone.pos_embed"], start["backbone.pos_embed"])

    # A backbone file (the exported teacher backbone) gives both backbones; heads stay new.
    cfg = tiny_config(tmp_path / "c", videos, init_from=str(first.export), **changes)
    seen.clear()
    train(dataclasses.replace(cfg, max_steps=1), on_step=keep)
    exported = read_checkpoint(first.export)["state_dict"]
    for name, value in exported.items():
        assert torch.allclose(seen["teacher"][f"backbone.{name}"], value.float(), atol=1e-3)

    # A damaged pretraining checkpoint is said to be one, not read as a backbone file.
    damaged = tmp_path / "damaged.pth"
    torch.save({"format": ckpt["format"], "version": ckpt["version"]}, damaged)
    with pytest.raises(ValueError, match="incomplete or damaged pretraining checkpoint"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "e"), init_from=str(damaged)))

    code = main(["--data", str(videos[0]), "--out", str(tmp_path / "d"), "--arch",
                 "test_vit_tiny", "--init-from", str(tmp_path / "missing.pth")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing.pth" in err
