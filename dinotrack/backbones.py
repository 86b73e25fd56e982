"""Registry of named ViT backbones and their weights.

Every backbone is a timm ViT (``VisionTransformer``, or ``Eva`` for DINOv3's RoPE ViTs) built
with ``dynamic_img_size=True`` and no classifier. A :class:`BackboneSpec` names the timm
architecture, the patch size, where its weights come from (an official URL downloaded into
torch's hub cache, a timm pretrained tag on the Hugging Face hub downloaded into its cache, a
file shipped under ``weights/`` in this repository, or nothing for the random test backbones),
how images are normalised for it, its licence and the propagation preset of its paper.

Families: DINO (Caron et al. 2021), DINOv2 with and without registers (Oquab et al. 2023;
Darcet et al. 2024) and DINOv3 (Simeoni et al. 2025).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import re
import socket
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinotrack.atomic_files import atomic_output
from dinotrack.checkpoints import export_metadata, load_into, read_checkpoint
from dinotrack.config import DINO_VIDEO_PROTOCOL_STD, IMAGENET_MEAN, IMAGENET_STD

_DINO_URL = "https://dl.fbaipublicfiles.com/dino/{0}/{0}.pth"
DINOV3_LICENSE = "DINOv3 License"
"""The DINOv3 weights' own licence (https://ai.meta.com/resources/models-and-libraries/dinov3-license/)."""
_REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
# The trained backbone that ships in weights/ and so works without a network.
OFFLINE_MODEL = "dinotrack_vitt16_v2"


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
        local_file: Weights file name under the repository's ``weights/`` folder.
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
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    """Return the spec registered under ``name``.

    Raises:
        ValueError: For an unknown name; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_backbones())
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None


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
        "without the DAVIS-2016 dev videos (weights/, offline); a weak backbone, see "
        "weights/" + OFFLINE_MODEL + ".md",
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


def create_model(spec: BackboneSpec, **overrides: Any) -> nn.Module:
    """Build the network of ``spec`` with freshly initialised weights.

    Args:
        spec: The backbone description.
        **overrides: Extra ``timm.create_model`` arguments (e.g. ``drop_path_rate``).

    Returns:
        A timm ``VisionTransformer`` without classifier head, accepting any image size that is
        a multiple of the patch size.
    """
    import timm

    kwargs: dict[str, Any] = dict(spec.model_kwargs)
    kwargs.update(patch_size=spec.patch_size, num_classes=0, dynamic_img_size=True)
    kwargs.update(overrides)
    return timm.create_model(spec.timm_arch, pretrained=False, **kwargs)


def hub_weights_path(spec: BackboneSpec) -> Path:
    """Where the weights of ``spec`` live once downloaded, and where a file placed by hand is
    found: torch's hub cache for an official URL, the Hugging Face hub cache (revision
    ``main``) for a timm pretrained tag."""
    if spec.hf_hub_id is not None:
        from huggingface_hub import constants

        folder = "models--" + spec.hf_hub_id.replace("/", "--")
        return Path(constants.HF_HUB_CACHE) / folder / "snapshots" / "main" / spec.hf_filename
    if spec.weights_filename is None:
        raise ValueError(f"backbone {spec.name!r} has no download URL")
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.weights_filename


def download_weights(spec: BackboneSpec, progress: bool = True) -> Path:
    """Return the local path of the official weights of ``spec``, downloading them if needed.

    Raises:
        RuntimeError: When the download fails (offline, blocked, bad URL); the message names
            the URL or hub repository, the cache path where the file can be placed by hand, and
            ``--weights``.
    """
    if spec.hf_hub_id is not None:
        return _download_from_hf_hub(spec)
    path = hub_weights_path(spec)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(path) as tmp:
            torch.hub.download_url_to_file(spec.url, str(tmp), progress=progress)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeError(
            f"could not download the weights of {spec.name!r} from {spec.url} ({exc}). "
            f"Download that file by hand and place it at {path}, pass a local file with "
            "--weights PATH (weights=PATH in Python), or use the model shipped with "
            f"dinotrack that needs no network: --model {OFFLINE_MODEL}."
        ) from exc
    return path


def _check_hub_reachable(endpoint: str) -> None:
    """Fail at once, instead of after the hub client's retries, when the hub's host name does
    not resolve and no proxy is set (a machine without a network)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    host = urllib.parse.urlsplit(endpoint).hostname
    if host is None:
        return
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        raise OSError(f"cannot resolve {host}: no network?") from exc


