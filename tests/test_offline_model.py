"""The backbone shipped in weights/: loads by name with no network, fp16 on disk, small, with
its card and its own preset, and tracks a real clip at that preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinotrack import Tracker
from dinotrack.config import PRESETS
from dinotrack.errors import InputError
from dinotrack.io.masks import read_mask
from dinotrack.models.build import create_model, load_backbone
from dinotrack.models.checkpoints import read_checkpoint
from dinotrack.models.registry import (
    OFFLINE_MODEL,
    RETIRED_MODELS,
    SHIPPED_WEIGHTS,
    get_backbone_spec,
)

SPEC = get_backbone_spec(OFFLINE_MODEL)
WEIGHTS = SHIPPED_WEIGHTS / SPEC.local_file


def test_shipped_file_is_small_fp16_with_a_card():
    assert WEIGHTS.is_file(), f"{WEIGHTS} is missing"
    assert WEIGHTS.stat().st_size <= 12 * 2**20
    export = read_checkpoint(WEIGHTS)
    assert export["info"]["stored_dtype"] == "float16"
    assert all(
        v.dtype == torch.float16 for v in export["state_dict"].values() if v.is_floating_point()
    )
    card = (WEIGHTS.parent / f"{OFFLINE_MODEL}.md").read_text()
    assert "random weights" in card and "J&F" in card
    # The card lists the training videos and the held-out sequences, and they do not meet.
    lines = card.splitlines()
    trained = next(line for line in lines if line.startswith("Training videos"))
    held_out = next(line for line in lines if line.startswith("Held out"))
    dev = ("boat", "dance-jump", "dog-agility", "drift-turn", "flamingo", "horsejump-low")
    dev += ("kite-walk", "motocross-bumps", "paragliding", "soccerball")
    assert all(name in held_out and name not in trained for name in dev)


def test_loads_by_name_offline_and_differs_from_random(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-cache"))  # nothing downloaded before
    net, spec = load_backbone(OFFLINE_MODEL)
    assert spec.name == OFFLINE_MODEL and not spec.random_weights
    frames = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        trained = net.forward_features(frames)
        random = create_model(spec).eval().forward_features(frames)
    assert trained.shape == random.shape == (1, 1 + 4 * 6, 192)
    assert torch.isfinite(trained).all()
    assert not torch.allclose(trained, random)


def test_carries_the_preset_it_was_measured_at():
    preset = PRESETS[SPEC.preset]
    assert SPEC.preset == "offline" and preset["short_side"] == 640
    tracker = Tracker.from_pretrained(OFFLINE_MODEL, device="cpu")
    assert tracker.config.short_side == preset["short_side"]
    assert tracker.config.n_last_frames == preset["n_last_frames"]
    assert tracker.config.radius == preset["radius"] == 8  # 128 px at 640: DINO's 96 at 480
    assert tracker.config.redetect  # lost objects are looked for again (docs/benchmarks.md)
    assert not Tracker.from_pretrained(OFFLINE_MODEL, device="cpu", redetect=False).config.redetect


def test_a_retired_model_name_says_what_replaced_it():
    assert OFFLINE_MODEL not in RETIRED_MODELS
    for old, new in RETIRED_MODELS.items():
        assert not (SHIPPED_WEIGHTS / f"{old}.pth").exists()  # not shipped any more
        with pytest.raises(InputError, match=f"{old}.*replaced by '{new}'"):
            get_backbone_spec(old)
        with pytest.raises(InputError, match="replaced by"):
            Tracker.from_pretrained(old, device="cpu")


def test_tracks_a_real_clip_at_its_preset(shared_data):
    seq = shared_data("davis2016-dev", "JPEGImages", "480p", "dog-agility")
    first = read_mask(
        shared_data("davis2016-dev", "Annotations", "480p", "dog-agility", "00000.png")
    )
    tracker = Tracker.from_pretrained(OFFLINE_MODEL, device="cpu")
    masks = [mask for _, mask in tracker.track(seq, first.ids, stop=4)]
    assert len(masks) == 4 and masks[0].shape == (480, 854)
    assert all(np.isin(np.unique(m), [0, 1]).all() for m in masks)
    assert masks[-1].any()  # the dog is still found three frames on
