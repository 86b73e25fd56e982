"""Student/teacher networks: a dinotrack backbone with DINO's projection head.

The backbone is a dinotrack registry ViT (timm ``VisionTransformer`` returning the class-token
embedding). The head is DINO's: an MLP (GELU) down to a bottleneck, L2 normalisation, and a
weight-normalised linear layer to ``K`` prototypes whose weight rows keep norm 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
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


def backbone_tokens(
    backbone: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor | None = None,
    mask_token: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class token and patch tokens of a timm ViT, with masked patches replaced first.

    The same computation as the backbone's own forward (patch embedding, position embedding,
    blocks, final norm), except that where ``masks`` is set the patch embedding is replaced
    by ``mask_token`` before the position embedding is added (iBOT's masked image modelling).

    Args:
        backbone: A timm ``VisionTransformer`` built with ``dynamic_img_size=True``.
        images: ``[N, 3, H, W]``.
        masks: bool ``[N, P]`` over the ``P = (H/p) * (W/p)`` patches, row-major; None: no mask.
        mask_token: ``[D]``; needed with ``masks``.

    Returns:
        ``([N, D] class tokens, [N, P, D] patch tokens)``, both after the final norm.
    """
    x = backbone.patch_embed(images)  # [N, H/p, W/p, D]
    if masks is not None:
        grid = masks.view(x.shape[:3]).unsqueeze(-1)
        x = torch.where(grid, mask_token.to(x.dtype), x)
    x = backbone._pos_embed(x)
    x = backbone.norm_pre(backbone.patch_drop(x))
    x = backbone.norm(backbone.blocks(x))
    return x[:, 0], x[:, backbone.num_prefix_tokens :]


@dataclass
class DenseOutput:
    """What :class:`MultiCropNet` returns with ``dense=True``.

    Attributes:
        scores: ``[V * B, K]`` head scores of the class tokens, view-major (as the plain
            forward's).
        cls: ``[V * B, D]`` class-token embeddings (the backbone's output), view-major.
        patches: ``[2 * B, P, D]`` patch tokens of the two global views.
        patch_scores: ``[M, K']`` patch-head scores of the ``M`` patches selected by
            ``masks`` (in ``masks.nonzero()`` order); None without ``masks``.
    """

    scores: torch.Tensor
    cls: torch.Tensor
    patches: torch.Tensor
    patch_scores: torch.Tensor | None


class MultiCropNet(nn.Module):
    """Backbone + head applied to a list of views.

    Consecutive views of the same resolution go through the backbone as one batch; the head
    runs once on all embeddings.

    Args:
        backbone: Maps ``[N, 3, H, W]`` to class-token embeddings ``[N, D]``.
        head: Maps ``[N, D]`` to ``[N, K]``.
        patch_head: Scores patch tokens for iBOT: ``"shared"`` (the class tokens' head),
            ``"separate"`` (a copy of ``head``'s architecture with its own weights, given
            as ``separate_head``) or None (no patch scores; no mask token).
        separate_head: The patch head for ``patch_head="separate"``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        patch_head: str | None = None,
        separate_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.patch_head_kind = patch_head
        if patch_head == "separate":
            self.patch_head = separate_head
        if patch_head is not None:
            self.mask_token = nn.Parameter(torch.zeros(backbone.num_features))

    def embed(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Views ``[B, 3, H_i, W_i]`` -> class-token embeddings ``[len(views) * B, D]``."""
        embeddings = []
        start = 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
                end += 1
            embeddings.append(self.backbone(torch.cat(views[start:end])))
            start = end
        return torch.cat(embeddings)

    def forward(
        self,
        views: list[torch.Tensor],
        masks: torch.Tensor | None = None,
        dense: bool = False,
        mask_input: bool = True,
    ) -> torch.Tensor | DenseOutput:
        """Views ``[B, 3, H_i, W_i]`` -> scores ``[len(views) * B, K]``, view-major.

        With ``dense=True``, a :class:`DenseOutput` that adds the class and patch tokens: the
        first two views (the global ones) then go through the backbone token by token, their
        patches at ``masks`` (bool ``[2 * B, P]``) replaced by the mask token when
        ``mask_input`` (the student) and only scored when not (the teacher).
        """
        if not dense:
            return self.head(self.embed(views))
        masked = masks if mask_input else None
        token = self.mask_token if masked is not None else None
        cls, patches = backbone_tokens(self.backbone, torch.cat(views[:2]), masked, token)
        if len(views) > 2:
            cls = torch.cat([cls, self.embed(views[2:])])
        patch_scores = None
        if masks is not None:
            head = self.patch_head if self.patch_head_kind == "separate" else self.head
            patch_scores = head(patches[masks])
        return DenseOutput(self.head(cls), cls, patches, patch_scores)


def build_networks(
    spec: BackboneSpec, cfg: ModelConfig, seed: int, patch_head: str | None = None
) -> tuple[MultiCropNet, MultiCropNet]:
    """Student (with stochastic depth) and teacher (without), starting from equal weights.

    ``patch_head`` (``"shared"``, ``"separate"`` or None) gives both a mask token and a
    patch head for iBOT (see :class:`MultiCropNet`); None builds exactly DINO's networks.

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
        if patch_head is not None:
            separate = patch_head == "separate"
            student, teacher = (
                MultiCropNet(
                    net.backbone, net.head, patch_head, _head(embed_dim, cfg) if separate else None
                )
                for net in (student, teacher)
            )
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
