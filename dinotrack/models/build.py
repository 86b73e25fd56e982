"""Building a registered backbone and loading its weights (the one factory: spec -> network ->
strict load -> eval mode), and recognising the architecture a weights file records.

An export written by ``dinotrack pretrain`` records its architecture (the export record); it
is validated before timm builds anything, so that a small file cannot ask for a huge network.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinotrack.errors import InputError, MissingFileError
from dinotrack.models.checkpoints import (
    checkpoint_shape,
    export_metadata,
    load_into,
    read_checkpoint,
    remap_state_dict,
)
from dinotrack.models.hub import download_weights
from dinotrack.models.registry import (
    SHIPPED_WEIGHTS,
    BackboneSpec,
    find_backbone_spec,
    get_backbone_spec,
    list_backbones,
)


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
    and the network must stay under 2 billion parameters, counting the transformer blocks, the
    patch embedding and the position embedding (``(img_size / patch_size)**2`` tokens).

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
        return InputError(f"{source} is a dinotrack export with a bad architecture record: {what}")

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
    specs = [get_backbone_spec(name) for name in list_backbones()]
    known = {spec.timm_arch for spec in specs if spec.hf_hub_id is None}
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
    base = find_backbone_spec(meta.get("name", ""))
    dims = dict(base.model_kwargs) if base is not None else {}
    dims.update(kwargs)
    width, depth = int(dims.get("embed_dim", 1024)), int(dims.get("depth", 24))
    if width % int(dims.get("num_heads", 1)):
        raise bad(f"embed_dim {width} is not a multiple of num_heads {dims['num_heads']}")
    patch = meta["patch_size"]
    tokens = (_img_size(arch, dims) // patch) ** 2 + 1 + int(dims.get("reg_tokens", 0))
    parameters = (
        depth * width * width * (4 + 2 * float(dims.get("mlp_ratio", 4.0)))  # blocks
        + 3 * patch * patch * width  # patch embedding
        + tokens * width  # position embedding
    )
    if parameters > _EXPORT_MAX_PARAMETERS:
        raise bad(
            f"about {parameters / 1e9:.1f} billion parameters ({tokens} position tokens of "
            f"width {width} among them), more than the 2 allowed"
        )
    return meta


def _img_size(arch: str, dims: dict[str, Any]) -> int:
    """The image size a timm ViT is built for: ``img_size``, else the one its name ends with
    (``vit_small_patch8_224``), else timm's DINOv2 size, 518."""
    if "img_size" in dims:
        return int(dims["img_size"])
    size = re.search(r"_(\d+)$", arch)
    return int(size[1]) if size else 518


def spec_from_checkpoint(meta: dict[str, Any]) -> BackboneSpec:
    """Rebuild a spec from the metadata stored in a dinotrack backbone export.

    Raises:
        ValueError: The record fails :func:`check_export_record`.
    """
    check_export_record(meta)
    name = meta.get("name", "exported")
    base = find_backbone_spec(name)
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
            raise InputError(
                f"{source} holds a {spec.name!r} backbone "
                f"({spec.timm_arch}, patch {spec.patch_size}), which does not match "
                f"model={model}; leave out model= to use the file's architecture",
                parameter="model",
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
        try:
            load_into(net, ckpt, weights)
        except ValueError as error:
            if model is None and export_metadata(ckpt) is None:  # the default was a guess
                raise InputError(_not_the_default(ckpt, spec, weights, error)) from None
            raise
    elif not pretrained or spec.random_weights:
        pass
    elif spec.local_file is not None:
        source = SHIPPED_WEIGHTS / spec.local_file
        if not source.is_file():
            raise MissingFileError(
                f"weights of {spec.name!r} are missing: expected {source} "
                "(shipped inside the dinotrack package: reinstall it)"
            )
    elif spec.url is not None or spec.hf_hub_id is not None:
        source = download_weights(spec, progress=progress)
    else:
        raise InputError(f"backbone {spec.name!r} has no weights; pass weights=PATH")
    if source is not None:
        load_into(net, read_checkpoint(source), source)
    return net.eval(), spec


def _not_the_default(
    ckpt: dict[str, Any], spec: BackboneSpec, weights: str | os.PathLike, error: ValueError
) -> str:
    """Why weights given without a model name do not load into the default model, and which
    registered models they fit (same patch size, width and depth, and the same tensor names)."""
    found, default = checkpoint_shape(ckpt), _shape(_meta_model(spec))
    if found is None or found == default:
        return str(error)
    fitting = []
    for name in list_backbones():
        if get_backbone_spec(name).patch_size != found[0]:
            continue  # not built at all
        net = _meta_model(get_backbone_spec(name))
        if _shape(net) == found and _same_names(ckpt, net):
            fitting.append(name)
    fits = (
        f"which fits {', '.join(fitting)}: pass that name as model=NAME"
        if fitting
        else "which fits no registered model (see `dinotrack models`)"
    )
    return (
        f"weights {weights} do not fit the default model {spec.name} (patch {default[0]}, width "
        f"{default[1]}, depth {default[2]}): the file holds patch {found[0]}, width {found[1]}, "
        f"depth {found[2]}, {fits}"
    )


def _same_names(ckpt: dict[str, Any], net: nn.Module) -> bool:
    """Whether a checkpoint, remapped for ``net``, holds exactly ``net``'s tensor names."""
    try:
        return set(remap_state_dict(ckpt, net)) == set(net.state_dict())
    except ValueError:  # e.g. a position embedding of another width
        return False


@functools.cache
def _meta_model(spec: BackboneSpec) -> nn.Module:
    """A spec's network on the meta device: its shapes without memory or weights."""
    with torch.device("meta"):
        return create_model(spec)


def _shape(net: nn.Module) -> tuple[int, int, int]:
    """``(patch size, width, depth)`` of a timm ViT."""
    proj = net.patch_embed.proj.weight
    return int(proj.shape[-1]), int(proj.shape[0]), len(net.blocks)
