"""Backbone registry, checkpoint families (built from a model's own state dict), downloads."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

from dinotrack.models.build import create_model, load_backbone
from dinotrack.models.checkpoints import remap_state_dict, save_backbone_export
from dinotrack.models.hub import hub_weights_path
from dinotrack.models.registry import (
    OFFLINE_MODEL,
    BackboneSpec,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)

TINY = "test_vit_tiny"


class Payload:
    """An arbitrary class: unpickling it would run code from the file's author."""


def features(net: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    patch = net.patch_embed.patch_size[0]
    x = torch.randn(1, 3, 2 * patch, 3 * patch, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return net.forward_features(x)


@pytest.fixture(scope="module")
def trained():
    """A tiny backbone with non-default weights, standing in for a trained one."""
    net = create_model(get_backbone_spec(TINY))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


@pytest.mark.parametrize("name", [n for n in list_backbones() if n.startswith("test_")])
def test_test_backbones_build_and_are_deterministic(name):
    spec = get_backbone_spec(name)
    a, spec_a = load_backbone(name)
    b, _ = load_backbone(name)
    assert spec_a == spec and spec.random_weights
    assert torch.equal(features(a), features(b))
    out = features(a)
    assert out.shape[1] == a.num_prefix_tokens + 2 * 3


def test_registry_has_official_backbones_with_urls():
    for name, patch in [
        ("dino_vits16", 16),
        ("dino_vits8", 8),
        ("dino_vitb16", 16),
        ("dino_vitb8", 8),
    ]:
        spec = get_backbone_spec(name)
        assert spec.patch_size == patch
        assert spec.url.startswith("https://dl.fbaipublicfiles.com/dino/") and spec.url.endswith(
            ".pth"
        )
        assert spec.std == (0.228, 0.224, 0.225) and spec.pos_embed == "dino"
    assert get_backbone_spec("dinov2_vits14").patch_size == 14


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="unknown model 'vit_huge_nope'.*dino_vits8"):
        get_backbone_spec("vit_huge_nope")


def test_official_dino_backbone_file(tmp_path, trained):
    path = tmp_path / "dino_backbone.pth"
    torch.save(trained.state_dict(), path)
    net, _ = load_backbone(TINY, path)
    assert torch.equal(features(net), features(trained))


def test_official_full_training_checkpoint_uses_teacher(tmp_path, trained):
    teacher = {f"backbone.{k}": v for k, v in trained.state_dict().items()}
    teacher["head.mlp.0.weight"] = torch.zeros(8, 64)
    teacher["head.last_layer.weight_g"] = torch.ones(100, 1)
    student = {f"module.{k}": torch.zeros_like(v) for k, v in teacher.items()}
    ckpt = {"teacher": teacher, "student": student, "epoch": 100, "args": argparse.Namespace(lr=1)}
    path = tmp_path / "full.pth"
    torch.save(ckpt, path)
    net, _ = load_backbone(TINY, path)
    assert torch.equal(features(net), features(trained))


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "state_dict_ema"])
def test_timm_state_dicts_wrapped_or_with_classifier(tmp_path, trained, wrapper):
    state = dict(trained.state_dict())
    state["head.weight"] = torch.zeros(10, 64)  # a classifier our backbone does not have
    state["head.bias"] = torch.zeros(10)
    path = tmp_path / "timm.pth"
    torch.save({wrapper: state, "epoch": 3}, path)
    net, _ = load_backbone(TINY, path)
    assert torch.equal(features(net), features(trained))


def test_dinov2_style_mask_token_and_ddp_prefix(tmp_path, trained):
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 64)
    path = tmp_path / "v2.pth"
    torch.save(state, path)
    net, _ = load_backbone(TINY, path)
    assert torch.equal(features(net), features(trained))


