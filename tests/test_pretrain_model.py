"""Backbone resolution, DINO head, multi-crop grouping, student/teacher construction."""

from __future__ import annotations

import pytest
import torch

from dinotrack.models.registry import get_backbone_spec
from pretrain.config import ModelConfig
from pretrain.model import (
    DINOHead,
    MultiCropNet,
    build_networks,
    parameter_groups,
    resolve_backbone,
)

TINY = ModelConfig(arch="test_vit_tiny", out_dim=40, head_hidden_dim=24, head_bottleneck_dim=8)


def test_vit_size_and_patch_map_onto_the_registry():
    spec = resolve_backbone("vit_small", 8)
    assert (spec.name, spec.timm_arch, spec.patch_size) == (
        "vit_small_patch8",
        get_backbone_spec("dino_vits8").timm_arch,
        8,
    )
    assert spec.url is None and not spec.random_weights
    assert resolve_backbone("vit_small").timm_arch == get_backbone_spec("dino_vits16").timm_arch
    odd = resolve_backbone("vit_small", 14)  # no registry entry: timm network with patch 14
    assert (odd.name, odd.patch_size) == ("vit_small_patch14", 14)


@pytest.mark.parametrize("name", ["test_vit_tiny", "test_vit_tiny16", "dino_vits8"])
def test_registry_names_are_accepted(name):
    assert resolve_backbone(name) == get_backbone_spec(name)


def test_bad_arch_or_patch_is_explained():
    with pytest.raises(ValueError, match="unknown --arch 'vit_huge'.*test_vit_tiny"):
        resolve_backbone("vit_huge")
    with pytest.raises(ValueError, match="dino_vits16 has patch 16, not 8.*--arch vit_small"):
        resolve_backbone("dino_vits16", 8)


def test_head_prototypes_have_unit_norm_and_fixed_norm():
    head = DINOHead(16, out_dim=50, hidden_dim=32, bottleneck_dim=8)
    with torch.no_grad():
        head.last_layer.weight_v.mul_(torch.rand(50, 1) * 5 + 0.1)  # any row norms
    x = torch.randn(4, 16)
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    out = head(x)
    assert out.shape == (4, 50)
    # Each output is the cosine between the normalised embedding and a prototype: |.| <= 1.
    assert out.abs().max() <= 1 + 1e-5
    rows = torch.nn.functional.normalize(head.last_layer.weight_v, dim=1)
    torch.testing.assert_close(out, bottleneck @ rows.T)
    assert not head.last_layer.weight_g.requires_grad
    free = DINOHead(16, out_dim=50, norm_last_layer=False)
    assert free.last_layer.weight_g.requires_grad
    assert len(head.mlp) == 5  # Linear, GELU, Linear, GELU, Linear


def test_multicrop_grouping_equals_view_by_view():
    _, teacher = build_networks(get_backbone_spec("test_vit_tiny"), TINY, seed=0)
    gen = torch.Generator().manual_seed(0)
    views = [torch.randn(2, 3, 32, 32, generator=gen) for _ in range(2)]
    views += [torch.randn(2, 3, 16, 16, generator=gen) for _ in range(3)]
    with torch.no_grad():
        grouped = teacher(views)
        single = torch.cat([teacher.head(teacher.backbone(v)) for v in views])
    assert grouped.shape == (10, 40)
    torch.testing.assert_close(grouped, single, atol=1e-5, rtol=1e-5)


def test_student_and_teacher_start_equal_and_seeded():
    spec = get_backbone_spec("test_vit_tiny")
    state = torch.get_rng_state()
    student, teacher = build_networks(spec, TINY, seed=3)
    assert torch.equal(state, torch.get_rng_state())  # global random state untouched
    for (name, s), (_, t) in zip(
        student.state_dict().items(), teacher.state_dict().items(), strict=True
    ):
        assert torch.equal(s, t), name
    assert not any(p.requires_grad for p in teacher.parameters())
    assert student.backbone.blocks[1].drop_path1.drop_prob == pytest.approx(0.1)
    again, _ = build_networks(spec, TINY, seed=3)
    other, _ = build_networks(spec, TINY, seed=4)
    first = next(iter(student.parameters()))
    assert torch.equal(first, next(iter(again.parameters())))
    assert not torch.equal(first, next(iter(other.parameters())))


def test_no_weight_decay_on_biases_and_norms():
    student, _ = build_networks(get_backbone_spec("test_vit_tiny"), TINY, seed=0)
    decay, no_decay = parameter_groups(student)
    names = {id(p): n for n, p in student.named_parameters()}
    assert decay["regularized"] and not no_decay["regularized"]
    assert no_decay["weight_decay"] == 0.0
    decayed = {names[id(p)] for p in decay["params"]}
    free = {names[id(p)] for p in no_decay["params"]}
    assert "backbone.blocks.0.attn.qkv.weight" in decayed
    assert "head.last_layer.weight_v" in decayed
    assert {"backbone.norm.weight", "backbone.blocks.0.attn.qkv.bias"} <= free
    assert "head.last_layer.weight_g" not in decayed | free  # fixed norm: not optimised
    assert isinstance(student, MultiCropNet)


def test_depth_keeps_the_width_and_sets_the_blocks():
    from dinotrack.models.build import create_model

    spec = resolve_backbone("vit_tiny", 16, depth=3)
    assert (spec.name, spec.patch_size, dict(spec.model_kwargs)) == (
        "vit_tiny_patch16_depth3",
        16,
        {"depth": 3},
    )
    net = create_model(spec)
    assert (
        len(net.blocks) == 3
        and net.embed_dim == create_model(resolve_backbone("vit_tiny")).embed_dim
    )
    with pytest.raises(ValueError, match="--depth must be positive"):
        resolve_backbone("vit_tiny", 16, depth=0)
    with pytest.raises(ValueError, match="test_vit_tiny has a fixed depth"):
        resolve_backbone("test_vit_tiny", depth=4)
