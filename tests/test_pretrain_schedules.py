"""Schedules at known steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pretrain.config import OptimConfig
from pretrain.schedules import build_schedules, cosine_schedule, teacher_temperature_schedule


def test_cosine_with_warmup_at_known_steps():
    # 10 epochs of 4 steps, 2 warmup epochs: 8 warmup steps, then 32 cosine steps.
    s = cosine_schedule(1.0, 0.1, epochs=10, steps_per_epoch=4, warmup_epochs=2)
    assert s.shape == (40,)
    np.testing.assert_allclose(s[:8], np.linspace(0.0, 1.0, 8))
    assert s[8] == pytest.approx(1.0)  # first cosine step is the peak
    assert s[8 + 16] == pytest.approx(0.55)  # half-way down: (base + final) / 2
    assert s[8 + 8] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert s[-1] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 31 / 32)))
    assert np.all(np.diff(s[8:]) < 0)


def test_cosine_without_warmup_starts_at_base():
    s = cosine_schedule(0.996, 1.0, epochs=3, steps_per_epoch=5)
    assert s[0] == pytest.approx(0.996)
    assert s[-1] == pytest.approx(1.0, abs=1e-4)
    assert np.all(np.diff(s) > 0)


def test_teacher_temperature_is_constant_within_an_epoch():
    s = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=4, epochs=6, steps_per_epoch=3)
    per_epoch = [0.04, 0.05, 0.06, 0.07, 0.07, 0.07]
    np.testing.assert_allclose(s, np.repeat(per_epoch, 3))


def test_teacher_warmup_longer_than_the_run_is_cut():
    # 30 warmup epochs in a 3-epoch run: the first 3 values of the 30-epoch ramp.
    s = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=30, epochs=3, steps_per_epoch=2)
    ramp = np.linspace(0.04, 0.07, 30)[:3]
    np.testing.assert_allclose(s, np.repeat(ramp, 2))


def test_dino_schedules_scale_lr_with_global_batch():
    cfg = OptimConfig(epochs=20, warmup_epochs=10)
    s = build_schedules(cfg, steps_per_epoch=10, global_batch=1024)
    assert s.total_steps == 200
    assert s.lr[0] == 0.0
    assert s.lr[100] == pytest.approx(0.0005 * 1024 / 256)  # peak right after warmup
    assert s.lr.max() == pytest.approx(0.002)
    assert s.lr[-1] == pytest.approx(1e-6, abs=1e-6)
    assert s.weight_decay[0] == pytest.approx(0.04)
    assert s.weight_decay[100] == pytest.approx(0.22)
    assert s.weight_decay[-1] == pytest.approx(0.4, abs=1e-4)
    assert s.momentum[0] == pytest.approx(0.996) and s.momentum[100] == pytest.approx(0.998)
    np.testing.assert_allclose(s.teacher_temp, 0.04)  # warmup 0.04 -> 0.04 by default
