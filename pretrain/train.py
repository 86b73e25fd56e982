"""The training loop: DINO self-distillation of a dinotrack backbone.

:class:`Trainer` owns the networks, optimiser and schedules and performs one optimiser step
on a list of views; :func:`train` runs a whole job (process group, data, checkpoints, logs,
progress) and is what ``dinotrack pretrain``, ``python -m pretrain`` and ``torchrun -m
pretrain`` call.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dinotrack.config import TrackerConfig, resolve_precision
from dinotrack.errors import InputError
from dinotrack.io.atomic import atomic_output, check_parents, remove_stale_temporaries
from dinotrack.io.images import check_input_path
from dinotrack.models.checkpoints import load_into, read_checkpoint, save_backbone_export
from dinotrack.models.registry import BackboneSpec
from pretrain import distributed
from pretrain.augment import MultiCropAugmentation
from pretrain.checkpoint import (
    CHECKPOINT_NAME,
    EXPORT_NAME,
    check_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pretrain.checkpoint import FORMAT as CHECKPOINT_FORMAT
from pretrain.config import (
    PretrainConfig,
    differences,
    from_dict,
    to_dict,
    validate,
    write_json,
)
from pretrain.data import (
    FrameBatch,
    FrameBatches,
    find_sources,
    make_loader,
    sources_from_json,
    sources_to_json,
)
from pretrain.loss import DINOLoss, PatchLoss, gram_loss, koleo_loss
from pretrain.masking import batch_masks
from pretrain.model import (
    backbone_record,
    backbone_tokens,
    build_networks,
    parameter_groups,
    resolve_backbone,
)
from pretrain.probe import TrackingProbe, default_probe_sequences, load_probe_clips
from pretrain.schedules import build_schedules

logger = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
PROBE_LOG_NAME = "probe.jsonl"
CONFIG_NAME = "config.json"
RUN_RECORD_NAME = ".dinotrack-run"
"""Hidden file that marks a directory as a pretraining run's (written by rank 0)."""
RUN_RECORD = {"format": "dinotrack.pretrain-run", "version": 1}


