"""Per-step schedules of learning rate, weight decay, teacher momentum and temperature.

All are precomputed as arrays indexed by the optimiser step (0-based: the value used by the
step that is about to run), laid out over ``epochs * steps_per_epoch`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pretrain.config import OptimConfig


def cosine_schedule(
    base: float,
    final: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    warmup_start: float = 0.0,
) -> np.ndarray:
    """Linear warmup from ``warmup_start`` to ``base``, then a cosine from ``base`` to ``final``.

    With ``W`` warmup steps and ``C`` cosine steps, step ``W + j`` has
    ``final + (base - final) * (1 + cos(pi * j / C)) / 2`` (DINO's schedule; the last step is
    just above ``final``).

    Returns:
        float64 ``[epochs * steps_per_epoch]``.
    """
    total = epochs * steps_per_epoch
    warmup = min(warmup_epochs * steps_per_epoch, total)
    ramp = np.linspace(warmup_start, base, warmup) if warmup else np.zeros(0)
    j = np.arange(total - warmup)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * j / max(len(j), 1)))
    return np.concatenate([ramp, cosine])


def teacher_temperature_schedule(
    start: float, final: float, warmup_epochs: int, epochs: int, steps_per_epoch: int
) -> np.ndarray:
    """Teacher temperature, raised linearly per epoch from ``start`` to ``final`` over
    ``warmup_epochs`` epochs (epoch ``e < warmup_epochs`` uses
    ``start + (final - start) * e / (warmup_epochs - 1)``), then constant.

    Returns:
        float64 ``[epochs * steps_per_epoch]``, constant within an epoch.
    """
    per_epoch = np.full(epochs, final, dtype=np.float64)
    if warmup_epochs > 0:
        ramp = np.linspace(start, final, warmup_epochs)
        n = min(warmup_epochs, epochs)
        per_epoch[:n] = ramp[:n]
    return np.repeat(per_epoch, steps_per_epoch)


@dataclass(frozen=True)
class Schedules:
    """Per-step values, each float64 ``[total_steps]``."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    @property
    def total_steps(self) -> int:
        """Length of the run in optimiser steps."""
        return len(self.lr)


def build_schedules(cfg: OptimConfig, steps_per_epoch: int, global_batch: int) -> Schedules:
    """DINO's schedules for a run.

    The peak learning rate is ``cfg.lr * global_batch / 256``.
    """
    peak = cfg.lr * global_batch / 256.0
    args = (cfg.epochs, steps_per_epoch)
    return Schedules(
        lr=cosine_schedule(peak, cfg.min_lr, *args, warmup_epochs=cfg.warmup_epochs),
        weight_decay=cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, *args),
        momentum=cosine_schedule(cfg.momentum_teacher, 1.0, *args),
        teacher_temp=teacher_temperature_schedule(
            cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs, *args
        ),
    )
