"""The tracking probe: golden cases on synthetic clips, real DAVIS clips, and its log in a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pretrain_support import SHORT_VIDEOS, tiny_config

from dinotrack import TrackerConfig
from dinotrack.models.build import create_model
from dinotrack.models.registry import get_backbone_spec
from pretrain.probe import (
    ProbeClip,
    TrackingProbe,
    default_probe_sequences,
    jaccard,
    load_probe_clips,
)
from pretrain.train import train

SPEC = get_backbone_spec("test_vit_tiny")


def test_jaccard():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert jaccard(a, b) == 1.0  # both empty: the DAVIS convention
    a[:2] = True
    b[1:3] = True
    assert jaccard(a, b) == pytest.approx(4 / 12)


def test_a_still_clip_scores_one_and_a_wrong_annotation_scores_zero():
    """Identical frames give identical features, so with top-k = 1 (nearest neighbour) the
    start mask is copied up to the one-pixel rim that upsampling the patch-grid labels
    softens; annotations that are the mask's complement then score J ~ 0."""
    gen = np.random.default_rng(0)
    frame = gen.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    mask[16:40, 8:48] = 3  # object id 3, kept as given
    still = ProbeClip("still", np.stack([frame] * 4), np.stack([mask] * 4))
    flipped = ProbeClip("flipped", still.frames, np.stack([mask] + [3 - mask] * 3))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = create_model(SPEC).train()
    config = TrackerConfig(short_side=64, topk=1)
    scores = TrackingProbe([still, flipped], config)(net, SPEC)
    assert scores["probe_j/still"] == pytest.approx(1.0, abs=0.03)
    assert scores["probe_j/flipped"] == pytest.approx(0.0, abs=0.03)
    assert scores["probe_j"] == pytest.approx(
        (scores["probe_j/still"] + scores["probe_j/flipped"]) / 2
    )
    assert net.training  # the caller's mode is restored


def test_real_davis_clips(shared_data):
    root = shared_data("davis2016-dev")
    names = default_probe_sequences(root, count=2)
    assert names == tuple(sorted(names)) and len(names) == 2
    clips = load_probe_clips(root, names, frames=3)
    assert [c.name for c in clips] == list(names)
    assert clips[0].frames.shape == (3, 480, 854, 3) and clips[0].frames.dtype == np.uint8
    assert clips[0].masks.shape == (3, 480, 854) and clips[0].masks[0].any()
    scores = TrackingProbe(clips, TrackerConfig(short_side=96))(create_model(SPEC), SPEC)
    assert set(scores) == {"probe_j", *(f"probe_j/{n}" for n in names)}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    with pytest.raises(FileNotFoundError, match="probe sequence 'nope'"):
        load_probe_clips(root, ("nope",), frames=3)
    with pytest.raises(ValueError, match="fewer than 100000 annotated frames"):
        load_probe_clips(root, names[:1], frames=100000)
    with pytest.raises(ValueError, match="at least 2"):
        load_probe_clips(root, names[:1], frames=1)


def test_a_run_logs_the_probe_before_every_n_steps_and_at_the_end(shared_data, tmp_path):
    videos = [shared_data("videos", name) for name in SHORT_VIDEOS]
    root = shared_data("davis2016-dev")
    cfg = tiny_config(
        tmp_path / "run",
        videos,
        max_steps=3,
        probe_davis=str(root),
        probe_sequences=("dog-agility",),
        probe_every=2,
        probe_frames=2,
        probe_short_side=64,
    )
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "probe.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 2, 3]
    for record in lines:
        assert 0.0 <= record["probe_j"] <= 1.0
        assert record["probe_j"] == record["probe_j/dog-agility"]
    # The probe is operational: the same run resumes with other probe settings.
    result = train(
        tiny_config(tmp_path / "run", videos, max_steps=4, probe_davis=None, probe_every=7)
    )
    assert result.resumed_from == 3 and result.step == 4
