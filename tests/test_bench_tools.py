"""The benchmark scripts that a session with a GPU runs must work: smoke runs on the CPU."""

from __future__ import annotations

import argparse
import re

from dinotrack.config import PRESETS
from tools.bench import crops, fps, source_check
from tools.bench.official_protocol import OfficialProtocol


def fps_args(shared_data) -> dict:
    """The arguments of a small `tools.bench.fps` run, but for its warm-up."""
    return dict(
        video=shared_data("videos", "dog-agility.mp4"),
        model="test_vit_tiny",
        device="cpu",
        precision="auto",
        preset=None,
        short_side=64,
        batch_size=2,
        frames=6,
        json=None,
    )


def test_bench_fps_measures_tracking_and_backbone(shared_data):
    bench = fps
    args = argparse.Namespace(**fps_args(shared_data), warmup=2)
    result = bench.measure(args)
    assert result["frames_timed"] == 4 and result["precision"] == "fp32"
    assert result["input_size"] == [64, 112]
    assert result["preset"] == "dino" and result["radius"] == 12  # the backbone's own
    assert result["end_to_end_fps"] > 0 and result["backbone_fps"] > 0


def test_bench_fps_runs_at_the_named_preset_unless_told_a_short_side(shared_data):
    args = argparse.Namespace(
        **{**fps_args(shared_data), "preset": "offline", "short_side": None, "frames": 3},
        warmup=1,
    )
    result = fps.measure(args)
    offline = PRESETS["offline"]
    assert result["preset"] == "offline" and result["radius"] == offline["radius"]
    assert min(result["input_size"]) == offline["short_side"]


def test_bench_crops_times_both_forms_and_they_agree(capsys):
    bench = crops
    bench.main(["--batch-sizes", "1", "--repeats", "1"])
    line = capsys.readouterr().out.splitlines()[-1]
    match = re.fullmatch(
        r"batch +1: one resize per crop +[\d.]+ ms, batched products +[\d.]+ ms, "
        r"max \|diff\| (\S+)",
        line,
    )
    assert match, line
    assert float(match[1]) < 2e-5  # the two forms give the same crops


def test_official_protocol_baseline_leaves_the_callers_tracker_as_it_is(shared_data, tiny_tracker):
    import numpy as np

    from dinotrack.io.video import iter_frames

    tracker = tiny_tracker(short_side=64)
    frames = list(iter_frames(shared_data("videos", "dog-agility.mp4"), stop=3))
    mask = np.zeros(frames[0].shape[:2], np.uint8)
    mask[100:300, 200:500] = 1
    before = [blk.attn.fused_attn for blk in tracker.extractor.net.blocks]
    assert all(before)  # timm fuses attention by default
    baseline = OfficialProtocol(tracker)
    assert all(not blk.attn.fused_attn for blk in baseline.extractor.net.blocks)
    assert [blk.attn.fused_attn for blk in tracker.extractor.net.blocks] == before
    official = [m for _, m in baseline.track(frames, mask)]
    ours = [m for _, m in tracker.track(frames, mask)]
    assert len(official) == len(ours) == 3
    # Same weights, same protocol: the two agree on nearly every pixel.
    assert min((a == b).mean() for a, b in zip(official, ours, strict=True)) > 0.99


def test_bench_source_check_times_counting_and_checking(tmp_path, capsys):
    import adversarial_inputs as bad

    bad.video(tmp_path / "a.mp4", count=4)
    bad.random_bytes(tmp_path / "noise.mp4")  # skipped by the check, timed all the same
    source_check.main([str(tmp_path), "--repeats", "1"])
    line = capsys.readouterr().out.splitlines()[-1]
    parts = line.split(": ", 1)[1].split("; ")
    assert line.startswith(f"{tmp_path} (2 videos): ") and len(parts) >= 1, line
    for part in parts:
        assert re.fullmatch(
            r"(pyav|decord): count [\d.]+ s, check [\d.]+ s \(\d+ ms/video, x[\d.]+\)", part
        ), line


def test_bench_studio_prints_each_figure(shared_data, capsys):
    from tools.bench import studio

    shared_data("davis2016-dev", "JPEGImages", "480p", "dog-agility")
    studio.main(
        ["--model", "test_vit_tiny", "--short-side", "64", "--frames", "8", "--repeats", "1",
         "--memory-frames", "40", "--quality-sequences", "boat"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert re.search(r"frames: GET /api/frames/i from the cache .* median [\d.]+ ms", out), out
    assert re.search(r"clicks: click to mask on a new frame .* median [\d.]+ s", out), out
    match = re.search(r"throughput: 8 frames, .* studio / segment = ([\d.]+)", out)
    assert match and float(match[1]) > 0, out
    ious = dict(re.findall(r"quality: (click|box|box \+ click|box filled) +([\d.]+)", out))
    assert set(ious) == {"click", "box", "box + click", "box filled"}, out
    assert all(0 <= float(v) <= 1 for v in ious.values()) and float(ious["box filled"]) > 0.2
    assert re.search(r"restart: 8 frames, .studio/results.pt [\d.]+ MB", out), out
    assert "(8 frames restored)" in out, out
    match = re.search(r"on frame 4 after it: (\d+) frames tracked, (\d+) kept", out)
    assert match and (int(match[1]), int(match[2])) == (4, 4), out  # batches of 4
    assert re.search(r"memory: after 40 frames RSS [\d.]+ GiB", out), out
    assert re.search(r"memory: growth from frame 20 to 40: [-+][\d.]+ MB per frame", out), out
