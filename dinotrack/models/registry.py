"""Registry of named ViT backbones and their weights.

Every backbone is a timm ViT (``VisionTransformer``, or ``Eva`` for DINOv3's RoPE ViTs) built
with ``dynamic_img_size=True`` and no classifier. A :class:`BackboneSpec` names the timm
architecture, the patch size, where its weights come from (an official URL downloaded into
torch's hub cache, a timm pretrained tag on the Hugging Face hub downloaded into its cache, a
file shipped inside the package (``dinotrack/weights/``), or nothing for the random test backbones),
how images are normalised for it, its licence and the propagation preset of its paper.

Families: DINO (Caron et al. 2021), DINOv2 with and without registers (Oquab et al. 2023;
Darcet et al. 2024) and DINOv3 (Simeoni et al. 2025).

Building a backbone and loading its weights is :mod:`dinotrack.models.build`; downloads and
caches are :mod:`dinotrack.models.hub`; checkpoint files are :mod:`dinotrack.models.checkpoints`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dinotrack.config import DINO_VIDEO_PROTOCOL_STD, IMAGENET_MEAN, IMAGENET_STD
from dinotrack.errors import InputError

_DINO_URL = "https://dl.fbaipublicfiles.com/dino/{0}/{0}.pth"
DINOV3_LICENSE = "DINOv3 License"
"""The DINOv3 weights' own licence (https://ai.meta.com/resources/models-and-libraries/dinov3-license/)."""
SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
"""Package data: the weights of the backbones trained by dinotrack (``local_file``)."""
OFFLINE_MODEL = "dinotrack_vitt16_v3"
"""The trained backbone that ships inside the package and so works without a network."""
RETIRED_MODELS = {
    "dinotrack_vitt16_davis16": OFFLINE_MODEL,
    "dinotrack_vitt16_v2": OFFLINE_MODEL,
}
"""Shipped models no longer in the package, and the one that replaced them."""


@dataclass(frozen=True)
class BackboneSpec:
    """Description of one named backbone.

    Attributes:
        name: Registry name, e.g. ``"dino_vits8"``.
        timm_arch: timm model name the network is built from.
        patch_size: Side of a square patch in pixels.
        url: Official weights URL, downloaded into the torch hub cache on first use.
        hf_hub_id: Hugging Face hub repository of timm's pretrained tag (e.g.
            ``"timm/vit_small_patch16_dinov3.lvd1689m"``), downloaded into the hub cache on
            first use.
        hf_filename: File of ``hf_hub_id`` holding the weights.
        local_file: Weights file name in the package's ``weights/`` folder.
        mean: Per-channel RGB mean for normalisation (images scaled to [0, 1]).
        std: Per-channel RGB standard deviation.
        license: Licence of the weights.
        pos_embed: How position embeddings are resampled to other grids: ``"dino"`` (the
            official DINO rule) or ``"timm"``.
        model_kwargs: Extra keyword arguments for ``timm.create_model``, as ``(key, value)``
            pairs (e.g. a smaller depth for test backbones).
        random_weights: True for test backbones that are random by design.
        description: One line for listings.
        embed_dim: Channels ``C`` of the patch features ``[B, C, H/p, W/p]``.
        preset: Propagation protocol used when none is asked for (a name of
            :data:`dinotrack.config.PRESETS`): each family its paper's.
    """

    name: str
    timm_arch: str
    patch_size: int
    url: str | None = None
    hf_hub_id: str | None = None
    hf_filename: str = "model.safetensors"
    local_file: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    license: str = "unknown"
    pos_embed: str = "timm"
    model_kwargs: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    random_weights: bool = False
    description: str = ""
    embed_dim: int | None = None
    preset: str = "dino"

    @property
    def weights_filename(self) -> str | None:
        """File name of the downloaded weights in the hub cache."""
        return self.url.rsplit("/", 1)[-1] if self.url else None


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec, *, overwrite: bool = False) -> BackboneSpec:
    """Add ``spec`` to the registry and return it.

    Raises:
        ValueError: If the name is taken and ``overwrite`` is False.
    """
    if spec.name in _REGISTRY and not overwrite:
        raise InputError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_REGISTRY)


def find_backbone_spec(name: str) -> BackboneSpec | None:
    """The spec registered under ``name``, or None."""
    return _REGISTRY.get(name)


