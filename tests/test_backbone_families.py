"""DINOv2 (with registers) and DINOv3 backbones: registry, official key layouts, position
handling against the official formulas, the hub's offline error, presets."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat

from dinotrack import get_backbone_spec, list_backbones, load_backbone
from dinotrack.config import PRESETS, TrackerConfig, preset_config
from dinotrack.models.build import create_model
from dinotrack.models.checkpoints import load_into
from dinotrack.models.features import FeatureExtractor, network_input_size
from dinotrack.models.hub import hub_weights_path
from dinotrack.models.registry import register_backbone

TINY_KWARGS = (("embed_dim", 64), ("depth", 2), ("num_heads", 2), ("mlp_ratio", 2.0))
# Too big to build with real tensors on a 2-core CPU in a test; their shapes are checked on
# the meta device instead.
GIANTS = {"dinov2_vitg14", "dinov2_vitg14_reg", "dinov3_vith16plus", "dinov3_vit7b16"}


def tiny(name: str) -> torch.nn.Module:
    """The architecture of registry entry ``name`` at test size, random weights (made
    non-trivial so that every tensor matters)."""
    spec = dataclasses.replace(get_backbone_spec(name), model_kwargs=TINY_KWARGS)
    torch.manual_seed(0)
    net = create_model(spec).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net, spec


def image(spec, rows: int = 3, cols: int = 5, batch: int = 2) -> torch.Tensor:
    p = spec.patch_size
    return torch.randn(batch, 3, rows * p, cols * p, generator=torch.Generator().manual_seed(1))


def features(net, spec, img) -> torch.Tensor:
    return FeatureExtractor(net, spec, "cpu", precision="fp32").forward(img)[0]


# --- registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_backbones())
def test_every_entry_has_its_shape_on_the_meta_device(name):
    """Every entry, the giants included, builds (on the meta device: shapes, no memory) and
    timm's intermediate-feature API gives ``[B, embed_dim, H/p, W/p]``."""
    spec = get_backbone_spec(name)
    with torch.device("meta"):
        net = create_model(spec)
        (feats,) = net.forward_intermediates(
            image(spec, 2, 3, batch=1).to("meta"), indices=1, norm=True, intermediates_only=True
        )
    assert spec.embed_dim == net.embed_dim
    assert feats.shape == (1, spec.embed_dim, 2, 3)
    assert spec.license and spec.preset in PRESETS and spec.description


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[pytest.mark.slow] if "_vitl" in n else [])
        for n in list_backbones()
        if n not in GIANTS
    ],
)
def test_entries_build_with_random_weights_and_give_documented_features(name):
    net, spec = load_backbone(name, pretrained=False)
    feats = features(net, spec, image(spec, 2, 3, batch=1))
    assert feats.shape == (1, spec.embed_dim, 2, 3) and feats.isfinite().all()


@pytest.mark.parametrize("name", sorted(GIANTS))
def test_giants_are_not_built_here(name):
    pytest.skip(
        f"{name} is too large to build with real tensors on this 2-core CPU (checked on meta)"
    )


def test_families_sources_and_licences():
    for name in list_backbones():
        spec = get_backbone_spec(name)
        if name.startswith("dinov2_"):
            assert spec.license == "Apache-2.0" and spec.patch_size == 14
            assert spec.hf_hub_id == f"timm/{spec.timm_arch}.lvd142m"
            assert ("reg4" in spec.timm_arch) == name.endswith("_reg")
        elif name.startswith("dinov3_"):
            assert spec.license == "DINOv3 License" and spec.patch_size == 16
            assert spec.hf_hub_id == f"timm/{spec.timm_arch}.lvd1689m"
    import timm

    # Every hub-hosted entry names a timm architecture and pretrained tag that timm knows.
    for name in list_backbones():
        spec = get_backbone_spec(name)
        if spec.hf_hub_id:
            tag = spec.hf_hub_id.removeprefix("timm/")
            assert timm.models.get_pretrained_cfg(tag).hf_hub_id == spec.hf_hub_id
            assert timm.models.get_pretrained_cfg(tag).mean == spec.mean


# --- official key layouts ---------------------------------------------------------------


