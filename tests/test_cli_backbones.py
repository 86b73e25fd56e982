"""The CLI with today's backbones: `dinotrack models`, presets, `eval davis` on real dev data."""

from __future__ import annotations

import json

import pytest

from dinotrack.cli import main
from dinotrack.models.registry import get_backbone_spec, list_backbones


def test_models_table_reads_in_80_columns(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["models", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name in list_backbones():  # one line per backbone, licence included
        (row,) = [line for line in lines if f" {name} " in line]
        assert get_backbone_spec(name).license.split(" (")[0] in row


def test_models_name_describes_one_backbone(capsys):
    assert main(["models", "dinov3_vitb16"]) == 0
    out = capsys.readouterr().out
    for text in ("vit_base_patch16_dinov3", "timm/vit_base_patch16_dinov3.lvd1689m", "768"):
        assert text in out
    assert "DINOv3 License" in out and "temperature=0.2" in out and "short_side=960" in out
    assert main(["models", "dinov9_vitz16"]) == 2
    assert "unknown model 'dinov9_vitz16'" in capsys.readouterr().err


def test_unknown_preset_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["segment", "x.mp4", "--mask", "m.png", "--out", "o", "--preset", "dinov9"])
    assert exit_.value.code == 2
    assert "invalid choice: 'dinov9'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model, preset, temperature",
    [("test_dinov3_tiny", None, 0.2), ("test_dinov2_reg_tiny", "dino", 0.1)],
)
def test_eval_davis_on_two_dev_sequences(shared_data, tmp_path, model, preset, temperature):
    """Random DINOv3-style and DINOv2-with-registers backbones through `eval davis` on two
    real sequences; the backbone's own preset applies unless --preset says otherwise, and
    single flags override it."""
    root = shared_data("davis2016-dev")
    out = tmp_path / "run"
    args = ["eval", "davis", "--root", root, "--split", "dev", "--sequences", "soccerball,boat"]
    args += ["--out", out, "--model", model, "--device", "cpu", "--short-side", "64"]
    args += ["--preset", preset] if preset else []
    assert main([str(a) for a in args]) == 0
    record = json.loads((out / "scores-dev-subset.json").read_text())
    assert record["backbone"] == model and record["weights"] == "random"
    assert record["config"]["short_side"] == 64  # the flag wins over the preset's
    assert record["config"]["temperature"] == temperature
    assert set(record["timings"]["per_sequence"]) == {"soccerball", "boat"}
    assert record["timings"]["frames_tracked"] == 48 + 75
    assert 0 <= record["global"]["J&F-Mean"] <= 1


@pytest.mark.parametrize("model", ["test_dinov3_tiny", "test_dinov2_reg_tiny"])
def test_attention_and_auto_start_with_register_tokens(shared_data, tmp_path, model):
    """The class token's attention over the patches only (registers dropped) drives
    `dinotrack attention` and `segment --auto`."""
    from dinotrack import Tracker
    from dinotrack.io.masks import read_mask
    from dinotrack.io.video import FrameReader

    frames_dir = shared_data("davis2016-dev", "JPEGImages", "480p", "boat")
    tracker = Tracker.from_pretrained(model, device="cpu", short_side=64)
    with FrameReader(frames_dir, stop=2) as reader:
        frames = [frame for frame in reader]
    maps = tracker.attention(frames)
    h, w = tracker.input_size(*frames[0].shape[:2])
    assert maps.shape == (2, 2, h // tracker.patch_size, w // tracker.patch_size)
    assert (maps.sum((-2, -1)) - 1).abs().max() < 1e-5  # renormalised over the patches

    out = tmp_path / "auto"
    args = ["segment", frames_dir, "--auto", "--model", model, "--device", "cpu"]
    assert main([str(a) for a in [*args, "--short-side", 64, "--max-frames", 3, "--out", out]]) == 0
    start = read_mask(out / "start_mask.png").ids
    assert start.shape == frames[0].shape[:2] and set(start.ravel().tolist()) == {0, 1}
    assert len(list(out.glob("0*.png"))) == 3
