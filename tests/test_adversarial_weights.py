"""Adversarial suite for weights files (issue 20): small files that ask for huge memory, damaged
position embeddings, pickled code, and weights that fit another model than the default.

Every file is built on the fly from a tiny test backbone.
"""

from __future__ import annotations

import os
import pickle
import resource
import warnings
import zipfile
from pathlib import Path

import adversarial_inputs as bad
import pytest
import torch
from test_adversarial import _tiny_record, cli, one_line_error

from dinotrack.models.build import check_export_record, load_backbone
from dinotrack.models.checkpoints import read_checkpoint, save_backbone_export


@pytest.fixture
def clip(tmp_path):
    """A small frames directory and its first-frame mask."""
    return bad.frames_dir(tmp_path / "frames"), bad.mask(tmp_path / "mask.png")


# The parameter estimate of an export record counts the position embedding.

HUGE_GRIDS = {
    "4096 px at patch 2, width 1024": (4096, 2, {"embed_dim": 1024, "num_heads": 16}),
    "4096 px at patch 1, width 256": (4096, 1, {"embed_dim": 256, "num_heads": 4}),
    "4096 px at patch 4, width 4096": (4096, 4, {"embed_dim": 4096, "num_heads": 32}),
    "2048 px at patch 1, width 1024": (2048, 1, {"embed_dim": 1024, "num_heads": 16}),
}


@pytest.mark.parametrize("case", list(HUGE_GRIDS))
def test_a_huge_position_embedding_is_refused_before_building(case, tmp_path, monkeypatch):
    import timm

    from dinotrack import Tracker

    built = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: built.append(a) or 1 / 0)
    size, patch, dims = HUGE_GRIDS[case]
    record = _tiny_record(patch_size=patch, model_kwargs={"img_size": size, "depth": 1, **dims})
    path = bad.export(tmp_path / "w.pth", record)
    assert path.stat().st_size < 4096  # a small file...
    with pytest.raises(ValueError, match="billion parameters"):  # ...that asks for gigabytes
        Tracker.from_pretrained(weights=path, device="cpu")
    assert built == []


def test_a_large_image_size_with_a_coarse_grid_is_still_accepted():
    record = _tiny_record(patch_size=16, model_kwargs={"img_size": 4096, "embed_dim": 64})
    assert check_export_record(record) is record  # 65536 tokens of width 64: 4 M parameters


# What a weights file may unpack to is checked from the zip directory, before torch.load.