def official_dinov2(net) -> dict[str, torch.Tensor]:
    """A facebookresearch/dinov2 ``DinoVisionTransformer`` state dict made from a timm one:
    registers as ``register_tokens``, the class token's position in ``pos_embed[:, :1]``,
    SwiGLU as ``w12``/``w3``, plus the ``mask_token``."""
    state = dict(net.state_dict())
    if "reg_token" in state:
        cls_pos = torch.randn(1, 1, state["cls_token"].shape[-1])
        state["register_tokens"] = state.pop("reg_token")
        state["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)
        state["cls_token"] = state["cls_token"] - cls_pos
    if _packed(net):
        renamed = {}
        for key, value in state.items():
            key = key.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3.")
            renamed[key] = value
        state = renamed
    state["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    return state


def _packed(net) -> bool:
    return type(net.blocks[0].mlp).__name__ != "Mlp"


def official_dinov3(net) -> dict[str, torch.Tensor]:
    """A facebookresearch/dinov3 state dict made from a timm ``Eva`` one: ``storage_tokens``,
    ``ls1/ls2.gamma``, SwiGLU ``w1/w2/w3``, masked ``qkv.bias`` (zero: timm's bias-free
    architecture), RoPE ``periods``, ``mask_token``."""
    rename = {
        "reg_token": "storage_tokens",
        ".gamma_1": ".ls1.gamma",
        ".gamma_2": ".ls2.gamma",
        ".mlp.fc1_g.": ".mlp.w1.",
        ".mlp.fc1_x.": ".mlp.w2.",
    }
    state = {}
    for key, value in net.state_dict().items():
        for old, new in rename.items():
            key = key.replace(old, new)
        if ".mlp.fc2." in key and _packed(net):
            key = key.replace(".mlp.fc2.", ".mlp.w3.")
        state[key] = value
    dim = state["cls_token"].shape[-1]
    for i in range(len(net.blocks)):
        mask = torch.ones(3 * dim)
        mask[dim : 2 * dim] = 0
        bias = torch.zeros(3 * dim)
        bias[dim : 2 * dim] = torch.randn(dim)  # the key bias is masked out: anything goes
        state[f"blocks.{i}.attn.qkv.bias"] = bias
        state[f"blocks.{i}.attn.qkv.bias_mask"] = mask
    state["rope_embed.periods"] = torch.ones(dim // net.blocks[0].attn.num_heads // 4)
    state["mask_token"] = torch.zeros(1, dim)
    return state


OFFICIAL = [
    ("dinov2_vits14", official_dinov2),
    ("dinov2_vits14_reg", official_dinov2),
    ("dinov2_vitg14", official_dinov2),  # packed SwiGLU
    ("dinov3_vits16", official_dinov3),
    ("dinov3_vits16plus", official_dinov3),  # SwiGLU
]


@pytest.mark.parametrize("name, layout", OFFICIAL)
def test_official_layouts_load_strictly_with_identical_features(tmp_path, name, layout):
    source, spec = tiny(name)
    path = tmp_path / "official.pth"
    torch.save(layout(source), path)
    assert "blocks.0.attn.qkv.weight" in torch.load(path, weights_only=True)
    net = create_model(dataclasses.replace(spec, model_kwargs=TINY_KWARGS))
    load_into(net, torch.load(path, weights_only=True), path)
    img = image(spec)
    torch.testing.assert_close(features(net.eval(), spec, img), features(source, spec, img))


def test_official_dinov3_with_real_query_biases_needs_the_qkvb_architecture(tmp_path):
    source, spec = tiny("dinov3_vits16")
    state = official_dinov3(source)
    state["blocks.1.attn.qkv.bias"][0] = 0.5
    net = create_model(dataclasses.replace(spec, model_kwargs=TINY_KWARGS))
    with pytest.raises(ValueError, match=r"blocks.1.attn.qkv.bias holds non-zero .*_qkvb"):
        load_into(net, state, "x.pth")


@pytest.mark.parametrize("name, layout", [OFFICIAL[1], OFFICIAL[3]])
def test_partial_or_foreign_official_files_list_missing_and_unexpected_keys(name, layout):
    source, spec = tiny(name)
    state = layout(source)
    del state["blocks.1.norm2.weight"]
    state["blocks.0.attn.extra.weight"] = torch.zeros(1)
    net = create_model(dataclasses.replace(spec, model_kwargs=TINY_KWARGS))
    with pytest.raises(ValueError) as err:
        load_into(net, state, "partial.pth")
    message = str(err.value)
    assert "missing keys: blocks.1.norm2.weight" in message
    assert "unexpected keys: blocks.0.attn.extra.weight" in message


def test_timm_safetensors_files_load(tmp_path):
    from safetensors.torch import save_file

    source, spec = tiny("dinov3_vits16")
    path = tmp_path / "model.safetensors"
    save_file(source.state_dict(), path)
    net = create_model(dataclasses.replace(spec, model_kwargs=TINY_KWARGS))
    from dinotrack.models.checkpoints import read_checkpoint

    load_into(net, read_checkpoint(path), path)
    img = image(spec)
    assert torch.equal(features(net.eval(), spec, img), features(source, spec, img))
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a safetensors file or corrupt"):
        read_checkpoint(path)


# --- position handling against the official formulas ------------------------------------


def dinov2_official_features(net, state, img):
    """The facebookresearch/dinov2 forward, written out from its definition on an official
    state dict: class token + patches, positions resampled bicubically with scale factor
    (grid + 0.1) / sqrt(N) and no antialiasing, registers inserted after the class token
    (no position), the blocks, the final norm, class and register tokens dropped."""
    batch, _, height, width = img.shape
    patch = net.patch_embed.proj.kernel_size[0]
    gh, gw = height // patch, width // patch
    x = F.conv2d(
        img, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch
    )
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(batch, -1, -1), x], dim=1)
    pos = state["pos_embed"]
    m = int(math.sqrt(pos.shape[1] - 1))
    grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid, scale_factor=((gh + 0.1) / m, (gw + 0.1) / m), mode="bicubic", antialias=False
    )
    if (gh, gw) != (m, m):  # the official code keeps the native grid as it is
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)
    x = x + pos
    regs = state.get("register_tokens")
    if regs is not None:
        x = torch.cat([x[:, :1], regs.expand(batch, -1, -1), x[:, 1:]], dim=1)
    for blk in net.blocks:  # the blocks' arithmetic is the same module in both codes
        x = blk(x)
    x = F.layer_norm(x, x.shape[-1:], state["norm.weight"], state["norm.bias"], eps=1e-6)
    prefix = 1 + (0 if regs is None else regs.shape[1])
    return x[:, prefix:].reshape(batch, gh, gw, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
@pytest.mark.parametrize("rows, cols", [(3, 5), (6, 4), (37, 37)])
def test_dinov2_features_follow_the_official_position_resampling(name, rows, cols):
    net, spec = tiny(name)
    with torch.no_grad():
        net.pos_embed.normal_(0, 1)  # make positions matter
    img = image(spec, rows, cols, batch=1)
    with torch.no_grad():
        ref = dinov2_official_features(net, official_dinov2(net), img)
    torch.testing.assert_close(features(net, spec, img), ref, atol=1e-4, rtol=1e-4)


def dinov3_official_rope(head_dim: int, rows: int, cols: int, base: float = 100.0):
    """facebookresearch/dinov3 ``RopePositionEmbedding`` (``normalize_coords="separate"``, at
    eval: no shift, jitter or rescale), written out: patch centres in [-1, 1] per axis, periods
    ``base ** (2 i / (D / 2))``, angles ``2 pi c / period`` for y then x, tiled twice."""
    periods = base ** (2 * torch.arange(head_dim // 4, dtype=torch.float64) / (head_dim // 2))
    ys = torch.arange(0.5, rows, dtype=torch.float64) / rows
    xs = torch.arange(0.5, cols, dtype=torch.float64) / cols
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1) * 2 - 1
    angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).flatten(1, 2).tile(2)
    return angles.sin().float(), angles.cos().float()


def rotate_official(x, sin, cos):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


@pytest.mark.parametrize("rows, cols", [(3, 5), (7, 2), (16, 16), (60, 107)])
def test_dinov3_rope_is_the_official_formula_at_any_grid(rows, cols):
    net, _ = tiny("dinov3_vits16")
    attn = net.blocks[0].attn
    head_dim = attn.head_dim if hasattr(attn, "head_dim") else 64 // attn.num_heads
    q = torch.randn(1, attn.num_heads, rows * cols, head_dim)
    turned = apply_rot_embed_cat(q, net.rope.get_embed(shape=(rows, cols)), half=True)
    sin, cos = dinov3_official_rope(head_dim, rows, cols)
    torch.testing.assert_close(turned, rotate_official(q, sin, cos), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["test_dinov3_tiny", "test_dinov2_reg_tiny"])
def test_class_attention_with_registers_is_over_the_patches(name):
    """The attention row (registers dropped) equals the last block's unfused attention."""
    net, spec = load_backbone(name)
    img = image(spec)
    caught = {}
    last = net.blocks[-1].attn
    last.fused_attn = False
    handle = last.attn_drop.register_forward_hook(lambda m, i, o: caught.update(a=o))
    try:
        fx = FeatureExtractor(net, spec, "cpu", precision="fp32", pos_embed="timm")
        feats, attn = fx.forward(img, attention=True)
    finally:
        handle.remove()
        last.fused_attn = True
    prefix = net.num_prefix_tokens
    ref = caught["a"][:, :, 0, prefix:].reshape(attn.shape)
    torch.testing.assert_close(attn, ref, atol=1e-5, rtol=1e-4)
    assert (attn.sum((-2, -1)) < 1).all()  # the registers' share is left out


def test_dino_rule_with_registers_equals_timm_on_the_native_grid():
    """On the grid the embeddings were trained at, neither rule resamples: the block-by-block
    path (registers, class attention) and forward_intermediates agree."""
    net, spec = load_backbone("test_dinov2_reg_tiny")
    img = image(spec, 37, 37, batch=1)
    ours = FeatureExtractor(net, spec, "cpu", precision="fp32").forward(img, attention=True)
    timm = FeatureExtractor(net, spec, "cpu", "fp32", "timm").forward(img, attention=True)
    for a, b in zip(ours, timm, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --- hub weights offline ----------------------------------------------------------------


@pytest.fixture
def offline_hub_spec(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network in tests
    spec = dataclasses.replace(
        get_backbone_spec("test_dinov3_tiny"),
        name="test_offline_hub_vit",
        hf_hub_id="timm/test_offline_hub_vit.nowhere",
        random_weights=False,
    )
    register_backbone(spec, overwrite=True)
    return spec


def test_hub_model_offline_names_repository_cache_path_and_weights_flag(offline_hub_spec):
    with pytest.raises(RuntimeError) as err:
        load_backbone("test_offline_hub_vit")
    message = str(err.value)
    assert "timm/test_offline_hub_vit.nowhere" in message
    assert str(hub_weights_path(offline_hub_spec)) in message
    assert "weights=PATH" in message and "\n" not in message


def test_a_hub_host_that_does_not_resolve_fails_at_once_without_retry_lines(
    offline_hub_spec, monkeypatch, capsys
):
    """No network and no HF_HUB_OFFLINE: one error, not the hub client's five retries."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.dinotrack-test.invalid")
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    with pytest.raises(RuntimeError, match="cannot resolve hub.dinotrack-test.invalid"):
        load_backbone("test_offline_hub_vit")
    assert "Retrying" not in capsys.readouterr().err


def test_hub_weights_placed_in_the_cache_by_hand_are_used(offline_hub_spec):
    from safetensors.torch import save_file

    trained, spec = load_backbone("test_dinov3_tiny")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    path = hub_weights_path(offline_hub_spec)
    path.parent.mkdir(parents=True)
    save_file(trained.state_dict(), path)
    net, _ = load_backbone("test_offline_hub_vit")
    img = image(spec)
    assert torch.equal(features(net, spec, img), features(trained, spec, img))


# --- presets ----------------------------------------------------------------------------


def test_presets_are_the_papers_settings_and_the_default_is_dino():
    assert preset_config("dino") == TrackerConfig()
    v3 = preset_config("dinov3")
    assert (v3.short_side, v3.n_last_frames, v3.radius, v3.topk, v3.temperature) == (
        960,
        7,
        12,
        5,
        0.2,
    )
    assert preset_config("dinov3", topk=3).topk == 3
    with pytest.raises(ValueError, match="unknown preset 'dinov9'; choose one of dino, dinov3"):
        preset_config("dinov9")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("dino_vits8", (480, 856)),
        ("dinov2_vits14", (966, 1708)),
        ("dinov3_vits16", (960, 1712)),
    ],
)
def test_presets_give_the_documented_input_sizes_of_a_davis_frame(name, expected):
    spec = get_backbone_spec(name)
    cfg = preset_config(spec.preset)
    assert network_input_size(480, 854, cfg.short_side, spec.patch_size) == expected


@pytest.mark.slow
def test_compiled_backbone_gives_the_same_features():
    net, spec = load_backbone("test_dinov3_tiny")
    img = image(spec)
    eager = features(net, spec, img)
    compiled = FeatureExtractor(net, spec, "cpu", precision="fp32", compile=True).forward(img)[0]
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
