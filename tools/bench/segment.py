"""End-to-end segmentation speed and memory: dinotrack vs a per-frame official protocol.

For each backbone shape (random weights: the official ones cannot be downloaded here, and
speed does not depend on weights), both implementations segment the first frames of a video
at 480p from the same first mask; each run is a fresh process so that its peak RSS is its own.

    python -m tools.bench.segment --video ../shared/data/videos/bear.mp4 --frames 6
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tools.bench.processes import last_json_line, peak_rss_gb, run_module
from tools.data.location import data_path


def child(args: argparse.Namespace) -> None:
    from dinotrack import Tracker, TrackerConfig, load_backbone
    from dinotrack.io.video import iter_frames
    from tools.bench.official_protocol import OfficialProtocol

    net, spec = load_backbone(args.model, pretrained=False)
    tracker = Tracker(net, spec, TrackerConfig(resize_rule=args.resize_rule), device="cpu")
    frames = list(iter_frames(args.video, stop=args.frames))
    mask = np.zeros(frames[0].shape[:2], np.uint8)
    h, w = mask.shape
    mask[h // 4 : h // 2, w // 3 : w // 2] = 1  # a first-frame object
    mask[h // 2 : 3 * h // 4, w // 2 : 2 * w // 3] = 2
    runner = tracker if args.method == "dinotrack" else OfficialProtocol(tracker)
    start = time.perf_counter()
    masks = [m for _, m in runner.track(frames, mask)]
    elapsed = time.perf_counter() - start
    digest = int(np.sum([m.astype(np.int64).sum() for m in masks]))
    print(
        json.dumps(
            {
                "s_per_frame": elapsed / (len(frames) - 1),
                "peak_rss_gb": peak_rss_gb(),
                "frames": len(frames),
                "input": list(tracker.input_size(h, w)),
                "label_sum": digest,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(data_path("videos", "bear.mp4")))
    parser.add_argument("--frames", type=int, default=6, help="frames per run (first included)")
    parser.add_argument("--models", default="dino_vits16,dino_vits8")
    parser.add_argument("--resize-rule", default="official")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"video {args.video}, {args.frames} frames, resize rule {args.resize_rule}, CPU")
    for model in args.models.split(","):
        results = {}
        for method in ("official", "dinotrack"):
            cmd = [
                "--child",
                "--model",
                model,
                "--method",
                method,
                "--video",
                args.video,
                "--frames",
                str(args.frames),
                "--resize-rule",
                args.resize_rule,
            ]
            results[method] = last_json_line(run_module(__spec__.name, *cmd))
        off, ours = results["official"], results["dinotrack"]
        print(
            f"{model} input {off['input'][0]}x{off['input'][1]}: "
            f"official {off['s_per_frame']:.2f} s/frame, peak RSS {off['peak_rss_gb']:.2f} GB | "
            f"dinotrack {ours['s_per_frame']:.2f} s/frame, peak RSS {ours['peak_rss_gb']:.2f} GB"
            f" | speed-up {off['s_per_frame'] / ours['s_per_frame']:.2f}x"
        )


if __name__ == "__main__":
    main()
