"""Command line: ``dinotrack pretrain``, ``python -m pretrain`` and ``torchrun -m pretrain``.

All three take the same flags and build the same :class:`~pretrain.config.PretrainConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

from dinotrack.cli.common import ArgumentParser, run_command
from pretrain.config import (
    DECODERS,
    PRECISIONS,
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    RecipeConfig,
)

DESCRIPTION = (
    "Pretrain a ViT backbone with DINO self-distillation on unlabelled videos and images, "
    "then track with it: dinotrack segment VIDEO --mask M.png --weights OUT/backbone.pth. "
    "Run several processes with torchrun --nproc-per-node N -m pretrain ...; restarting the "
    "same command resumes from OUT/checkpoint.pth."
)

ON_INTERRUPT = "run the same command again to resume from the last checkpoint"
"""What Ctrl-C leaves: the checkpoints written so far (see ``--save-every``)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the pretraining flags to ``parser`` (defaults are the DINO paper's)."""
    d, a, m, o, r = DataConfig(), AugmentConfig(), ModelConfig(), OptimConfig(), PretrainConfig()
    dense = RecipeConfig()
    g = parser.add_argument_group("data")
    g.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="PATH",
        help="video file, image file or folder (recursive); repeat for several",
    )
    g.add_argument(
        "--frames-per-video",
        type=int,
        default=d.frames_per_video,
        help="random frames drawn from each video per epoch (default %(default)s)",
    )
    g.add_argument(
        "--max-frame-gap",
        type=int,
        default=d.max_frame_gap,
        help="take the two global views from different frames at most this far "
        "apart (temporal views); 0 = same frame (default %(default)s)",
    )
    g.add_argument(
        "--max-short-side",
        type=int,
        default=d.max_short_side,
        help="downscale frames whose shorter side is longer (default %(default)s)",
    )
    g.add_argument(
        "--num-workers",
        type=int,
        default=d.num_workers,
        help="DataLoader workers per process (default %(default)s)",
    )
    g.add_argument(
        "--decoder",
        choices=DECODERS,
        default=d.decoder,
        help="video decoder (default %(default)s: decord, else PyAV)",
    )

    g = parser.add_argument_group("augmentation")
    g.add_argument("--global-crop-size", type=int, default=a.global_crop_size)
    g.add_argument("--local-crop-size", type=int, default=a.local_crop_size)
    g.add_argument(
        "--local-crops",
        type=int,
        default=a.local_crops,
        help="local views per image (default %(default)s; 10 in DINO's best runs)",
    )
    g.add_argument(
        "--global-crop-scale",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=a.global_crop_scale,
    )
    g.add_argument(
        "--local-crop-scale",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=a.local_crop_scale,
    )
    # Photometric augmentation: probabilities per view (DINO's by default).
    for name in ("color_jitter_p", "grayscale_p", "solarize_p"):
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(a, name))
    g.add_argument(
        "--blur-p",
        type=float,
        nargs=3,
        metavar=("G1", "G2", "LOCAL"),
        default=a.blur_p,
        help="Gaussian-blur probability of the first and second global and the local views "
        "(default %(default)s; solarisation is on the second global view only)",
    )

    g = parser.add_argument_group("model")
    g.add_argument(
        "--arch",
        default=m.arch,
        help="vit_tiny/vit_small/vit_base/vit_large with --patch-size, or a "
        "dinotrack backbone name such as dino_vits8 or test_vit_tiny "
        "(default %(default)s)",
    )
    g.add_argument(
        "--patch-size",
        type=int,
        default=m.patch_size,
        help="patch size for vit_* names (default 16)",
    )
    g.add_argument(
        "--depth",
        type=int,
        default=m.depth,
        help="transformer blocks for vit_* names (default: the size's, 12)",
    )
    g.add_argument(
        "--out-dim",
        type=int,
        default=m.out_dim,
        help="prototypes K of the DINO head (default %(default)s)",
    )
    g.add_argument("--drop-path-rate", type=float, default=m.drop_path_rate)
    g.add_argument("--head-hidden-dim", type=int, default=m.head_hidden_dim)
    g.add_argument("--head-bottleneck-dim", type=int, default=m.head_bottleneck_dim)
    g.add_argument(
        "--norm-last-layer",
        action=argparse.BooleanOptionalAction,
        default=m.norm_last_layer,
        help="fix the norm of the head's last layer (default %(default)s)",
    )

    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=o.epochs)
    g.add_argument(
        "--batch-size",
        type=int,
        default=o.batch_size,
        help="images per process per step (default %(default)s)",
    )
    g.add_argument(
        "--lr",
        type=float,
        default=o.lr,
        help="peak learning rate per 256 images of global batch (default %(default)s)",
    )
    g.add_argument("--min-lr", type=float, default=o.min_lr)
    g.add_argument("--warmup-epochs", type=int, default=o.warmup_epochs)
    g.add_argument("--weight-decay", type=float, default=o.weight_decay)
    g.add_argument("--weight-decay-end", type=float, default=o.weight_decay_end)
    g.add_argument(
        "--clip-grad",
        type=float,
        default=o.clip_grad,
        help="per-parameter gradient norm limit, 0 = off (default %(default)s)",
    )
    g.add_argument("--freeze-last-layer-epochs", type=int, default=o.freeze_last_layer_epochs)
    g.add_argument("--momentum-teacher", type=float, default=o.momentum_teacher)
    g.add_argument(
        "--teacher-temp",
        type=float,
        default=o.teacher_temp,
        help="final teacher temperature (default %(default)s; 0.07 for long runs)",
    )
    g.add_argument("--warmup-teacher-temp", type=float, default=o.warmup_teacher_temp)
    g.add_argument("--warmup-teacher-temp-epochs", type=int, default=o.warmup_teacher_temp_epochs)

    g = parser.add_argument_group(
        "dense-feature recipes (DINOv2, DINOv3; all off by default: DINO's recipe)"
    )
    g.add_argument(
        "--ibot-weight",
        type=float,
        default=dense.ibot_weight,
        help="weight of iBOT's masked-patch loss, 0 = off (default %(default)s; DINOv2: 1.0)",
    )
    g.add_argument(
        "--ibot-mask-ratio",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=dense.ibot_mask_ratio,
        help="share of the patches masked in a masked view (default %(default)s)",
    )
    g.add_argument(
        "--ibot-mask-p",
        type=float,
        default=dense.ibot_mask_p,
        help="share of the global views that get a mask (default %(default)s)",
    )
    g.add_argument(
        "--ibot-separate-head",
        action=argparse.BooleanOptionalAction,
        default=dense.ibot_separate_head,
        help="score patches with a head of their own, not the DINO head (default %(default)s)",
    )
    g.add_argument(
        "--koleo-weight",
        type=float,
        default=dense.koleo_weight,
        help="weight of the KoLeo regulariser on the class tokens, 0 = off "
        "(default %(default)s; DINOv2: 0.1)",
    )
    g.add_argument(
        "--gram-weight",
        type=float,
        default=dense.gram_weight,
        help="weight of DINOv3's Gram anchoring, 0 = off (default %(default)s; DINOv3: 2.0)",
    )
    g.add_argument(
        "--gram-start",
        type=int,
        default=dense.gram_start,
        metavar="STEP",
        help="step at which the teacher is copied into the Gram anchor and the loss starts "
        "(default %(default)s)",
    )
    g.add_argument(
        "--gram-update-every",
        type=int,
        default=dense.gram_update_every,
        metavar="STEPS",
        help="refresh the Gram anchor with the teacher every STEPS steps, 0 = never "
        "(default %(default)s)",
    )

    g = parser.add_argument_group("run")
    g.add_argument("--out", default=r.out, help="run directory (default %(default)s)")
    g.add_argument(
        "--device", default=r.device, help="auto, cpu, cuda or cuda:N (default %(default)s)"
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=r.precision,
        help="auto = bf16 autocast on CUDA (fp16 on GPUs without bf16), fp32 on CPU "
        "(default %(default)s)",
    )
    g.add_argument("--seed", type=int, default=r.seed)
    g.add_argument(
        "--max-steps",
        type=int,
        default=r.max_steps,
        help="stop after this many optimiser steps in all (smoke runs)",
    )
    g.add_argument(
        "--time-limit",
        type=float,
        default=r.time_limit,
        metavar="SECONDS",
        help="save and stop once this process has trained this long; the same command "
        "resumes (for jobs with a wall-time limit)",
    )
    g.add_argument(
        "--save-every",
        type=int,
        default=r.save_every,
        help="checkpoint every N steps, and at each epoch end (default %(default)s)",
    )
    g.add_argument(
        "--log-every",
        type=int,
        default=r.log_every,
        help="a log.jsonl line every N steps, measured values averaged over them "
        "(default %(default)s)",
    )
    g.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=r.resume,
        help="resume from OUT/checkpoint.pth when it exists (default %(default)s)",
    )
    g.add_argument(
        "--init-from",
        default=r.init_from,
        metavar="WEIGHTS",
        help="start a new run from these weights: a pretraining checkpoint.pth (student, "
        "teacher and heads) or a backbone file such as a shipped model's .pth (backbones "
        "only); optimiser and schedules start afresh, so crops and data may change",
    )
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=r.progress,
        help="progress display on rank 0 (default %(default)s)",
    )

    g = parser.add_argument_group("quality probe (watch learning while it runs)")
    g.add_argument(
        "--probe-davis",
        default=r.probe_davis,
        metavar="ROOT",
        help="DAVIS root: track the first frames of a few of its sequences with the teacher "
        "every --probe-every steps and log their mean J to OUT/probe.jsonl (default: off)",
    )
    g.add_argument(
        "--probe-sequences",
        type=lambda text: tuple(s for s in text.split(",") if s),
        default=r.probe_sequences,
        metavar="A,B,C",
        help="comma-separated sequences to probe (default: the first three of ROOT)",
    )
    g.add_argument(
        "--probe-every",
        type=int,
        default=r.probe_every,
        help="steps between probes (default %(default)s)",
    )
    g.add_argument(
        "--probe-frames",
        type=int,
        default=r.probe_frames,
        help="frames tracked per probe sequence (default %(default)s)",
    )
    g.add_argument(
        "--probe-short-side",
        type=int,
        default=r.probe_short_side,
        help="network input short side of the probe in pixels (default %(default)s)",
    )


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """Build the run's configuration from parsed flags (each flag sets the field of its name;
    settings without a flag keep their defaults)."""
    data = _section(DataConfig, args, paths=tuple(args.data))
    sections = {"data": data}
    for name, cls in (
        ("augment", AugmentConfig),
        ("model", ModelConfig),
        ("optim", OptimConfig),
        ("recipe", RecipeConfig),
    ):
        sections[name] = _section(cls, args)
    return _section(PretrainConfig, args, **sections)


