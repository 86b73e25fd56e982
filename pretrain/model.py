"""Student/teacher networks: a dinotrack backbone with DINO's projection head.

The backbone is a dinotrack registry ViT (timm ``VisionTransformer`` returning the class-token
embedding). The head is DINO's: an MLP (GELU) down to a bottleneck, L2 normalisation, and a
weight-normalised linear layer to ``K`` prototypes whose weight rows keep norm 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dinotrack.errors import InputError
from dinotrack.models.build import create_model
from dinotrack.models.registry import BackboneSpec, get_backbone_spec, list_backbones
from pretrain.config import ModelConfig

_VIT_SIZES = ("vit_tiny", "vit_small", "vit_base", "vit_large")


def resolve_backbone(
    arch: str, patch_size: int | None = None, depth: int | None = None
) -> BackboneSpec:
    """The backbone spec for ``--arch``, ``--patch-size`` and ``--depth``.

    ``arch`` is a dinotrack registry name (its patch size and depth are fixed) or a ViT size
    (``vit_small``, ...) with ``patch_size`` (default 16) and ``depth`` (default: the size's,
    12). A size with a patch that the registry holds maps onto that entry's architecture
    (``vit_small`` + 8 is ``dino_vits8``'s network, named ``vit_small_patch8``); any other
    patch builds the timm network with that patch size. A ``depth`` keeps the first
    ``depth`` blocks of that width (``vit_tiny`` + 8 + depth 6 is ``vit_tiny_patch8_depth6``).

    Raises:
        ValueError: Unknown name, or a ``patch_size`` or ``depth`` that contradicts a
            registry name.
    """
    if arch in _VIT_SIZES:
        patch = 16 if patch_size is None else int(patch_size)
        if patch < 1:
            raise InputError(f"--patch-size must be positive, got {patch}")
        if depth is not None:
            if int(depth) < 1:
                raise InputError(f"--depth must be positive, got {depth}")
            spec = resolve_backbone(arch, patch)
            return dataclasses.replace(
                spec,
                name=f"{spec.name}_depth{int(depth)}",
                model_kwargs=(*spec.model_kwargs, ("depth", int(depth))),
                description=f"{arch} with patch {patch} and {int(depth)} blocks, pretrained "
                "with dinotrack",
            )
        timm_arch = f"{arch}_patch{patch}_224"
        name = f"{arch}_patch{patch}"
        for candidate in list_backbones():
            spec = get_backbone_spec(candidate)
            if spec.timm_arch == timm_arch and not spec.model_kwargs:
                return dataclasses.replace(
                    spec, name=name, url=None, local_file=None, random_weights=False
                )
        return BackboneSpec(
            name=name,
            timm_arch=f"{arch}_patch16_224",
            patch_size=patch,
            pos_embed="dino",
            description=f"{arch} with patch {patch}, pretrained with dinotrack",
        )
    if arch not in list_backbones():
        known = ", ".join([*_VIT_SIZES, *list_backbones()])
        raise InputError(f"unknown --arch {arch!r}; known: {known}")
    spec = get_backbone_spec(arch)
    if depth is not None:
        raise InputError(
            f"--arch {arch} has a fixed depth; drop --depth, or name a ViT size with it "
            f"(e.g. --arch vit_tiny --depth {depth})"
        )
    if patch_size is not None and int(patch_size) != spec.patch_size:
        raise InputError(
            f"--arch {arch} has patch {spec.patch_size}, not {patch_size}; drop --patch-size, "
            f"or name a ViT size with it (e.g. --arch vit_small --patch-size {patch_size})"
        )
    return spec


def backbone_record(spec: BackboneSpec, mean: tuple, std: tuple) -> dict[str, Any]:
    """The architecture record stored in ``backbone.pth`` (see
    :func:`dinotrack.models.checkpoints.save_backbone_export`), with the normalisation the network
    was trained with."""
    return {
        "name": spec.name,
        "timm_arch": spec.timm_arch,
        "patch_size": spec.patch_size,
        "model_kwargs": dict(spec.model_kwargs),
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
        "pos_embed": spec.pos_embed,
    }


class WeightNormLinear(nn.Module):
    """Linear map without bias whose weight rows are ``g * v / ||v||``.

    With ``learn_norm=False`` (DINO's ``norm_last_layer``) ``g`` stays 1, so every prototype
    has unit norm and only directions are learnt.

    Args:
        in_dim: Input features.
        out_dim: Outputs (prototypes).
        learn_norm: Train the row norms ``g``.
    """

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool = False) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Linear's initialisation
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=learn_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_dim]`` -> ``[N, out_dim]``."""
        return F.linear(x, self.weight_g * F.normalize(self.weight_v, dim=1))


class DINOHead(nn.Module):
    """DINO projection head: MLP, L2 normalisation, weight-normalised prototypes.

    Args:
        in_dim: Backbone embedding size.
        out_dim: Number of prototypes K.
        hidden_dim: Width of hidden layers.
        bottleneck_dim: Width of the normalised embedding.
        num_layers: Linear layers in the MLP (GELU between them).
        norm_last_layer: Fix the prototypes' norms at 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for k in range(num_layers):
            if k:
                layers.append(nn.GELU())
            layers.append(nn.Linear(dims[k], dims[k + 1]))
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_norm=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_dim]`` embeddings -> ``[N, out_dim]`` prototype scores (logits)."""
        x = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(x)


class MultiCropNet(nn.Module):
    """Backbone + head applied to a list of views.

    Consecutive views of the same resolution go through the backbone as one batch; the head
    runs once on all embeddings.

    Args:
        backbone: Maps ``[N, 3, H, W]`` to class-token embeddings ``[N, D]``.
        head: Maps ``[N, D]`` to ``[N, K]``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Views ``[B, 3, H_i, W_i]`` -> scores ``[len(views) * B, K]``, view-major."""
        embeddings = []
        start = 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
                end += 1
            embeddings.append(self.backbone(torch.cat(views[start:end])))
            start = end
        return self.head(torch.cat(embeddings))


def build_networks(
    spec: BackboneSpec, cfg: ModelConfig, seed: int
) -> tuple[MultiCropNet, MultiCropNet]:
    """Student (with stochastic depth) and teacher (without), starting from equal weights.

    Initialisation is seeded with ``seed`` and leaves the global random state as it was, so
    every process builds the same networks.

    Returns:
        ``(student, teacher)`` on the CPU; the teacher's parameters do not require gradients.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student_backbone = create_model(spec, drop_path_rate=cfg.drop_path_rate)
        embed_dim = student_backbone.num_features
        student = MultiCropNet(student_backbone, _head(embed_dim, cfg))
        teacher = MultiCropNet(create_model(spec), _head(embed_dim, cfg))
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def _head(embed_dim: int, cfg: ModelConfig) -> DINOHead:
    return DINOHead(
        embed_dim,
        cfg.out_dim,
        cfg.head_hidden_dim,
        cfg.head_bottleneck_dim,
        cfg.head_layers,
        cfg.norm_last_layer,
    )


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices, none on biases and norm parameters.

    Each group carries ``"regularized"`` so the weight-decay schedule knows which to set.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or param.ndim <= 1:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "regularized": True},
        {"params": no_decay, "regularized": False, "weight_decay": 0.0},
    ]