def get_backbone_spec(name: str) -> BackboneSpec:
    """Return the spec registered under ``name``.

    Raises:
        ValueError: For an unknown name; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        if name in RETIRED_MODELS:
            raise InputError(
                f"model {name!r} is no longer shipped; it was replaced by "
                f"{RETIRED_MODELS[name]!r} (better held-out accuracy, "
                f"see dinotrack/weights/{RETIRED_MODELS[name]}.md)"
            ) from None
        known = ", ".join(list_backbones())
        raise InputError(f"unknown model {name!r}; known models: {known}") from None


def _dino(name: str, timm_arch: str, patch: int, dim: int, release: str) -> BackboneSpec:
    what = f"ViT-{'S' if dim == 384 else 'B'}/{patch}"
    return BackboneSpec(
        name=name,
        timm_arch=timm_arch,
        patch_size=patch,
        url=_DINO_URL.format(release),
        mean=IMAGENET_MEAN,
        std=DINO_VIDEO_PROTOCOL_STD,
        license="Apache-2.0",
        pos_embed="dino",
        description=f"DINO {what}, official release weights (Caron et al. 2021)",
        embed_dim=dim,
        preset="dino",
    )


def _dinov2(size: str, dim: int, registers: bool) -> BackboneSpec:
    """DINOv2 ViT-{S,B,L,g}/14, weights through timm's ``lvd142m`` tag on the Hugging Face hub.

    The official code resamples position embeddings as DINO does (bicubic, scale factor
    ``(grid + 0.1) / sqrt(N)``, no antialiasing): ``pos_embed="dino"``. Its only DAVIS figure
    (73.6 J&F for ViT-S/14) comes from the DINOv3 paper's protocol, the default here.
    """
    arch = {"s": "small", "b": "base", "l": "large", "g": "giant"}[size]
    reg = "_reg4" if registers else ""
    timm_arch = f"vit_{arch}_patch14{reg}_dinov2"
    with_reg = " with registers (Darcet et al. 2024)" if registers else " (Oquab et al. 2023)"
    return BackboneSpec(
        name=f"dinov2_vit{size}14{'_reg' if registers else ''}",
        timm_arch=timm_arch,
        patch_size=14,
        hf_hub_id=f"timm/{timm_arch}.lvd142m",
        license="Apache-2.0",
        pos_embed="dino",
        description=f"DINOv2 ViT-{size.upper() if size != 'g' else 'g'}/14{with_reg}",
        embed_dim=dim,
        preset="dinov3",
    )


def _dinov3(name: str, timm_arch: str, dim: int, what: str) -> BackboneSpec:
    """DINOv3 ViT/16 (RoPE, 4 registers), weights through timm's ``lvd1689m`` tag."""
    return BackboneSpec(
        name=name,
        timm_arch=timm_arch,
        patch_size=16,
        hf_hub_id=f"timm/{timm_arch}.lvd1689m",
        license=DINOV3_LICENSE,
        description=f"DINOv3 {what} (Simeoni et al. 2025)",
        embed_dim=dim,
        preset="dinov3",
    )


def _test_vit(name: str, timm_arch: str, patch: int, description: str, **extra) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        timm_arch=timm_arch,
        patch_size=patch,
        model_kwargs=(("embed_dim", 64), ("depth", 2), ("num_heads", 2), ("mlp_ratio", 2.0)),
        random_weights=True,
        license="Apache-2.0",
        description=description,
        embed_dim=64,
        **extra,
    )


for _spec in (
    _dino("dino_vits16", "vit_small_patch16_224", 16, 384, "dino_deitsmall16_pretrain"),
    _dino("dino_vits8", "vit_small_patch8_224", 8, 384, "dino_deitsmall8_pretrain"),
    _dino("dino_vitb16", "vit_base_patch16_224", 16, 768, "dino_vitbase16_pretrain"),
    _dino("dino_vitb8", "vit_base_patch8_224", 8, 768, "dino_vitbase8_pretrain"),
    *(
        _dinov2(size, dim, registers)
        for registers in (False, True)
        for size, dim in (("s", 384), ("b", 768), ("l", 1024), ("g", 1536))
    ),
    BackboneSpec(
        name=OFFLINE_MODEL,
        timm_arch="vit_tiny_patch16_224",
        patch_size=16,
        local_file=f"{OFFLINE_MODEL}.pth",
        model_kwargs=(("depth", 4),),
        pos_embed="dino",
        license="Apache-2.0 (trained on DAVIS-2016 videos, CC BY 4.0, and SAM 2 demo clips, "
        "Apache-2.0)",
        embed_dim=192,
        preset="offline",
        description="ViT-Ti/16 with 4 blocks, DINO-pretrained by dinotrack on 2 CPU cores "
        "without the DAVIS-2016 dev videos (shipped in the package, offline); a weak backbone, "
        "see dinotrack/weights/" + OFFLINE_MODEL + ".md",
    ),
    _dinov3("dinov3_vits16", "vit_small_patch16_dinov3", 384, "ViT-S/16"),
    _dinov3("dinov3_vits16plus", "vit_small_plus_patch16_dinov3", 384, "ViT-S+/16 (SwiGLU)"),
    _dinov3("dinov3_vitb16", "vit_base_patch16_dinov3", 768, "ViT-B/16"),
    _dinov3("dinov3_vitl16", "vit_large_patch16_dinov3", 1024, "ViT-L/16"),
    _dinov3("dinov3_vith16plus", "vit_huge_plus_patch16_dinov3", 1280, "ViT-H+/16 (SwiGLU)"),
    _dinov3("dinov3_vit7b16", "vit_7b_patch16_dinov3", 4096, "ViT-7B/16 (SwiGLU)"),
    _test_vit(
        "test_vit_tiny",
        "vit_small_patch8_224",
        8,
        "tiny random ViT/8 (2 blocks, 64 channels) for tests",
        pos_embed="dino",
    ),
    _test_vit(
        "test_vit_tiny16",
        "vit_small_patch16_224",
        16,
        "tiny random ViT/16 (2 blocks, 64 channels) for tests",
        pos_embed="dino",
    ),
    _test_vit(
        "test_dinov2_reg_tiny",
        "vit_small_patch14_reg4_dinov2",
        14,
        "tiny random DINOv2-style ViT/14 with 4 registers for tests",
        pos_embed="dino",
        preset="dinov3",
    ),
    _test_vit(
        "test_dinov3_tiny",
        "vit_small_patch16_dinov3",
        16,
        "tiny random DINOv3-style RoPE ViT/16 with 4 registers for tests",
        preset="dinov3",
    ),
):
    register_backbone(_spec)
del _spec
