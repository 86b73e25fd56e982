"""Helpers for the pretrain tests: a tiny but complete run configuration, and the body of
one process of the multi-process test (importable, as torch.multiprocessing spawns by name)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from pretrain.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, PretrainConfig

# The two shortest clips of the corpus (25 and 35 frames) keep decoding cheap.
SHORT_VIDEOS = ("dog-agility.mp4", "rollerblade.mp4")


def tiny_config(out: Path, paths: list[Path], **changes) -> PretrainConfig:
    """test_vit_tiny with a small head and crops, 2 samples per batch, fp32 on the CPU.

    ``changes`` replace top-level fields; ``data``/``augment``/``model``/``optim`` take a dict
    of that section's fields to replace.
    """
    cfg = PretrainConfig(
        out=str(out),
        data=DataConfig(
            paths=tuple(str(p) for p in paths),
            frames_per_video=2,
            max_short_side=96,
            num_workers=0,
        ),
        augment=AugmentConfig(global_crop_size=32, local_crop_size=16, local_crops=2),
        model=ModelConfig(
            arch="test_vit_tiny", out_dim=32, head_hidden_dim=32, head_bottleneck_dim=16
        ),
        optim=OptimConfig(
            epochs=3,
            batch_size=2,
            warmup_epochs=1,
            warmup_teacher_temp=0.02,
            warmup_teacher_temp_epochs=2,
        ),
        device="cpu",
        precision="fp32",
        log_every=1,
        save_every=1,
        progress=False,
    )
    for section in ("data", "augment", "model", "optim"):
        if section in changes:
            changes[section] = dataclasses.replace(getattr(cfg, section), **changes[section])
    return dataclasses.replace(cfg, **changes)


def distributed_rank(
    rank: int, world: int, port: int, cfg: PretrainConfig | list[PretrainConfig], dump: str
) -> None:
    """One process of a gloo job: train, then save what it saw and holds to ``dump``.

    ``cfg`` may be a list: one configuration per rank.
    """
    from pretrain.train import train

    if isinstance(cfg, list):
        cfg = cfg[rank]
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    seen = {}
    final = {}

    def on_step(info) -> None:
        seen[info.step] = info.ids.clone()
        final["teacher"] = {k: v.clone() for k, v in info.trainer.teacher.state_dict().items()}
        final["center"] = info.trainer.loss_fn.center.clone()
        final["loss"] = info.metrics["loss"]

    result = train(cfg, on_step=on_step)
    record = {"ids": seen, **final, "step": result.step, "timed_out": result.timed_out}
    torch.save(record, Path(dump) / f"rank{rank}.pt")
