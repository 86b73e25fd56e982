"""tools/runs/ship_weights.py: a pretraining run becomes an fp16 local model with its card."""

from __future__ import annotations

import json

import torch
from pretrain_support import SHORT_VIDEOS, tiny_config

from dinotrack.models.build import load_backbone
from dinotrack.models.hub import file_sha256
from pretrain.train import train
from tools.runs.ship_weights import ship


def test_ship_writes_fp16_weights_that_load_and_a_card(shared_data, tmp_path):
    videos = [shared_data("videos", name) for name in SHORT_VIDEOS]
    run = train(tiny_config(tmp_path / "run", videos, max_steps=2))
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"global": {"J&F-Mean": 0.6125}, "config": {"short_side": 240}}))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"global": {"J&F-Mean": 0.5}}))

    weights, card, arch = ship(
        run.out_dir, "tiny_shipped", tmp_path / "weights", scores, baseline, "Why: *tiny*."
    )

    stored = torch.load(weights, weights_only=True)
    assert stored["info"]["steps"] == 2 and stored["info"]["shipped_as"] == "tiny_shipped"
    floats = [v for v in stored["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    shipped, spec = load_backbone(None, weights=weights)
    trained, _ = load_backbone(None, weights=run.export)
    assert spec.patch_size == 8 and arch == stored["backbone"]
    expected = trained.state_dict()
    for key, value in shipped.state_dict().items():
        assert value.dtype == torch.float32, key
        assert torch.equal(value, expected[key].half().float()), key
    text = card.read_text()
    assert "| steps | 2 (" in text
    assert "| DAVIS-2016 dev J&F (short side 240 px) | 0.613 |" in text
    assert "| same architecture, random weights (short side 240 px) | 0.500 |" in text
    assert "Why: *tiny*." in text
    assert file_sha256(weights) in text
    assert "| 2 |" in text  # the curve's last logged step