def deflate_bomb(path: Path, unpacked: int, entry: str = "data/0") -> Path:
    """A torch zip file whose ``entry`` (``data/0``: the tensor's bytes, ``data.pkl``: the
    pickle, or a new entry) unpacks to ``unpacked`` zero bytes, deflated to a few MiB."""
    plain = path.with_suffix(".plain")
    torch.save({"w": torch.zeros(4, dtype=torch.uint8)}, plain)
    chunk = bytes(16 << 20)
    with (
        zipfile.ZipFile(plain) as src,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst,
    ):
        names = src.namelist()
        target = next((n for n in names if n.endswith("/" + entry)), None)
        for name in names:
            if name != target:
                dst.writestr(name, src.read(name))
        with dst.open(
            target or f"{names[0].split('/')[0]}/{entry}", "w", force_zip64=True
        ) as handle:
            for _ in range(unpacked // len(chunk)):
                handle.write(chunk)
    plain.unlink()
    return path


BOMBS = {
    "2 GiB tensor": (2 << 30, "data/0"),
    "256 MiB tensor": (256 << 20, "data/0"),
    "256 MiB pickle": (256 << 20, "data.pkl"),
    "256 MiB entry torch never reads": (256 << 20, "extra"),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_a_compressed_bomb_is_refused_before_reading(case, tmp_path):
    unpacked, entry = BOMBS[case]
    path = deflate_bomb(tmp_path / "bomb.pth", unpacked, entry)
    assert path.stat().st_size < unpacked / 100
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(ValueError, match=r"bomb\.pth.*refused.*unpack"):
        read_checkpoint(path)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 128 << 10, f"peak memory grew by {grown >> 10} MiB"


def test_a_compressed_bomb_through_the_cli_gives_one_line(clip, tmp_path, capsys):
    frames, mask = clip
    weights = deflate_bomb(tmp_path / "bomb.pth", 256 << 20)
    args = ["segment", frames, "--mask", mask, "--out", tmp_path / "o", "--weights", weights]
    code, err = cli([*args, "--model", "test_vit_tiny", "--device", "cpu"], capsys)
    one_line_error(code, err, "bomb.pth", "unpack")


def test_weights_as_torch_saves_them_still_load(tmp_path):
    net, _ = load_backbone("test_vit_tiny")
    save_backbone_export(tmp_path / "w.pth", net, _tiny_record())
    state = read_checkpoint(tmp_path / "w.pth")["state_dict"]
    assert torch.equal(state["pos_embed"], net.state_dict()["pos_embed"])


# A position embedding of another shape: one line naming it, not a traceback.

POS_EMBEDS = {
    "1-D": lambda pos: pos.flatten(),
    "2-D": lambda pos: pos[0],
    "4-D": lambda pos: pos[None],
    "batch of 2": lambda pos: torch.cat([pos, pos]),
    "other width": lambda pos: pos[..., :32],
    "tokens not a square grid": lambda pos: pos[:, :-3],
    "class token only": lambda pos: pos[:, :1],
    "empty": lambda pos: pos[:, :0],
}


@pytest.mark.parametrize("case", list(POS_EMBEDS))
@pytest.mark.parametrize("model", ["test_vit_tiny", "test_dinov2_reg_tiny"])
def test_a_misshaped_pos_embed_gives_one_line(case, model, clip, tmp_path, capsys):
    net, _ = load_backbone(model)
    state = dict(net.state_dict())
    if model == "test_dinov2_reg_tiny":  # the official DINOv2 layout: registers, class position
        state["register_tokens"] = state.pop("reg_token")
        state["pos_embed"] = torch.cat(
            [torch.zeros_like(state["pos_embed"][:, :1]), state["pos_embed"]], 1
        )
    state["pos_embed"] = POS_EMBEDS[case](state["pos_embed"])
    path = tmp_path / "w.pth"
    torch.save(state, path)
    frames, mask = clip
    args = ["segment", frames, "--mask", mask, "--out", tmp_path / "o", "--weights", path]
    code, err = cli([*args, "--model", model, "--device", "cpu", "--short-side", 48], capsys)
    one_line_error(code, err, "pos_embed")


# Pickled code is refused as such, never run, and never called a damaged file.


class RunsCode:
    """Unpickling it would run a shell command that leaves a marker file."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalsCode(RunsCode):
    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w')",))


class AnyObject:
    """An arbitrary class: unpickling imports its module and builds it."""


PICKLED_CODE = {
    "os.system in a torch file": lambda obj, path: torch.save({"x": obj(RunsCode)}, path),
    "eval in a torch file": lambda obj, path: torch.save({"x": obj(EvalsCode)}, path),
    "an object of a class": lambda obj, path: torch.save({"x": AnyObject()}, path),
    "legacy torch format": lambda obj, path: torch.save(
        {"x": obj(RunsCode)}, path, _use_new_zipfile_serialization=False
    ),
    "a bare pickle, protocol 4": lambda obj, path: path.write_bytes(
        pickle.dumps({"x": obj(RunsCode)}, protocol=4)
    ),
    "a bare pickle, protocol 0": lambda obj, path: path.write_bytes(
        pickle.dumps({"x": obj(RunsCode)}, protocol=0)
    ),
}


@pytest.mark.parametrize("case", list(PICKLED_CODE))
def test_pickled_code_is_refused_as_such_and_never_run(case, tmp_path):
    marker = tmp_path / "code-ran"

    def obj(cls):
        made = cls()
        made.marker = str(marker)
        return made

    path = tmp_path / "evil.pth"
    PICKLED_CODE[case](obj, path)
    with warnings.catch_warnings(record=True) as said, pytest.raises(ValueError) as error:
        warnings.simplefilter("always")
        load_backbone("test_vit_tiny", path)
    assert [str(w.message) for w in said] == []  # the error is the one thing said
    message = str(error.value)
    assert "refused: it holds pickled code" in message and "weights_only" in message, message
    assert "corrupt" not in message and "\n" not in message
    assert not marker.exists()


def test_a_damaged_file_is_still_called_damaged(tmp_path):
    path = bad.random_bytes(tmp_path / "noise.pth")
    with pytest.raises(ValueError, match="corrupt") as error:
        load_backbone("test_vit_tiny", path)
    assert "pickled code" not in str(error.value)


# --weights without --model: the message names the registered models the file fits.


def _save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


FOREIGN_WEIGHTS = {
    "test_vit_tiny16 state dict": ("test_vit_tiny16", lambda s: s, "test_vit_tiny16"),
    "test_vit_tiny state dict": ("test_vit_tiny", lambda s: s, "test_vit_tiny"),
    "DINO training checkpoint of test_vit_tiny16": (
        "test_vit_tiny16",
        lambda s: {"teacher": {f"module.backbone.{k}": v for k, v in s.items()}},
        "test_vit_tiny16",
    ),
    "test_dinov2_reg_tiny state dict": (
        "test_dinov2_reg_tiny",
        lambda s: s,
        "test_dinov2_reg_tiny",
    ),
    "a depth no model has": (
        "test_vit_tiny",
        lambda s: {k: v for k, v in s.items() if not k.startswith("blocks.1.")},
        None,
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN_WEIGHTS))
def test_weights_without_a_model_name_say_which_model_they_fit(case, clip, tmp_path, capsys):
    source, change, fits = FOREIGN_WEIGHTS[case]
    net, _ = load_backbone(source)
    path = _save(change(dict(net.state_dict())), tmp_path / "random.pth")
    frames, mask = clip
    args = ["segment", frames, "--mask", mask, "--out", tmp_path / "o", "--weights", path]
    code, err = cli([*args, "--device", "cpu", "--short-side", 48], capsys)
    if fits is None:
        one_line_error(code, err, "random.pth", "fits no registered model")
    else:
        one_line_error(code, err, "random.pth", f"fits {fits}")
        code, err = cli([*args, "--device", "cpu", "--short-side", 48, "--model", fits], capsys)
        assert code == 0, err  # the named model loads the file