def _download_from_hf_hub(spec: BackboneSpec) -> Path:
    """The weights file of a timm pretrained tag, from (or into) the Hugging Face hub cache."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    by_hand = hub_weights_path(spec)
    repo, name = spec.hf_hub_id, spec.hf_filename
    cached = try_to_load_from_cache(repo, name, cache_dir=constants.HF_HUB_CACHE)
    if isinstance(cached, str):
        return Path(cached)
    try:
        _check_hub_reachable(constants.ENDPOINT)
        # The hub client logs a line per retry (five, over ~20 s, when offline): the error
        # below says it once.
        hub_log = logging.getLogger("huggingface_hub")
        level = hub_log.level
        hub_log.setLevel(logging.ERROR)
        try:
            return Path(hf_hub_download(repo, name, cache_dir=constants.HF_HUB_CACHE))
        finally:
            hub_log.setLevel(level)
    except Exception as exc:  # the hub client raises many types (offline, HTTP, DNS, timeouts)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeError(
            f"could not download the weights of {spec.name!r} ({name} of the Hugging Face hub "
            f"repository {repo}: {reason}). Download https://huggingface.co/{repo}/resolve/"
            f"main/{name} by hand and place it at {by_hand}, pass a local file (also an "
            "official release .pth) with --weights PATH (weights=PATH in Python), or use the "
            f"model shipped with dinotrack that needs no network: --model {OFFLINE_MODEL}."
        ) from exc


_EXPORT_ARCH = re.compile(r"vit_(tiny|small|base|large)_patch\d{1,2}_(224|384|518|dinov2)")
"""timm architectures an export may name besides the registry's (what ``pretrain`` builds)."""

_EXPORT_KWARGS: dict[str, tuple[type | tuple[type, ...], float, float]] = {
    "embed_dim": (int, 8, 4096),
    "depth": (int, 1, 64),
    "num_heads": (int, 1, 64),
    "mlp_ratio": ((int, float), 0.25, 16.0),
    "reg_tokens": (int, 0, 16),
    "img_size": (int, 16, 4096),
    "init_values": ((int, float), 0.0, 10.0),
    "qkv_bias": (bool, 0, 1),
    "class_token": (bool, 0, 1),
    "no_embed_class": (bool, 0, 1),
}
"""``model_kwargs`` an export may record: type and range of each (nothing that names a file,
and sizes that fit in memory)."""

_EXPORT_MAX_PARAMETERS = 2_000_000_000


def check_export_record(meta: Any, source: str = "the weights file") -> dict[str, Any]:
    """Checks the architecture record of a dinotrack export before anything is built.

    The record comes from a file, so it is not trusted: the architecture must be one the
    registry uses or a ViT that ``pretrain`` builds, ``model_kwargs`` may hold only the known
    keys of :data:`_EXPORT_KWARGS` with values of their type and range (none naming a file),
    and the network must stay under 2 billion parameters.

    Args:
        meta: The record (``ckpt["backbone"]``).
        source: How messages name the file.

    Returns:
        ``meta`` (a dict).

    Raises:
        ValueError: A missing field, a wrong type, an unknown architecture or key, or a size
            out of range; the message names the field.
    """

    def bad(what: str) -> ValueError:
        return ValueError(f"{source} is a dinotrack export with a bad architecture record: {what}")

    if not isinstance(meta, dict):
        raise bad(f"expected a dict, got {type(meta).__name__}")
    for key, kind in (("timm_arch", str), ("patch_size", int), ("model_kwargs", dict)):
        if key not in meta:
            raise bad(f"{key!r} is missing")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise bad(f"{key!r} must be a {kind.__name__}, got {type(meta[key]).__name__}")
    arch = meta["timm_arch"]
    # The hub-hosted families (DINOv2, DINOv3) are not what exports hold: their architectures
    # (ViT-g, 7B, ...) are not accepted from a file.
    known = {spec.timm_arch for spec in _REGISTRY.values() if spec.hf_hub_id is None}
    if arch not in known and not _EXPORT_ARCH.fullmatch(arch):
        raise bad(f"unknown timm architecture {arch[:80]!r}; expected one of {sorted(known)}")
    if not 1 <= meta["patch_size"] <= 64:
        raise bad(f"patch_size {meta['patch_size']} is not in 1..64")
    for key, value in meta["model_kwargs"].items():
        if key not in _EXPORT_KWARGS:
            raise bad(
                f"model_kwargs key {str(key)[:80]!r} is not allowed ({sorted(_EXPORT_KWARGS)})"
            )
        kind, low, high = _EXPORT_KWARGS[key]
        if kind is not bool and isinstance(value, bool) or not isinstance(value, kind):
            raise bad(f"model_kwargs {key} must be a {getattr(kind, '__name__', 'number')}")
        if not low <= value <= high:
            raise bad(f"model_kwargs {key} = {value} is not in {low}..{high}")
    for key in ("name", "pos_embed", "license", "description"):
        if key in meta and not isinstance(meta[key], str):
            raise bad(f"{key!r} must be a string")
    if meta.get("pos_embed", "timm") not in ("dino", "timm"):
        raise bad(f"pos_embed must be 'dino' or 'timm', got {meta['pos_embed'][:40]!r}")
    for key in ("mean", "std"):
        value = meta.get(key, (0.5, 0.5, 0.5))
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise bad(f"{key!r} must be 3 numbers")
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in value):
            raise bad(f"{key!r} must be 3 finite numbers")
    if any(float(x) <= 0 for x in meta.get("std", (1, 1, 1))):
        raise bad("'std' must be positive")
    kwargs = meta["model_kwargs"]
    base = _REGISTRY.get(meta.get("name", ""))
    dims = dict(base.model_kwargs) if base is not None else {}
    dims.update(kwargs)
    width, depth = int(dims.get("embed_dim", 1024)), int(dims.get("depth", 24))
    if width % int(dims.get("num_heads", 1)):
        raise bad(f"embed_dim {width} is not a multiple of num_heads {dims['num_heads']}")
    parameters = depth * width * width * (4 + 2 * float(dims.get("mlp_ratio", 4.0)))
    if parameters > _EXPORT_MAX_PARAMETERS:
        raise bad(f"about {parameters / 1e9:.1f} billion parameters, more than the 2 allowed")
    return meta


