"""Tracking throughput (frames/s) of `Tracker.track` on a real video, and of its backbone alone.

The backbone's preset (short side, propagation window) unless --preset/--short-side say
otherwise. Random weights of the named architecture (speed does not depend on the weights;
official ones cannot be downloaded here). End to end = decoding (background thread),
preprocessing, the backbone in batches, propagation, the label map at frame size, copied to
the host; the first `--warmup` frames are left out of the rate. Backbone alone = the same
frames' forward passes only, preprocessed beforehand. On CUDA every timing ends with a
synchronise.

    python -m tools.bench.fps --device cuda --model dino_vits8 --frames 200   # GPU target
    python -m tools.bench.fps --device cpu --model test_vit_tiny --frames 20  # smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dinotrack import Tracker, TrackerConfig, load_backbone
from dinotrack.config import PRESETS, preset_config
from dinotrack.io.video import iter_frames
from tools.data.location import data_path


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : height // 2, width // 3 : width // 2] = 1
    mask[height // 2 : 3 * height // 4, width // 2 : 2 * width // 3] = 2
    return mask


def measure(args: argparse.Namespace) -> dict:
    net, spec = load_backbone(args.model, pretrained=False)
    # The backbone's own preset (propagation window, short side) unless told otherwise.
    preset = args.preset or spec.preset
    config = preset_config(preset)
    overrides = {"precision": args.precision, "batch_size": args.batch_size}
    if args.short_side is not None:
        overrides["short_side"] = args.short_side
    if getattr(args, "redetect", None) is not None:
        overrides["redetect"] = args.redetect
    tracker = Tracker(net, spec, replace(config, **overrides), device=args.device)
    device = tracker.device
    frames = list(iter_frames(args.video, stop=args.frames))
    if not 1 <= args.warmup < len(frames):
        raise SystemExit(f"--warmup must be in [1, {len(frames) - 1}] for {len(frames)} frames")
    height, width = frames[0].shape[:2]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    stamps = []
    for _ in tracker.track(args.video, first_mask(height, width), stop=args.frames):
        stamps.append(time.perf_counter())  # the mask is on the host: the GPU work is done
    timed = len(stamps) - args.warmup
    end_to_end = timed / (stamps[-1] - stamps[args.warmup - 1])

    input_size = tracker.input_size(height, width)
    batches = [
        tracker.extractor.preprocess(np.stack(frames[i : i + args.batch_size]), input_size)
        for i in range(0, len(frames), args.batch_size)
    ]
    tracker.extractor.forward(batches[0])  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        tracker.extractor.forward(batch)
    synchronize(device)
    backbone = len(frames) / (time.perf_counter() - start)
    return {
        "model": spec.name,
        "device": str(device),
        "hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[
            tracker.extractor.dtype
        ],
        "video": str(args.video),
        "frame_size": [width, height],
        "input_size": list(input_size),
        "preset": preset,
        "radius": tracker.config.radius,
        "frames_timed": timed,
        "batch_size": args.batch_size,
        "end_to_end_fps": end_to_end,
        "backbone_fps": backbone,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9
        if device.type == "cuda"
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=data_path("videos", "bear.mp4"))
    parser.add_argument("--model", default="dino_vits8")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="default: the backbone's"
    )
    parser.add_argument("--short-side", type=int, default=None, help="default: the preset's")
    parser.add_argument(
        "--redetect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="re-detection of lost objects (default: the preset's)",
    )
    parser.add_argument("--batch-size", type=int, default=TrackerConfig().batch_size)
    parser.add_argument("--frames", type=int, default=200, help="frames of the video to track")
    parser.add_argument("--warmup", type=int, default=8, help="first frames left out of the rate")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args)
    print(
        f"{result['model']} on {result['hardware']} ({result['precision']}), "
        f"{result['frame_size'][0]}x{result['frame_size'][1]} frames -> input "
        f"{result['input_size'][1]}x{result['input_size'][0]}, batch {result['batch_size']}, "
        f"preset {result['preset']} (radius {result['radius']}): "
        f"end to end {result['end_to_end_fps']:.1f} frames/s over {result['frames_timed']} "
        f"frames; backbone alone {result['backbone_fps']:.1f} frames/s"
        + (
            f"; peak GPU memory {result['peak_gpu_memory_gb']:.2f} GB"
            if result["peak_gpu_memory_gb"] is not None
            else ""
        )
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
