"""Multi-crop resizing: one resize per crop vs batched matrix products, side by side.

`pretrain.augment.resized_crops` resizes each crop on its own on the CPU
(`method="one_by_one"`) and uses the batched matrix form (`method="batched"`) on other
devices; this prints both on one device, for DINO's crops (2 global 224 px, 8 local
96 px per frame) of 854x480 frames, and their largest difference.

    python -m tools.bench.crops [--device cuda] [--batch-sizes 4,16,64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pretrain.augment import resized_crops, sample_crop_boxes


def run_jobs(method, frames, jobs):
    out = [resized_crops(frames, boxes, size, repeats, method) for boxes, size, repeats in jobs]
    if frames.device.type == "cuda":
        torch.cuda.synchronize(frames.device)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="4,16")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"frames 854x480, 2 x 224 px + 8 x 96 px crops per frame, on {device}")
    for batch in map(int, args.batch_sizes.split(",")):
        frames = torch.randint(0, 256, (batch, 3, 480, 854), dtype=torch.uint8, device=device)
        sizes = torch.tensor([[480, 854]] * batch)
        jobs = [
            (sample_crop_boxes(sizes, (0.4, 1.0)), 224, 1),
            (sample_crop_boxes(sizes, (0.4, 1.0)), 224, 1),
            (sample_crop_boxes(sizes.repeat(8, 1), (0.05, 0.4)), 96, 8),
        ]
        seconds, outputs = {}, {}
        for name in ("one_by_one", "batched"):
            outputs[name] = run_jobs(name, frames, jobs)  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run_jobs(name, frames, jobs)
                times.append(time.perf_counter() - start)
            seconds[name] = statistics.median(times)
        diff = max(
            float((a - b).abs().max())
            for a, b in zip(outputs["one_by_one"], outputs["batched"], strict=True)
        )
        print(
            f"batch {batch:3d}: one resize per crop {seconds['one_by_one'] * 1e3:8.1f} ms, "
            f"batched products {seconds['batched'] * 1e3:8.1f} ms, max |diff| {diff:.1e}"
        )


if __name__ == "__main__":
    main()