def _section(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    values = dict(given)
    for f in dataclasses.fields(cls):
        if f.name not in values and hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def run(args: argparse.Namespace) -> int:
    """Run pretraining for parsed flags; returns the exit status."""
    from pretrain.train import train

    configure_logging()
    result = train(config_from_args(args))
    log = logging.getLogger("pretrain")
    log.info("step %d; backbone written to %s", result.step, result.export)
    if result.timed_out:
        log.info("stopped at the time limit: run the same command again to continue")
    return 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is logged, not the one it was made
    with, so every CLI call in one process (tests, notebooks) logs where its caller reads."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging() -> None:
    """Send the ``pretrain`` loggers' INFO and above to stderr, once per process."""
    root = logging.getLogger("pretrain")
    if root.handlers:
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def register(subparsers: Any) -> None:
    """Add ``pretrain`` to the ``dinotrack`` command's sub-commands."""
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a ViT backbone with DINO on unlabelled videos",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(func=run, on_interrupt=ON_INTERRUPT)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pretrain``; returns the exit status.

    As every dinotrack command (:func:`dinotrack.cli.common.run_command`): bad input (and a
    non-finite loss) gives one error line on stderr and status 2, Ctrl-C status 130.
    """
    parser = ArgumentParser(prog="python -m pretrain", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=run, on_interrupt=ON_INTERRUPT)
    return run_command(parser, parser.parse_args(argv), prog="pretrain")