def spec_from_checkpoint(meta: dict[str, Any]) -> BackboneSpec:
    """Rebuild a spec from the metadata stored in a dinotrack backbone export.

    Raises:
        ValueError: The record fails :func:`check_export_record`.
    """
    check_export_record(meta)
    name = meta.get("name", "exported")
    base = _REGISTRY.get(name)
    fields = {f.name for f in dataclasses.fields(BackboneSpec)} - {
        "url",
        "hf_hub_id",
        "hf_filename",
        "local_file",
        "random_weights",
    }  # an export names no file to fetch or read, and holds real weights
    values = {k: v for k, v in meta.items() if k in fields}
    values["model_kwargs"] = tuple(sorted((k, v) for k, v in dict(meta["model_kwargs"]).items()))
    for key in ("mean", "std"):
        if key in values:
            values[key] = tuple(float(x) for x in values[key])
    if base is not None:
        return dataclasses.replace(
            base, url=None, hf_hub_id=None, local_file=None, random_weights=False, **values
        )
    return BackboneSpec(**values)


def resolve_spec(
    model: str | None, ckpt: dict[str, Any] | None = None, source: str = "the weights file"
) -> BackboneSpec:
    """Decide which architecture to build from a model name and/or a loaded checkpoint.

    A dinotrack export (from ``pretrain/``) records its architecture; when ``model`` is None it
    is taken from there, and a ``model`` that disagrees with it is an error. Otherwise the
    default is ``dino_vits8``.
    """
    meta = export_metadata(ckpt) if ckpt is not None else None
    if meta is None:
        return get_backbone_spec(model or "dino_vits8")
    spec = spec_from_checkpoint(meta)
    if model is not None:
        named = get_backbone_spec(model)
        if (named.timm_arch, named.patch_size, dict(named.model_kwargs)) != (
            spec.timm_arch,
            spec.patch_size,
            dict(spec.model_kwargs),
        ):
            raise ValueError(
                f"{source} holds a {spec.name!r} backbone "
                f"({spec.timm_arch}, patch {spec.patch_size}), which does not match "
                f"--model {model}; leave out --model to use the file's architecture"
            )
    return spec


def load_backbone(
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    *,
    pretrained: bool = True,
    progress: bool = True,
    **overrides: Any,
) -> tuple[nn.Module, BackboneSpec]:
    """Build a backbone and load its weights.

    Args:
        model: Registry name; None means the architecture recorded in ``weights`` or, failing
            that, ``dino_vits8``.
        weights: Path of a checkpoint to load instead of the official weights. Official DINO,
            DINOv2 and DINOv3 release files, official full DINO training checkpoints, timm state
            dicts (``.pth`` or ``.safetensors``) and dinotrack ``pretrain`` exports are
            recognised.
        pretrained: If False, keep the random initialisation (explicit opt-in, for training
            from scratch and benchmarks). Test backbones are always random.
        progress: Show a download progress bar.
        **overrides: Extra ``timm.create_model`` arguments.

    Returns:
        ``(network in eval mode on the CPU, spec)``.

    Raises:
        ValueError: Unknown model, or a checkpoint that does not fit the architecture.
        FileNotFoundError: ``weights`` does not exist.
        RuntimeError: The official weights could not be downloaded.
    """
    ckpt = read_checkpoint(weights) if weights is not None else None
    spec = resolve_spec(model, ckpt, source=str(weights))
    with torch.random.fork_rng(devices=[]):
        if ckpt is None and spec.random_weights:
            torch.manual_seed(0)  # test backbones are random, but the same on every run
        net = create_model(spec, **overrides)
    source: Path | None = None
    if ckpt is not None:
        load_into(net, ckpt, weights)
    elif not pretrained or spec.random_weights:
        pass
    elif spec.local_file is not None:
        source = _REPO_WEIGHTS / spec.local_file
        if not source.is_file():
            raise FileNotFoundError(
                f"weights of {spec.name!r} are missing: expected {source} "
                "(shipped with the dinotrack repository)"
            )
    elif spec.url is not None or spec.hf_hub_id is not None:
        source = download_weights(spec, progress=progress)
    else:
        raise ValueError(f"backbone {spec.name!r} has no weights; pass weights=PATH")
    if source is not None:
        load_into(net, read_checkpoint(source), source)
    return net.eval(), spec


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, for recording which weights produced a result."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
