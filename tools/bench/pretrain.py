"""Throughput of DINO pretraining steps, split into data loading, augmentation and compute.

Each image is 2 global views (224 px) and 8 local views (96 px) by default. For every
architecture, a few training steps run on real video frames with randomly initialised
networks; each phase is timed separately (with a device synchronisation after it):

* data: decoding and batching the frames (the DataLoader's work, measured in-process);
* augment: moving the batch to the device and building the multi-crop views;
* compute: teacher and student forward, loss, backward, optimiser and EMA update.

images/s is the batch size over the sum of the three (no overlap of loading and compute;
with DataLoader workers on spare cores the data part runs in parallel).

    python -m tools.bench.pretrain [--archs vit_small/16 vit_small/8] [--batch-size 4]
        [--steps 3] [--device auto] [--threads N] [--data ../shared/data/videos]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pretrain.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, PretrainConfig
from pretrain.data import FrameBatches, find_sources
from pretrain.distributed import setup
from pretrain.model import resolve_backbone
from pretrain.train import Trainer
from tools.data.location import data_path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(arch: str, args: argparse.Namespace) -> dict:
    name, _, patch = arch.partition("/")
    cfg = PretrainConfig(
        out=tempfile.mkdtemp(prefix="bench_pretrain_"),
        data=DataConfig(paths=tuple(args.data), frames_per_video=2, num_workers=0),
        augment=AugmentConfig(local_crops=args.local_crops),
        model=ModelConfig(arch=name, patch_size=int(patch) if patch else None),
        optim=OptimConfig(epochs=1, warmup_epochs=0, batch_size=args.batch_size),
        device=args.device,
        precision=args.precision,
    )
    info = setup(cfg.device)
    sources = find_sources(cfg.data.paths)
    data = FrameBatches(sources, args.batch_size, frames_per_video=2, seed=0)
    if data.steps_per_epoch < args.steps + 1:
        raise SystemExit(f"not enough data for {args.steps + 1} batches of {args.batch_size}")
    trainer = Trainer(cfg, info, resolve_backbone(name, cfg.model.patch_size), 100)
    batches = iter(data)
    times = {"data": [], "augment": [], "compute": []}
    losses = []
    for step in range(args.steps + 1):  # the first step warms up and is not counted
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        views = trainer.views(batch)
        sync(info.device)
        t2 = time.perf_counter()
        metrics = trainer.train_step(views)
        sync(info.device)
        t3 = time.perf_counter()
        losses.append(metrics["loss"])
        if step:
            times["data"].append(t1 - t0)
            times["augment"].append(t2 - t1)
            times["compute"].append(t3 - t2)
    per_step = {k: statistics.mean(v) for k, v in times.items()}
    total = sum(per_step.values())
    return {
        "arch": arch,
        "timm_arch": trainer.student_net.backbone.default_cfg.get("architecture"),
        "batch_size": args.batch_size,
        "views": [2, args.local_crops],
        "steps_timed": args.steps,
        "precision": trainer.precision,
        "seconds_per_step": per_step,
        "share": {k: v / total for k, v in per_step.items()},
        "images_per_s": args.batch_size / total,
        "compute_images_per_s": args.batch_size / per_step["compute"],
        "losses": losses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["vit_small/16", "vit_small/8"])
    parser.add_argument("--data", nargs="+", default=[str(data_path("videos"))])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--local-crops", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    print(json.dumps(machine))
    results = []
    for arch in args.archs:
        r = bench(arch, args)
        results.append(r)
        s = r["seconds_per_step"]
        print(
            f"{arch:14s} batch {r['batch_size']} ({r['precision']}): "
            f"{r['images_per_s']:.3f} images/s; per step data {s['data']:.2f} s, "
            f"augment {s['augment']:.2f} s, compute {s['compute']:.2f} s "
            f"({100 * r['share']['data']:.0f}% / {100 * r['share']['augment']:.0f}% / "
            f"{100 * r['share']['compute']:.0f}%)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
