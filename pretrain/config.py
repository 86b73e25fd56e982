"""Configuration of a pretraining run, as dataclasses whose defaults are the DINO paper's.

A :class:`PretrainConfig` holds everything that decides what a run computes. The CLI builds one
from its flags; Python users build one directly. The resolved configuration (with the values
derived at start-up: device, precision, world size, absolute learning rate, steps per epoch) is
written into the run directory as ``config.json``, and a restarted run checks that it has not
changed in a way that would alter the result.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from dinotrack.config import IMAGENET_MEAN, IMAGENET_STD, PRECISIONS
from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.atomic import atomic_output

DECODERS = ("auto", "decord", "pyav")


@dataclass
class DataConfig:
    """Where training frames come from and how they are sampled.

    Attributes:
        paths: Video files, image files and folders (searched recursively), mixed freely.
        frames_per_video: Frames drawn at random from each video in every epoch (a fresh draw
            each epoch); each image counts once per epoch.
        max_frame_gap: When above 0, the two global views of a video sample come from two
            different frames at most this many frames apart (temporal views); 0 takes both
            from the same frame, as DINO does on still images.
        max_short_side: Frames whose shorter side is longer than this are downscaled to it in
            the loader before cropping (keeps transfers and padding small; 0 disables).
        num_workers: DataLoader worker processes per training process.
        decoder: ``"decord"``, ``"pyav"`` or ``"auto"`` (decord when installed, else PyAV).
    """

    paths: tuple[str, ...] = ()
    frames_per_video: int = 16
    max_frame_gap: int = 0
    max_short_side: int = 480
    num_workers: int = 4
    decoder: str = "auto"


@dataclass
class AugmentConfig:
    """DINO multi-crop augmentation.

    Crop scales are fractions of the frame's area; probabilities are per view. The blur
    probabilities are for (first global view, second global view, local views).
    """

    global_crop_size: int = 224
    local_crop_size: int = 96
    local_crops: int = 8
    global_crop_scale: tuple[float, float] = (0.4, 1.0)
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    solarize_p: float = 0.2
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class ModelConfig:
    """Backbone and projection head.

    Attributes:
        arch: A dinotrack registry name (``dino_vits8``, ``test_vit_tiny``, ...) or a ViT size
            (``vit_tiny``, ``vit_small``, ``vit_base``, ``vit_large``) combined with
            ``patch_size``.
        patch_size: Patch side for ViT-size names (default 16); must match a registry name's.
        depth: Transformer blocks for ViT-size names (default: the size's 12); a small depth
            trains and tracks faster on a CPU.
        out_dim: Number K of prototypes (outputs of the head's last layer).
        drop_path_rate: Stochastic depth of the student (the teacher has none).
        head_hidden_dim: Width of the head's hidden layers.
        head_bottleneck_dim: Width of the layer before L2 normalisation.
        head_layers: Number of linear layers of the head's MLP.
        norm_last_layer: Keep the norm of the last layer's weight rows fixed at 1.
    """

    arch: str = "vit_small"
    patch_size: int | None = None
    depth: int | None = None
    out_dim: int = 65536
    drop_path_rate: float = 0.1
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    norm_last_layer: bool = True


@dataclass
class OptimConfig:
    """Optimisation, loss and EMA settings (DINO's defaults).

    Attributes:
        epochs: Length of the run; every schedule is laid out over it.
        batch_size: Images per process per step; the global batch is this times the world
            size.
        lr: Peak learning rate per 256 images of global batch (scaled linearly).
        min_lr: Learning rate at the end of the cosine decay.
        warmup_epochs: Linear learning-rate warmup from 0.
        weight_decay: Weight decay at the start (cosine schedule).
        weight_decay_end: Weight decay at the end.
        clip_grad: Per-parameter gradient-norm clipping threshold (0 disables).
        freeze_last_layer_epochs: Epochs during which the head's last layer is not updated.
        momentum_teacher: EMA momentum at the start, raised to 1 on a cosine schedule.
        teacher_temp: Final teacher temperature.
        warmup_teacher_temp: Teacher temperature at epoch 0.
        warmup_teacher_temp_epochs: Epochs of linear teacher-temperature warmup.
        student_temp: Student temperature.
        center_momentum: EMA momentum of the teacher-output centre.
    """

    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.0005
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    freeze_last_layer_epochs: int = 1
    momentum_teacher: float = 0.996
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 30
    student_temp: float = 0.1
    center_momentum: float = 0.9


@dataclass
class RecipeConfig:
    """The dense-feature losses that DINO's successors added, each off by default (weight 0),
    so that the default recipe is DINO's exactly.

    Attributes:
        ibot_weight: Weight of iBOT's masked-patch loss (DINOv2: 1.0); 0 turns it off.
        ibot_mask_ratio: Range of the share of patches masked in a masked view; the masked
            views' ratios are spread evenly over it, as in DINOv2.
        ibot_mask_p: Share of the global views that get a mask (DINOv2: 0.5).
        ibot_separate_head: Score patches with a head of their own (same shape as the DINO
            head) instead of the DINO head.
        koleo_weight: Weight of the KoLeo regulariser on the student's class tokens of each
            global view (DINOv2: 0.1); 0 turns it off.
        gram_weight: Weight of DINOv3's Gram anchoring (DINOv3: 2.0); 0 turns it off.
        gram_start: Step at which the teacher is copied into the Gram anchor and the loss
            starts.
        gram_update_every: Refresh the anchor with the teacher every this many steps after
            ``gram_start``; 0 keeps the first copy.
    """

    ibot_weight: float = 0.0
    ibot_mask_ratio: tuple[float, float] = (0.1, 0.5)
    ibot_mask_p: float = 0.5
    ibot_separate_head: bool = False
    koleo_weight: float = 0.0
    gram_weight: float = 0.0
    gram_start: int = 0
    gram_update_every: int = 0

    @property
    def dense(self) -> bool:
        """Whether a step needs the patch tokens (iBOT or Gram anchoring is on)."""
        return self.ibot_weight > 0 or self.gram_weight > 0

    @property
    def any(self) -> bool:
        """Whether any option is on."""
        return self.dense or self.koleo_weight > 0


@dataclass
class PretrainConfig:
    """A whole pretraining run.

    Attributes:
        out: Run directory (checkpoint, exported backbone, config, log).
        data: Data sources and sampling.
        augment: Multi-crop augmentation.
        model: Backbone and head.
        optim: Optimisation.
        recipe: The optional iBOT, KoLeo and Gram-anchoring losses.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; under
            torchrun ``"cuda"`` means the process's local GPU.
        precision: ``"auto"`` (as :func:`dinotrack.config.resolve_precision`: bf16 autocast
            on CUDA, fp16 on a GPU without bf16, fp32 on the CPU), ``"fp32"``, ``"bf16"`` or
            ``"fp16"`` (autocast with a gradient scaler).
        seed: Seeds model initialisation, data sampling and augmentation.
        max_steps: Stop after this many optimiser steps in all (for smoke runs); the
            schedules still span ``epochs``.
        time_limit: Seconds of wall time this process may train: when a step ends past it,
            the run saves a checkpoint and stops (all ranks at the same step), so that a job
            with a time limit (a SLURM allocation, a 10-minute command) resumes where it
            stopped when the same command runs again. ``None``: no limit.
        save_every: Write a checkpoint every this many steps (and at each epoch end).
        log_every: Write a log line every this many steps (measured values averaged over
            them).
        resume: Resume from the run directory's checkpoint when there is one.
        init_from: Start a new run from these weights instead of random ones: a pretraining
            checkpoint (student and teacher, heads and centre included; the same
            architecture) or a backbone file (such as a shipped model or an exported
            ``backbone.pth``: both backbones, new heads). The optimiser, schedules and step
            count start afresh, so crops, data and schedule may differ from the run that wrote
            the weights. Ignored when the run resumes from its own checkpoint.
        progress: Show a progress display on rank 0.
        probe_davis: A DAVIS root (``JPEGImages/480p``, ``Annotations/480p``): rank 0 then
            tracks the first ``probe_frames`` frames of ``probe_sequences`` with the teacher's
            backbone every ``probe_every`` steps (and before the first step and after the
            last) and appends their mean J to ``probe.jsonl`` (see :mod:`pretrain.probe`).
            ``None``: no probe.
        probe_sequences: Sequences to track; empty: the first three of the root, by name.
        probe_every: Steps between probes.
        probe_frames: Frames tracked per sequence (the first holds the start mask).
        probe_short_side: The probe's network input short side in pixels.
    """

    out: str = "runs/pretrain"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    max_steps: int | None = None
    time_limit: float | None = None
    save_every: int = 500
    log_every: int = 1
    resume: bool = True
    init_from: str | None = None
    progress: bool = True
    probe_davis: str | None = None
    probe_sequences: tuple[str, ...] = ()
    probe_every: int = 100
    probe_frames: int = 12
    probe_short_side: int = 240


# Fields that may change between a run and its resumption without changing what is computed.
OPERATIONAL_FIELDS = frozenset(
    {
        "max_steps",
        "time_limit",
        "save_every",
        "log_every",
        "resume",
        "init_from",
        "progress",
        "device",
        "data.num_workers",
        "probe_davis",
        "probe_sequences",
        "probe_every",
        "probe_frames",
        "probe_short_side",
    }
)


def validate(cfg: PretrainConfig) -> None:
    """Check a configuration for values that cannot work.

    Raises:
        ValueError: Naming the offending setting and an acceptable range.
    """
    d, a, m, o, r = cfg.data, cfg.augment, cfg.model, cfg.optim, cfg.recipe
    if not d.paths:
        raise InputError("no training data: pass at least one --data PATH (video, image or folder)")
    if cfg.init_from is not None and not os.path.isfile(cfg.init_from):
        raise MissingFileError(f"--init-from: no such file: {cfg.init_from}")
    checks = [
        (d.frames_per_video >= 1, "--frames-per-video must be at least 1"),
        (d.max_frame_gap >= 0, "--max-frame-gap must be 0 (off) or positive"),
        (d.max_short_side >= 0, "--max-short-side must be 0 (off) or positive"),
        (d.num_workers >= 0, "--num-workers must be 0 or more"),
        (d.decoder in DECODERS, f"--decoder must be one of {', '.join(DECODERS)}"),
        (a.local_crops >= 0, "--local-crops must be 0 or more"),
        (a.global_crop_size > 0 and a.local_crop_size > 0, "crop sizes must be positive"),
        (_is_scale(a.global_crop_scale), "--global-crop-scale needs 0 < MIN <= MAX <= 1"),
        (_is_scale(a.local_crop_scale), "--local-crop-scale needs 0 < MIN <= MAX <= 1"),
        (
            all(0.0 <= p <= 1.0 for p in (a.color_jitter_p, a.grayscale_p, a.solarize_p)),
            "--color-jitter-p, --grayscale-p and --solarize-p must be in [0, 1]",
        ),
        (
            len(a.blur_p) == 3 and all(0.0 <= p <= 1.0 for p in a.blur_p),
            "--blur-p needs three probabilities in [0, 1]",
        ),
        (m.out_dim >= 2, "--out-dim must be at least 2"),
        (m.head_layers >= 1, "the head needs at least one layer"),
        (0.0 <= m.drop_path_rate < 1.0, "--drop-path-rate must be in [0, 1)"),
        (o.epochs >= 1, "--epochs must be at least 1"),
        (o.batch_size >= 1, "--batch-size must be at least 1"),
        (o.lr > 0, "--lr must be positive"),
        (
            0 <= o.warmup_epochs < o.epochs or o.warmup_epochs == 0,
            f"--warmup-epochs {o.warmup_epochs} must be smaller than --epochs {o.epochs}; "
            "lower --warmup-epochs for short runs",
        ),
        (o.teacher_temp > 0 and o.warmup_teacher_temp > 0, "teacher temperatures must be > 0"),
        (o.student_temp > 0, "--student-temp must be positive"),
        (o.warmup_teacher_temp_epochs >= 0, "--warmup-teacher-temp-epochs must be >= 0"),
        (0.0 <= o.momentum_teacher <= 1.0, "--momentum-teacher must be in [0, 1]"),
        (0.0 <= o.center_momentum < 1.0, "--center-momentum must be in [0, 1)"),
        (o.clip_grad >= 0, "--clip-grad must be 0 (off) or positive"),
        (r.ibot_weight >= 0, "--ibot-weight must be 0 (off) or positive"),
        (
            len(r.ibot_mask_ratio) == 2 and 0.0 <= r.ibot_mask_ratio[0] <= r.ibot_mask_ratio[1] < 1,
            "--ibot-mask-ratio needs 0 <= MIN <= MAX < 1",
        ),
        (
            r.ibot_weight == 0 or r.ibot_mask_ratio[1] > 0,
            "--ibot-weight needs a positive --ibot-mask-ratio MAX (nothing would be masked)",
        ),
        (0.0 < r.ibot_mask_p <= 1.0, "--ibot-mask-p must be in (0, 1]"),
        (r.koleo_weight >= 0, "--koleo-weight must be 0 (off) or positive"),
        (
            r.koleo_weight == 0 or o.batch_size >= 2,
            "--koleo-weight needs --batch-size 2 or more (each image's nearest neighbour)",
        ),
        (r.gram_weight >= 0, "--gram-weight must be 0 (off) or positive"),
        (r.gram_start >= 0, "--gram-start must be 0 or more"),
        (r.gram_update_every >= 0, "--gram-update-every must be 0 (never) or positive"),
        (cfg.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
        (cfg.max_steps is None or cfg.max_steps >= 0, "--max-steps must be 0 or more"),
        (cfg.time_limit is None or cfg.time_limit >= 0, "--time-limit must be 0 or more"),
        (cfg.save_every >= 1, "--save-every must be at least 1"),
        (cfg.log_every >= 1, "--log-every must be at least 1"),
        (cfg.probe_every >= 1, "--probe-every must be at least 1"),
        (cfg.probe_frames >= 2, "--probe-frames must be at least 2"),
        (cfg.probe_short_side >= 16, "--probe-short-side must be at least 16 pixels"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def _is_scale(scale: tuple[float, float]) -> bool:
    return len(scale) == 2 and 0.0 < scale[0] <= scale[1] <= 1.0


def to_dict(cfg: PretrainConfig) -> dict[str, Any]:
    """The configuration as plain JSON-able values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(values: dict[str, Any]) -> PretrainConfig:
    """Rebuild a configuration from :func:`to_dict`'s output.

    Raises:
        ValueError: On a key that is not a configuration field.
    """
    sections = {
        "data": DataConfig,
        "augment": AugmentConfig,
        "model": ModelConfig,
        "optim": OptimConfig,
        "recipe": RecipeConfig,
    }
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in sections:
            kwargs[key] = _build(sections[key], value)
        else:
            kwargs[key] = value
    return _build(PretrainConfig, kwargs)


def _build(cls: type, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")
    converted = {}
    for key, value in values.items():
        if isinstance(value, list):
            value = tuple(value)
        converted[key] = value
    return cls(**converted)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"paths": ...}}`` -> ``{"data.paths": ...}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Settings that differ between two :func:`to_dict` outputs, ignoring operational ones.

    Returns:
        Lines ``"name: old -> new"``, sorted.
    """
    a, b = flatten(old), flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in OPERATIONAL_FIELDS:
            continue
        if a.get(key) != b.get(key):
            lines.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return lines


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