@dataclass
class StepInfo:
    """What :func:`train` passes to its ``on_step`` callback after every step, on every rank.

    Attributes:
        step: Optimiser steps completed.
        epoch: Epoch of the step just taken.
        metrics: Loss, entropy, KL (averaged over ranks), schedule values, timings.
        ids: int64 ``[B, 3]`` samples of this rank's batch (see :class:`FrameBatch`).
        trainer: The trainer (networks, loss centre, optimiser), for custom hooks; do not
            change it.
    """

    step: int
    epoch: int
    metrics: dict[str, float]
    ids: torch.Tensor
    trainer: Trainer


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        out_dir: The run directory.
        step: Optimiser steps completed.
        resumed_from: Step the run resumed from (0 for a fresh start).
        checkpoint: Path of the last checkpoint.
        export: Path of the exported teacher backbone.
        metrics: Metrics of the last step taken by this call (empty if none).
        timed_out: The run stopped at ``time_limit`` before its last step.
    """

    out_dir: Path
    step: int
    resumed_from: int
    checkpoint: Path
    export: Path
    metrics: dict[str, float] = field(default_factory=dict)
    timed_out: bool = False


class Trainer:
    """Student, teacher, loss, optimiser and schedules of one process.

    Args:
        cfg: The run's configuration.
        info: This process's place in the job (its device).
        spec: Backbone architecture.
        steps_per_epoch: Optimiser steps per epoch (fixes the schedules).
    """

    def __init__(
        self,
        cfg: PretrainConfig,
        info: distributed.DistInfo,
        spec: BackboneSpec,
        steps_per_epoch: int,
    ) -> None:
        self.cfg = cfg
        self.info = info
        self.device = info.device
        self.precision = resolve_precision(cfg.precision, self.device)
        self.steps_per_epoch = steps_per_epoch
        self.patch_size = spec.patch_size
        self.augment = MultiCropAugmentation(cfg.augment).to(self.device)
        recipe = cfg.recipe
        patch_head = None
        if recipe.ibot_weight > 0:
            patch_head = "separate" if recipe.ibot_separate_head else "shared"
        student, teacher = build_networks(spec, cfg.model, cfg.seed, patch_head)
        self.student_net = student.to(self.device)
        self.teacher = teacher.to(self.device).eval()
        if info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.student: torch.nn.Module = DistributedDataParallel(student, device_ids=ids)
        else:
            self.student = student
        self.loss_fn = DINOLoss(
            cfg.model.out_dim,
            self.augment.num_crops,
            cfg.optim.student_temp,
            cfg.optim.center_momentum,
        ).to(self.device)
        self.patch_loss = None
        if recipe.ibot_weight > 0:
            self.patch_loss = PatchLoss(
                cfg.model.out_dim, cfg.optim.student_temp, cfg.optim.center_momentum
            ).to(self.device)
        self.gram_anchor: torch.nn.Module | None = None  # the teacher copy of Gram anchoring
        self.gram_anchor_step = -1
        self.optimizer = torch.optim.AdamW(parameter_groups(student))
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        global_batch = cfg.optim.batch_size * info.world_size
        self.schedules = build_schedules(cfg.optim, steps_per_epoch, global_batch)
        self.step = 0
        self._params = [p for p in student.parameters() if p.requires_grad]
        heads = [student.head]
        if patch_head == "separate":
            heads.append(student.patch_head)
        self._last_layer = [
            p for head in heads for p in head.last_layer.parameters() if p.requires_grad
        ]
        names = dict(teacher.named_parameters())
        pairs = [(names[n], p) for n, p in student.named_parameters()]
        self._ema_teacher = [t for t, _ in pairs]
        self._ema_student = [s for _, s in pairs]

    @property
    def epoch(self) -> int:
        """Epoch of the next step."""
        return self.step // self.steps_per_epoch

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for the forward passes (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def views(self, batch: FrameBatch) -> list[torch.Tensor]:
        """Move a batch to the device and augment it into ``2 + local_crops`` views."""
        batch = batch.to(self.device, non_blocking=True)
        return self.augment(batch.frames, batch.sizes)

    def train_step(self, views: list[torch.Tensor]) -> dict[str, float]:
        """One optimiser step on the views of one batch.

        Returns:
            Loss, teacher entropy, teacher mean entropy and KL (averaged over processes),
            gradient norm and the schedule values used.

        Raises:
            RuntimeError: The loss is not finite; the message gives the step and loss terms.
        """
        it = self.step
        epoch = self.epoch
        s = self.schedules
        lr, wd = float(s.lr[it]), float(s.weight_decay[it])
        momentum, teacher_temp = float(s.momentum[it]), float(s.teacher_temp[it])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if group["regularized"]:
                group["weight_decay"] = wd
        if self.cfg.recipe.any:
            total, out, extra, update_centers = self._recipe_losses(views, teacher_temp)
        else:
            with self.autocast():
                with torch.no_grad():
                    teacher_out = self.teacher(views[:2])
                student_out = self.student(views)
            out = self.loss_fn(student_out, teacher_out, teacher_temp)
            total, extra = out.loss, {}

            def update_centers() -> None:
                self.loss_fn.update_center(teacher_out)

        stats = torch.stack(
            [total.detach(), out.teacher_entropy, out.kl, out.teacher_mean_entropy]
            + [value.detach().float() for value in extra.values()]
        )
        loss, entropy, kl, mean_entropy, *extra_values = distributed.all_reduce_mean(stats).tolist()
        if not all(math.isfinite(v) for v in (loss, entropy, kl, *extra_values)):
            raise RuntimeError(_non_finite_message(it + 1, epoch, loss, entropy, kl, out))
        update_centers()

        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        grad_norm = clip_gradients(self._params, self.cfg.optim.clip_grad)
        if epoch < self.cfg.optim.freeze_last_layer_epochs:
            for p in self._last_layer:
                p.grad = None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        with torch.no_grad():
            torch._foreach_mul_(self._ema_teacher, momentum)
            torch._foreach_add_(self._ema_teacher, self._ema_student, alpha=1.0 - momentum)
        self.step += 1
        return {
            "loss": loss,
            "teacher_entropy": entropy,
            "kl": kl,
            "teacher_mean_entropy": mean_entropy,
            "grad_norm": grad_norm,
            "lr": lr,
            "weight_decay": wd,
            "momentum": momentum,
            "teacher_temp": teacher_temp,
            **dict(zip(extra, extra_values, strict=True)),
        }

    def _recipe_losses(
        self, views: list[torch.Tensor], teacher_temp: float
    ) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor], Callable[[], None]]:
        """The DINO loss plus the recipe's iBOT, KoLeo and Gram terms (see
        :class:`~pretrain.config.RecipeConfig`).

        Returns:
            ``(weighted total, the DINO loss's output, {name: term}, update_centers)``: the
            unweighted terms (and the iBOT teacher's per-patch entropy) for the log, and what
            updates the centres once the loss is taken.
        """
        r = self.cfg.recipe
        batch = views[0].shape[0]
        masks = None
        if self.patch_loss is not None:
            grid = tuple(size // self.patch_size for size in views[0].shape[-2:])
            masks = batch_masks(2 * batch, grid, r.ibot_mask_ratio, r.ibot_mask_p)
            masks = masks.to(self.device)
        anchor = self._gram_anchor_for_step()
        with self.autocast():
            with torch.no_grad():
                if masks is not None or anchor is not None:
                    teacher = self.teacher(views[:2], masks, dense=True, mask_input=False)
                    teacher_out = teacher.scores
                else:
                    teacher, teacher_out = None, self.teacher(views[:2])
                anchor_patches = None
                if anchor is not None:
                    anchor_patches = backbone_tokens(anchor, torch.cat(views[:2]))[1]
            student = self.student(views, masks, dense=True)
        out = self.loss_fn(student.scores, teacher_out, teacher_temp)
        total, extra = out.loss, {"dino_loss": out.loss}
        if masks is not None:
            patch, patch_entropy = self.patch_loss(
                student.patch_scores, teacher.patch_scores, masks, teacher_temp
            )
            total = total + r.ibot_weight * patch
            extra.update(ibot_loss=patch, ibot_teacher_entropy=patch_entropy)
        if r.koleo_weight > 0:
            koleo = sum(koleo_loss(cls) for cls in student.cls[: 2 * batch].chunk(2))
            total = total + r.koleo_weight * koleo
            extra["koleo_loss"] = koleo
        if anchor_patches is not None:
            gram = gram_loss(student.patches, anchor_patches)
            total = total + r.gram_weight * gram
            extra["gram_loss"] = gram

        def update_centers() -> None:
            self.loss_fn.update_center(teacher_out)
            if masks is not None:
                self.patch_loss.update_center(teacher.patch_scores)

        return total, out, extra, update_centers

    def _gram_anchor_for_step(self) -> torch.nn.Module | None:
        """The Gram anchor for the step about to run: None before ``--gram-start``; a copy of
        the teacher's backbone taken at ``--gram-start`` and refreshed every
        ``--gram-update-every`` steps after it."""
        r = self.cfg.recipe
        if r.gram_weight <= 0 or self.step < r.gram_start:
            return None
        since = self.step - r.gram_start
        due = r.gram_update_every > 0 and since % r.gram_update_every == 0
        if self.gram_anchor is None or (due and self.gram_anchor_step != self.step):
            self.gram_anchor = copy.deepcopy(self.teacher.backbone).eval().requires_grad_(False)
            self.gram_anchor_step = self.step
        return self.gram_anchor

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimiser, scaler, centre and step as plain values and tensors."""
        return {
            "student": self.student_net.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "loss": self.loss_fn.state_dict(),
            "step": self.step,
            **self._recipe_state(),
        }

    def _recipe_state(self) -> dict[str, Any]:
        """The iBOT centre and the Gram anchor, for runs that use them."""
        state: dict[str, Any] = {}
        if self.patch_loss is not None:
            state["patch_loss"] = self.patch_loss.state_dict()
        if self.cfg.recipe.gram_weight > 0:
            anchor = self.gram_anchor
            state["gram_anchor"] = anchor.state_dict() if anchor is not None else None
            state["gram_anchor_step"] = self.gram_anchor_step
        return state

    def init_from(self, path: str | os.PathLike[str]) -> None:
        """Start from the weights in ``path`` (see :attr:`PretrainConfig.init_from`): a
        pretraining checkpoint gives student, teacher (heads included) and the loss's centre;
        a backbone file gives both backbones, and the heads keep their new weights.

        Raises:
            FileNotFoundError: No such file.
            ValueError: Unreadable weights, or weights of another architecture.
        """
        weights = read_checkpoint(path)
        if weights.get("format") != CHECKPOINT_FORMAT:  # a backbone file
            load_into(self.student_net.backbone, weights, path)
            self.teacher.backbone.load_state_dict(self.student_net.backbone.state_dict())
            return
        try:
            self._load_networks(check_checkpoint(weights, path))
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise InputError(
                f"--init-from {path}: the checkpoint's networks do not fit this run's "
                f"(architecture, head or recipe differ): {first}"
            ) from None

    def _load_networks(self, state: dict[str, Any]) -> None:
        """Student, teacher and the losses' centres from a checkpoint's ``state``."""
        self.student_net.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.loss_fn.load_state_dict(state["loss"])
        if self.patch_loss is not None:
            self.patch_loss.load_state_dict(state["patch_loss"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._load_networks(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if state.get("gram_anchor") is not None:
            self.gram_anchor = copy.deepcopy(self.teacher.backbone).eval().requires_grad_(False)
            self.gram_anchor.load_state_dict(state["gram_anchor"])
            self.gram_anchor_step = int(state["gram_anchor_step"])


def hardware_name(device: torch.device) -> str:
    """What the run trains on, for the exported backbone's provenance (e.g. the GPU model)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def clip_gradients(params: list[torch.Tensor], clip: float) -> float:
    """Clip each parameter's gradient to norm ``clip`` separately, as DINO does.

    Returns:
        The global gradient norm before clipping (0 when no parameter has a gradient).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch.stack(torch._foreach_norm(grads))
    if clip > 0:
        scale = (clip / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, list(scale.to(grads[0].dtype).unbind()))
    return float(norms.float().square().sum().sqrt())


def _non_finite_message(
    step: int, epoch: int, loss: float, entropy: float, kl: float, out: Any
) -> str:
    pairs = out.pair_losses.cpu()
    terms = ", ".join(
        f"CE(teacher view {i}, student view {v})={pairs[i, v].item():.4g}"
        for i in range(pairs.shape[0])
        for v in range(pairs.shape[1])
        if i != v
    )
    return (
        f"non-finite loss at step {step} (epoch {epoch}): loss={loss:.4g}, "
        f"teacher entropy={entropy:.4g}, KL={kl:.4g}; loss terms on this process: {terms}. "
        "Lower --lr, raise --warmup-epochs or use --precision fp32."
    )


class CollapseWatch:
    """Warn when the teacher's output entropy nears 0 (one prototype wins) or ``log K``
    (uniform outputs), the two collapse modes that centring and sharpening balance.

    Args:
        out_dim: Number of prototypes K.
        margin: Fraction of ``log K`` that counts as near.
    """

    def __init__(self, out_dim: int, margin: float = 0.02) -> None:
        self.log_k = math.log(out_dim)
        self.margin = margin
        self.state = "ok"

    def update(self, entropy: float, kl: float, step: int) -> str | None:
        """A warning the first time the entropy enters a danger zone, else None."""
        low, high = self.margin * self.log_k, (1 - self.margin) * self.log_k
        state = "low" if entropy < low else "high" if entropy > high else "ok"
        changed, self.state = state != self.state, state
        if not changed or state == "ok":
            return None
        kind = "one prototype takes all" if state == "low" else "outputs become uniform"
        return (
            f"step {step}: teacher entropy {entropy:.3f} nats is near "
            f"{'0' if state == 'low' else f'log K = {self.log_k:.3f}'} ({kind}); KL {kl:.4f}. "
            "Collapse is likely; check --teacher-temp and --center-momentum"
        )


def train(cfg: PretrainConfig, on_step: Callable[[StepInfo], None] | None = None) -> TrainResult:
    """Run (or resume) a pretraining job.

    Joins the process group that torchrun describes (or runs as one process), resumes from
    ``cfg.out``'s checkpoint when there is one and ``cfg.resume`` is set, and trains until the
    last epoch or ``cfg.max_steps``. Rank 0 writes ``config.json``, ``sources.json``,
    ``log.jsonl``, ``checkpoint.pth`` and ``backbone.pth`` into ``cfg.out``. Multi-node jobs
    need ``cfg.out`` on a file system all nodes share (every process reads the checkpoint).

    Args:
        cfg: The run's configuration.
        on_step: Called on every process after every step.

    Returns:
        Where the run stands.

    Raises:
        ValueError: Bad configuration, or a checkpoint from a different configuration.
        FileNotFoundError: A ``--data`` path does not exist.
        RuntimeError: The loss became non-finite, or the distributed environment is broken.
    """
    validate(cfg)
    info = distributed.setup(cfg.device)
    ok = False
    try:
        distributed.configure_logging(info)
        result = _run(cfg, info, on_step)
        ok = True
        return result
    finally:
        if ok:
            distributed.teardown(info)
        elif info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _run(
    cfg: PretrainConfig,
    info: distributed.DistInfo,
    on_step: Callable[[StepInfo], None] | None,
) -> TrainResult:
    out = Path(cfg.out)
    check_run_directory(out)
    spec = resolve_backbone(cfg.model.arch, cfg.model.patch_size, cfg.model.depth)
    _check_crop_sizes(cfg, spec)
    ckpt_path = out / CHECKPOINT_NAME
    ckpt = load_checkpoint(ckpt_path) if cfg.resume and ckpt_path.is_file() else None
    if ckpt is not None:
        sources = sources_from_json(ckpt["sources"])
    else:
        sources = _main_then_share(info, lambda: find_sources(cfg.data.paths, cfg.data.decoder))
    dataset = FrameBatches(
        sources,
        cfg.optim.batch_size,
        cfg.data.frames_per_video,
        cfg.data.max_frame_gap,
        cfg.data.max_short_side,
        cfg.seed,
        info.rank,
        info.world_size,
        cfg.data.decoder,
    )
    trainer = Trainer(cfg, info, spec, dataset.steps_per_epoch)
    resolved = {
        "device": str(info.device),
        "precision": trainer.precision,
        "world_size": info.world_size,
        "global_batch": cfg.optim.batch_size * info.world_size,
        "peak_lr": float(trainer.schedules.lr.max()),
        "steps_per_epoch": dataset.steps_per_epoch,
        "total_steps": trainer.schedules.total_steps,
        "samples_per_epoch": dataset.samples_per_epoch,
        "num_sources": len(sources),
        "backbone": backbone_record(spec, cfg.augment.mean, cfg.augment.std),
    }
    config = to_dict(cfg)
    if ckpt is not None:
        _check_resumable(ckpt, config, resolved, ckpt_path)
        trainer.load_state_dict(ckpt)
        set_rng_state(ckpt["rng"][info.rank], info.device)
    else:
        if cfg.init_from is not None:
            trainer.init_from(cfg.init_from)
        seed = int(np.random.SeedSequence([cfg.seed, info.rank]).generate_state(1)[0])
        torch.manual_seed(seed)
    resumed_from = trainer.step
    wall = float(ckpt["train_time_s"]) if ckpt is not None else 0.0
    del ckpt
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / RUN_RECORD_NAME, RUN_RECORD)
        _remove_stale_temporaries(out)
        write_json(out / CONFIG_NAME, {"config": config, "resolved": resolved})
        write_json(out / "sources.json", {"sources": sources_to_json(sources)})
        _truncate_log(out / LOG_NAME, resumed_from)
        _truncate_log(out / PROBE_LOG_NAME, resumed_from)
        if resumed_from:
            logger.info("resuming %s at step %d", ckpt_path, resumed_from)
    total = trainer.schedules.total_steps
    stop = total if cfg.max_steps is None else min(total, cfg.max_steps)
    loader = make_loader(
        dataset, cfg.data.num_workers, pin_memory=info.device.type == "cuda", seed=cfg.seed
    )
    watch = CollapseWatch(cfg.model.out_dim)
    probe = _Probe(cfg, info, trainer, spec, out, resumed_from)
    state = _Saver(cfg, info, trainer, spec, sources, config, resolved, wall)
    last: dict[str, float] = {}
    window: list[dict[str, float]] = []  # the steps since the last log line
    batch_size = resolved["global_batch"]
    started = time.monotonic()
    timed_out = False
    with _progress(info.is_main and cfg.progress, stop, trainer.step) as progress:
        while trainer.step < stop and not timed_out:
            dataset.set_epoch(trainer.epoch, trainer.step % dataset.steps_per_epoch)
            for batch, data_s in _timed(loader):
                start = time.perf_counter()
                epoch = trainer.epoch
                metrics = trainer.train_step(trainer.views(batch))
                step_s = time.perf_counter() - start + data_s
                state.wall += step_s
                step = trainer.step
                metrics.update(images_per_s=batch_size / step_s, data_s=data_s, step_s=step_s)
                last = metrics
                window.append(metrics)
                warning = watch.update(metrics["teacher_entropy"], metrics["kl"], step)
                if warning:
                    progress.warn(warning)
                if step % cfg.log_every == 0 or step == stop:
                    if info.is_main:
                        _log_line(out / LOG_NAME, step, epoch, window, state.wall, batch_size)
                    window = []
                progress.update(step, epoch, metrics)
                if step % cfg.probe_every == 0 or step == stop:
                    probe.run(step)
                if on_step is not None:
                    on_step(StepInfo(step, epoch, metrics, batch.ids, trainer))
                epoch_end = step % dataset.steps_per_epoch == 0
                if cfg.time_limit is not None:
                    late = time.monotonic() - started >= cfg.time_limit
                    timed_out = distributed.any_rank(late, info.device) and step < stop
                if step % cfg.save_every == 0 or epoch_end or step == stop or timed_out:
                    state.save(metrics)
                if step >= stop or timed_out:
                    break
    if state.saved_step != trainer.step:  # nothing ran (already at the end): re-export
        state.save(last)
    if timed_out:
        logger.info("time limit of %.0f s reached at step %d", cfg.time_limit, trainer.step)
    export = out / EXPORT_NAME
    return TrainResult(out, trainer.step, resumed_from, ckpt_path, export, last, timed_out)


def check_run_directory(out: Path) -> None:
    """Checks, before any work, that ``out`` is a new or empty directory or a pretraining
    run's: one that holds this module's run record, or (runs of older versions) a checkpoint
    that reads as a pretraining checkpoint. File names alone prove nothing: a folder of the
    user's own ``config.json`` is refused, not overwritten.

    Raises:
        NotADirectoryError: ``out`` (or a parent) is a file.
        FileExistsError: ``out`` holds files that pretraining did not write.
    """
    if os.path.lexists(out) and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a run directory; name a directory")
    check_parents(out, "--out")
    entries = sorted(entry.name for entry in out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    try:
        if json.loads((out / RUN_RECORD_NAME).read_text()) == RUN_RECORD:
            return
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    ckpt_path = out / CHECKPOINT_NAME
    if ckpt_path.is_file() and not ckpt_path.is_symlink():
        try:
            load_checkpoint(ckpt_path)
            return
        except ValueError:
            pass
    raise FileExistsError(
        f"--out {out} holds files that dinotrack pretrain did not write (e.g. {entries[0]}); "
        "they could be overwritten. Name a new or empty directory"
    )


class _Probe:
    """The tracking probe of ``--probe-davis`` on rank 0 (a no-op without it or elsewhere):
    clips are read at start-up (a bad root fails before training), the teacher's backbone is
    probed before the first step of a fresh run and whenever :meth:`run` is called, and each
    result is appended to ``probe.jsonl`` and logged."""

    def __init__(
        self,
        cfg: PretrainConfig,
        info: distributed.DistInfo,
        trainer: Trainer,
        spec: BackboneSpec,
        out: Path,
        resumed_from: int,
    ) -> None:
        self.trainer, self.spec, self.path = trainer, spec, out / PROBE_LOG_NAME
        self.probe: TrackingProbe | None = None
        if cfg.probe_davis is None or not info.is_main:
            return
        sequences = cfg.probe_sequences or default_probe_sequences(cfg.probe_davis)
        clips = load_probe_clips(cfg.probe_davis, sequences, cfg.probe_frames)
        config = TrackerConfig(short_side=cfg.probe_short_side)
        self.probe = TrackingProbe(clips, config, info.device)
        if resumed_from == 0:
            self.run(0)

    def run(self, step: int) -> None:
        if self.probe is None:
            return
        start = time.perf_counter()
        scores = self.probe(self.trainer.teacher.backbone, self.spec)
        record = {"step": step, **scores, "probe_s": round(time.perf_counter() - start, 3)}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        logger.info("step %d: probe J %.4f (%.0f s)", step, scores["probe_j"], record["probe_s"])


def _remove_stale_temporaries(out: Path) -> None:
    """Delete the half-written checkpoints or exports of a run killed while saving."""
    for name in (CONFIG_NAME, "sources.json", RUN_RECORD_NAME):  # those of dead processes
        remove_stale_temporaries(out / name)
    for name in (CHECKPOINT_NAME, EXPORT_NAME):
        for stale in out.glob(f".{name}.*.tmp"):
            logger.info("removing %s, left by a run stopped while saving", stale)
            stale.unlink(missing_ok=True)


def _check_crop_sizes(cfg: PretrainConfig, spec: BackboneSpec) -> None:
    sizes = (cfg.augment.global_crop_size, cfg.augment.local_crop_size)
    patch = spec.patch_size
    if any(size % patch for size in sizes):
        fits = [max(1, round(size / patch)) * patch for size in sizes]
        raise InputError(
            f"--global-crop-size {sizes[0]} and --local-crop-size {sizes[1]} must be multiples "
            f"of the patch size {patch} of {spec.name}; e.g. --global-crop-size {fits[0]} "
            f"--local-crop-size {fits[1]}"
        )


def _main_then_share(info: distributed.DistInfo, compute: Callable[[], Any]) -> Any:
    """Run ``compute`` on rank 0 and give its result, or its error, to every rank."""
    if not info.distributed:
        return compute()
    box: list[Any] = [None]
    if info.is_main:
        try:
            box[0] = ("ok", compute())
        except (ValueError, FileNotFoundError) as exc:
            box[0] = (type(exc).__name__, str(exc))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "ok":
        return value
    raise (FileNotFoundError if status == "FileNotFoundError" else ValueError)(value)


def _check_resumable(
    ckpt: dict[str, Any], config: dict[str, Any], resolved: dict[str, Any], path: Path
) -> None:
    # Settings added since the checkpoint was written read as their defaults.
    old = to_dict(from_dict(ckpt["config"]))
    changed = differences(_comparable(old), _comparable(config))
    for key in ("world_size", "global_batch", "steps_per_epoch"):
        if ckpt["resolved"].get(key) != resolved[key]:
            changed.append(f"{key}: {ckpt['resolved'].get(key)!r} -> {resolved[key]!r}")
    if changed:
        raise InputError(
            f"{path} was written by a run with other settings ({'; '.join(changed)}); run the "
            f"same command to resume it. To train with the new settings, pass another --out: "
            f"that run starts from scratch (so would --no-resume, and it would overwrite this "
            f"run's checkpoint and log in {path.parent})"
        )


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as resuming compares it: data paths resolved (``./clips`` and its absolute
    path are the same data) and ``out`` left out (the checkpoint was found there, however the
    folder was named)."""
    data = dict(config.get("data", {}))
    if isinstance(data.get("paths"), list):
        data["paths"] = [os.path.realpath(os.path.expanduser(p)) for p in data["paths"]]
    return {**{k: v for k, v in config.items() if k != "out"}, "data": data}


class _Saver:
    """Writes checkpoints and the backbone export (all ranks call, rank 0 writes)."""

    def __init__(
        self,
        cfg: PretrainConfig,
        info: distributed.DistInfo,
        trainer: Trainer,
        spec: BackboneSpec,
        sources: list,
        config: dict[str, Any],
        resolved: dict[str, Any],
        wall: float,
    ) -> None:
        self.cfg, self.info, self.trainer, self.spec = cfg, info, trainer, spec
        self.sources, self.config, self.resolved = sources, config, resolved
        self.wall = wall
        self.saved_step = -1

    def save(self, metrics: dict[str, float]) -> None:
        rngs = distributed.all_gather_objects(rng_state(self.info.device))
        self.saved_step = self.trainer.step
        if not self.info.is_main:
            return
        out = Path(self.cfg.out)
        payload = self.trainer.state_dict()
        payload.update(
            epoch=self.trainer.epoch,
            rng=rngs,
            config=self.config,
            resolved=self.resolved,
            sources=sources_to_json(self.sources),
            train_time_s=self.wall,
        )
        save_checkpoint(out / CHECKPOINT_NAME, payload)
        info = {
            "source": "dinotrack pretrain",
            "steps": self.trainer.step,
            "epochs": self.trainer.step / self.trainer.steps_per_epoch,
            "data": [str(p) for p in self.cfg.data.paths],
            "world_size": self.info.world_size,
            "global_batch": self.resolved["global_batch"],
            "device": str(self.info.device),
            "hardware": hardware_name(self.info.device),
            "train_time_s": round(self.wall, 1),
            "loss": metrics.get("loss"),
        }
        record = self.resolved["backbone"]
        save_backbone_export(out / EXPORT_NAME, self.trainer.teacher.backbone, record, info)


def _timed(loader: Any) -> Iterator[tuple[FrameBatch, float]]:
    """Yield ``(batch, seconds spent waiting for it)``."""
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - start


# Measured per step; a log line gives their means over the steps since the previous line.
_MEASURED = (
    "loss",
    "teacher_entropy",
    "teacher_mean_entropy",
    "kl",
    "grad_norm",
    "data_s",
    "step_s",
)
# Measured by the recipe options that are on (see Trainer._recipe_losses).
_RECIPE_MEASURED = (
    "dino_loss",
    "ibot_loss",
    "ibot_teacher_entropy",
    "koleo_loss",
    "gram_loss",
)


def _log_line(
    path: Path,
    step: int,
    epoch: int,
    window: list[dict[str, float]],
    wall: float,
    global_batch: int,
) -> None:
    """Append one JSON line: the last step's values (schedules), with the measured ones
    (loss, entropy, KL, gradient norm, times) averaged over ``window``."""
    record = {"step": step, "epoch": epoch, **window[-1], "train_time_s": round(wall, 3)}
    for key in _MEASURED + _RECIPE_MEASURED:
        if all(key in m for m in window):
            record[key] = sum(m[key] for m in window) / len(window)
    record["images_per_s"] = global_batch / record["step_s"]
    record["steps_logged"] = len(window)
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines of steps after ``step`` (taken after the last checkpoint, then lost),
    and a last line cut off by a crash while it was written (with a warning naming the file).

    Raises:
        ValueError: The log is not a regular file or not UTF-8 text, or a complete line is not
            a JSON object with an integer ``step``.
    """
    if not os.path.lexists(path):
        return
    check_input_path(path, "training log")  # a FIFO would block the appends forever
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a training log (not UTF-8 text); move it away") from None
    *complete, last = text.split("\n")  # `last` is empty when the file ends with a newline
    if last.strip():
        try:
            _log_step(path, len(complete) + 1, last)
            complete.append(last)
        except ValueError:
            warnings.warn(
                f"{path}: dropped its last line, cut off by a crash while it was written "
                f"({last[:40]!r})",
                stacklevel=2,
            )
    kept = [
        line
        for number, line in enumerate(complete, 1)
        if line.strip() and _log_step(path, number, line) <= step
    ]
    if "".join(line + "\n" for line in kept) != text:
        with atomic_output(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _log_step(path: Path, number: int, line: str) -> int:
    """The step of line ``number`` of a training log (0 for a line without one)."""
    try:
        entry = json.loads(line)
    except ValueError as error:
        raise InputError(
            f"{path} line {number} is not JSON ({error}); fix or remove the line to resume"
        ) from None
    step = entry.get("step", 0) if isinstance(entry, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        raise InputError(
            f"{path} line {number} is not a log entry (a JSON object with an integer "
            f'"step"): {line[:40]!r}; fix or remove the line to resume'
        )
    return step


@dataclass
class _Display:
    """What the training loop tells the user: ``update(step, epoch, metrics)`` after each
    step, ``warn(message)`` for the collapse watch."""

    update: Callable[[int, int, dict[str, float]], None]
    warn: Callable[[str], None]


@contextlib.contextmanager
def _progress(enabled: bool, total: int, done: int) -> Iterator[_Display]:
    """A rich progress display (epoch, step, loss, lr, images/s, ETA) on rank 0; warnings are
    printed above it. Disabled: warnings go to the log only."""
    if not enabled:
        yield _Display(update=lambda *args: None, warn=logger.warning)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("lr {task.fields[lr]}"),
        TextColumn("{task.fields[ips]} img/s"),
        TimeRemainingColumn(),
    )
    console = Console(stderr=True)
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task(
            "pretrain", total=total, completed=done, epoch="-", loss="-", lr="-", ips="-"
        )

        def update(step: int, epoch: int, metrics: dict[str, float]) -> None:
            progress.update(
                task,
                completed=step,
                epoch=epoch,
                loss=f"{metrics['loss']:.4f}",
                lr=f"{metrics['lr']:.2e}",
                ips=f"{metrics['images_per_s']:.1f}",
            )

        def warn(message: str) -> None:
            progress.console.print(f"warning: {message}", style="yellow", markup=False)

        yield _Display(update, warn)