def test_prefixes_are_stripped_only_at_the_start(trained):
    value = torch.zeros(1)
    state = remap_state_dict({"module.blocks.0.submodule.backbone.w": value}, trained)
    assert list(state) == ["blocks.0.submodule.backbone.w"]


def test_pretrain_export_loads_without_a_model_name(tmp_path, trained):
    spec = get_backbone_spec(TINY)
    record = {
        "name": TINY,
        "timm_arch": spec.timm_arch,
        "patch_size": spec.patch_size,
        "model_kwargs": dict(spec.model_kwargs),
        "mean": list(spec.mean),
        "std": list(spec.std),
    }
    path = save_backbone_export(tmp_path / "run" / "backbone.pth", trained, record, {"steps": 2})
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    net, loaded = load_backbone(None, path)
    assert loaded.patch_size == 8 and not loaded.random_weights
    assert torch.equal(features(net), features(trained))
    half = save_backbone_export(tmp_path / "half.pth", trained, record, dtype=torch.float16)
    net16, _ = load_backbone(None, half)
    torch.testing.assert_close(features(net16), features(trained), atol=2e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="does not match model=dino_vits16"):
        load_backbone("dino_vits16", path)


def test_mismatched_checkpoint_lists_keys(tmp_path, trained):
    state = dict(trained.state_dict())
    del state["blocks.1.mlp.fc2.weight"]
    state["blocks.7.attn.qkv.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_backbone(TINY, path)
    assert "missing keys: blocks.1.mlp.fc2.weight" in str(err.value)
    assert "unexpected keys: blocks.7.attn.qkv.weight" in str(err.value)
    with pytest.raises(ValueError, match="wrong shapes"):
        load_backbone("test_vit_tiny16", tmp_path / "bad.pth")


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint or corrupt"):
        load_backbone(TINY, bad)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_backbone(TINY, tmp_path / "nope.pth")
    with pytest.raises(IsADirectoryError, match="is a directory; name the checkpoint file"):
        load_backbone(TINY, tmp_path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "obj": Payload()}, path)
    with pytest.raises(ValueError, match="cannot read weights file") as err:
        load_backbone(TINY, path)
    message = str(err.value)
    assert "refused: it holds pickled code (test_backbones.Payload)" in message
    assert "weights_only=False" not in message and "\x1b" not in message and "\n" not in message


def test_non_finite_weights_are_refused(tmp_path, trained):
    state = dict(trained.state_dict())
    state["blocks.0.mlp.fc1.weight"] = state["blocks.0.mlp.fc1.weight"].clone()
    state["blocks.0.mlp.fc1.weight"][0, 0] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"NaN or infinite values \(in blocks.0.mlp.fc1.weight\)"):
        load_backbone(TINY, path)


@pytest.fixture
def offline_spec(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    base = get_backbone_spec(TINY)
    spec = dataclasses.replace(
        base,
        name="test_offline_vit",
        url="http://127.0.0.1:9/weights/test_offline_vit.pth",  # nothing listens there
        random_weights=False,
    )
    register_backbone(spec, overwrite=True)
    return spec


def test_failed_download_names_url_cache_path_and_weights_flag(offline_spec):
    with pytest.raises(RuntimeError) as err:
        load_backbone("test_offline_vit", progress=False)
    message = str(err.value)
    assert offline_spec.url in message
    assert str(hub_weights_path(offline_spec)) in message
    assert "weights=PATH" in message
    assert f"model={OFFLINE_MODEL}" in message  # the shipped model, which needs no network
    assert not hub_weights_path(offline_spec).exists()


def test_weights_placed_in_the_cache_by_hand_are_used(offline_spec, trained):
    path = hub_weights_path(offline_spec)
    path.parent.mkdir(parents=True)
    torch.save(trained.state_dict(), path)
    net, _ = load_backbone("test_offline_vit")
    assert torch.equal(features(net), features(trained))


def test_register_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(BackboneSpec(name=TINY, timm_arch="x", patch_size=8))
