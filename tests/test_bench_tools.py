"""The benchmark scripts that a session with a GPU runs must work: smoke runs on the CPU."""

from __future__ import annotations

import argparse

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


def test_bench_crops_forms_agree_on_the_cpu():
    import torch

    from pretrain.augment import _batched_resized_crops, sample_crop_boxes

    bench = load_tool("bench_crops")
    frames = torch.randint(0, 256, (2, 3, 60, 100), dtype=torch.uint8)
    boxes = sample_crop_boxes(torch.tensor([[60, 100]] * 6), (0.05, 0.4))
    a = bench.one_by_one(frames, boxes, 24, 3)
    b = _batched_resized_crops(frames, boxes, 24, 3)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
