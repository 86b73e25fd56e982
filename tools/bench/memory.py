"""Peak resident memory of `dinotrack segment` on a long 720p clip, for 60 vs all frames.

Streaming means the peak must not grow with the number of frames. Each run is a fresh process
that runs the CLI in-process and reports its own peak RSS (VmHWM).

    python -m tools.bench.memory --video ../shared/data/videos-wild/02_cups.mp4 \
        --frames 60,300 --model test_vit_tiny
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tools.bench.processes import last_json_line, peak_rss_gb, run_module
from tools.data.location import data_path


def child(argv: list[str]) -> None:
    """A fresh process: run the CLI in-process on ``argv``, print its time and peak RSS."""
    from dinotrack.cli import main as cli_main

    start = time.perf_counter()
    code = cli_main(argv)
    elapsed = time.perf_counter() - start
    print(json.dumps({"code": code, "seconds": elapsed, "peak_rss_gb": peak_rss_gb()}))


def first_mask(video: str, path: Path) -> None:
    import numpy as np

    from dinotrack.io.masks import write_mask
    from dinotrack.io.video import iter_frames

    frame = next(iter_frames(video))
    mask = np.zeros(frame.shape[:2], np.uint8)
    h, w = mask.shape
    mask[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 1
    write_mask(path, mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(data_path("videos-wild", "02_cups.mp4")))
    parser.add_argument("--frames", default="60,300")
    parser.add_argument("--model", default="test_vit_tiny")
    parser.add_argument("--short-side", default="480")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mask = Path(tmp) / "mask.png"
        first_mask(args.video, mask)
        for n in args.frames.split(","):
            cmd = [
                "--child",
                "segment",
                args.video,
                "--mask",
                str(mask),
                "--out",
                str(Path(tmp) / f"out{n}"),
                "--max-frames",
                n,
                "--model",
                args.model,
                "--short-side",
                args.short_side,
                "--device",
                "cpu",
            ]
            start = time.perf_counter()
            res = last_json_line(run_module(__spec__.name, *cmd))
            written = len(list((Path(tmp) / f"out{n}").glob("*.png")))
            print(
                f"{args.model}, {n} frames of {Path(args.video).name} (short side "
                f"{args.short_side}): {written} masks in {time.perf_counter() - start:.0f} s, "
                f"peak RSS {res['peak_rss_gb']:.2f} GB"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
