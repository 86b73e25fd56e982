"""Today's backbones side by side: segmentation speed and peak memory at their presets' sizes.

Part 1: each backbone (random weights: the official ones cannot be downloaded here, and speed
does not depend on them) segments the first frames of a video with its own preset
(``dino_vits8``: the DINO protocol at 480; DINOv2 and DINOv3: the DINOv3 protocol at 960),
in a fresh process each so that its peak RSS is its own; with ``--compile``, the same again
with the backbone's blocks compiled (``torch.compile``). Frames go through the backbone one
at a time (``batch_size=1``: one input shape, one compilation) and the first two tracked
frames are left out of the timing as warm-up, in both modes.

Part 2: the peak memory of one propagation step at the presets' largest patch grid (DINOv3
preset, patch 14: 69 x 122 patches for a 16:9 or DAVIS frame) for the feature widths of the
registry's families, each in a fresh process; the project's budget is < 3 GB for one step.

    python -m tools.bench.backbones --video ../shared/data/videos/bear.mp4 --frames 6 --compile
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tools.bench.processes import last_json_line, peak_rss_gb, run_module
from tools.data.location import data_path

DEFAULT_MODELS = "dino_vits8,dinov2_vits14,dinov3_vits16"
# (feature channels, patch grid): DINOv2 S / L / g at the DINOv3 preset (patch 14, short side
# 960 -> 966 x 1708 for 480 x 854), DINOv3 7B (patch 16, 960 x 1712).
STEP_SHAPES = ((384, 69, 122), (1024, 69, 122), (1536, 69, 122), (4096, 60, 107))


def child_segment(args: argparse.Namespace) -> None:
    from dinotrack import Tracker, load_backbone
    from dinotrack.config import preset_config
    from dinotrack.io.video import iter_frames

    net, spec = load_backbone(args.model, pretrained=False)
    config = preset_config(spec.preset, compile=args.compile, batch_size=1)
    tracker = Tracker(net, spec, config, device="cpu")
    frames = list(iter_frames(args.video, stop=args.frames))
    mask = np.zeros(frames[0].shape[:2], np.uint8)
    h, w = mask.shape
    mask[h // 4 : h // 2, w // 3 : w // 2] = 1  # two first-frame objects
    mask[h // 2 : 3 * h // 4, w // 2 : 2 * w // 3] = 2
    warmup = 2  # compilation happens on the first calls
    times = []
    start = time.perf_counter()
    for index, _ in tracker.track(frames, mask):
        now = time.perf_counter()
        if index > warmup:
            times.append(now - start)
        start = now
    result = {
        "s_per_frame": sum(times) / len(times),
        "peak_rss_gb": peak_rss_gb(),
        "input": list(tracker.input_size(h, w)),
        "preset": spec.preset,
    }
    print(json.dumps(result))


def child_step(args: argparse.Namespace) -> None:
    import torch

    from dinotrack import propagate_labels
    from dinotrack.config import preset_config

    channels, gh, gw = args.step
    cfg = preset_config("dinov3")
    g = torch.Generator().manual_seed(0)
    target = torch.randn(channels, gh, gw, generator=g)
    context = torch.randn(cfg.n_last_frames + 1, channels, gh, gw, generator=g)
    labels = torch.rand(cfg.n_last_frames + 1, 3, gh, gw, generator=g)
    labels = labels / labels.sum(1, keepdim=True)
    inputs = peak_rss_gb()
    start = time.perf_counter()
    with torch.inference_mode():
        propagate_labels(
            target, context, labels, radius=cfg.radius, topk=cfg.topk, temperature=cfg.temperature
        )
    elapsed = time.perf_counter() - start
    print(json.dumps({"seconds": elapsed, "peak_rss_gb": peak_rss_gb(), "inputs_gb": inputs}))


def run_child(*extra: str) -> dict:
    return last_json_line(run_module(__spec__.name, "--child", *extra))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(data_path("videos", "bear.mp4")))
    parser.add_argument("--frames", type=int, default=6, help="frames per run (first included)")
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--compile", action="store_true", help="also time compiled backbones")
    parser.add_argument("--skip-step", action="store_true", help="leave out part 2")
    parser.add_argument("--skip-segment", action="store_true", help="leave out part 1")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--step", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_step(args) if args.step else child_segment(args)
        return

    models = [] if args.skip_segment else args.models.split(",")
    if models:
        print(f"part 1: video {args.video}, {args.frames} frames, random weights, CPU")
    base = None
    for model in models:
        flags = ["--model", model, "--video", args.video, "--frames", str(args.frames)]
        eager = run_child(*flags)
        base = base or eager["s_per_frame"]
        line = (
            f"{model:15s} preset {eager['preset']:6s} input {eager['input'][0]}x"
            f"{eager['input'][1]}: {eager['s_per_frame']:.2f} s/frame "
            f"({eager['s_per_frame'] / base:.2f}x the first), "
            f"peak RSS {eager['peak_rss_gb']:.2f} GB"
        )
        if args.compile:
            compiled = run_child(*flags, "--compile")
            line += (
                f" | compiled {compiled['s_per_frame']:.2f} s/frame, peak RSS "
                f"{compiled['peak_rss_gb']:.2f} GB, speed-up "
                f"{eager['s_per_frame'] / compiled['s_per_frame']:.2f}x"
            )
        print(line, flush=True)
    if args.skip_step:
        return
    print("part 2: one propagation step, DINOv3 preset (8 context frames, radius 12, top-5)")
    for channels, gh, gw in STEP_SHAPES:
        step = run_child("--step", str(channels), str(gh), str(gw))
        print(
            f"C={channels:4d} grid {gh}x{gw}: {step['seconds']:.2f} s, process peak RSS "
            f"{step['peak_rss_gb']:.2f} GB (inputs {step['inputs_gb']:.2f} GB)",
            flush=True,
        )


if __name__ == "__main__":
    main()
