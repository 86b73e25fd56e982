"""The benchmark scripts that a session with a GPU runs must work: smoke runs on the CPU."""

from __future__ import annotations

import argparse
import re

from tool_support import load_tool


def test_bench_fps_measures_tracking_and_backbone(shared_data):
    bench = load_tool("bench_fps")
    args = argparse.Namespace(
        video=shared_data("videos", "dog-agility.mp4"),
        model="test_vit_tiny",
        device="cpu",
        precision="auto",
        short_side=64,
        batch_size=2,
        frames=6,
        warmup=2,
        json=None,
    )
    result = bench.measure(args)
    assert result["frames_timed"] == 4 and result["precision"] == "fp32"
    assert result["input_size"] == [64, 112]
    assert result["end_to_end_fps"] > 0 and result["backbone_fps"] > 0


def test_bench_crops_times_both_forms_and_they_agree(capsys):
    bench = load_tool("bench_crops")
    bench.main(["--batch-sizes", "1", "--repeats", "1"])
    line = capsys.readouterr().out.splitlines()[-1]
    match = re.fullmatch(
        r"batch +1: one resize per crop +[\d.]+ ms, batched products +[\d.]+ ms, "
        r"max \|diff\| (\S+)",
        line,
    )
    assert match, line
    assert float(match[1]) < 2e-5  # the two forms give the same crops
