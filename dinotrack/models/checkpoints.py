"""Reading, recognising and writing backbone checkpoints (one idea: a weights file in, a
checked timm state dict out, and back; hence its length).

Recognised families (each remapped to the keys of a timm ``VisionTransformer``):

* official DINO backbone files (``dino_deitsmall8_pretrain.pth``): already timm's keys;
* official DINO full training checkpoints: ``teacher``/``student`` entries whose keys carry
  ``module.`` and ``backbone.`` prefixes, plus projection-head weights (ignored);
* official DINOv2 backbone files (facebookresearch/dinov2 ``DinoVisionTransformer``): the
  ``mask_token`` is dropped; with registers, ``register_tokens`` become timm's ``reg_token`` and
  the class token's position embedding is folded into ``cls_token`` (timm's ``reg4`` models add
  positions to the patches only); ViT-g's SwiGLU ``mlp.w12``/``mlp.w3`` become ``fc1``/``fc2``;
* official DINOv3 backbone files (facebookresearch/dinov3, to timm's ``Eva``): ``storage_tokens``
  become ``reg_token``, ``ls1/ls2.gamma`` ``gamma_1/gamma_2``, SwiGLU ``w1/w2/w3``
  ``fc1_g/fc1_x/fc2``; the RoPE ``periods`` (recomputed by timm), ``mask_token``, the
  ``bias_mask`` buffers and the training-only ``local_cls_norm`` are dropped; the masked
  ``qkv.bias`` (its key third is always masked out) is split into ``q_bias``/``v_bias`` or,
  for timm's bias-free architectures, must be zero;
* timm state dicts, bare or wrapped in ``state_dict``/``state_dict_ema``/``model``, saved with
  ``torch.save`` or as ``.safetensors``;
* dinotrack backbone exports written by :func:`save_backbone_export` (``pretrain/`` writes
  these); they also record the architecture, so no model name is needed to load them.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.atomic import atomic_output
from dinotrack.io.images import check_input_path

EXPORT_FORMAT = "dinotrack.backbone"
EXPORT_VERSION = 1

_WRAPPER_KEYS = ("teacher", "state_dict_ema", "state_dict", "model", "student")
_PREFIXES = ("module.", "_orig_mod.", "backbone.")
_IGNORED_PREFIXES = ("head.", "head_drop.", "mask_token", "fc_norm.")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``) onto the CPU.

    Official DINO training checkpoints pickle an ``argparse.Namespace``; that one class is
    allowed, nothing else. A file in torch's zip format is checked before it is read: what
    its entries unpack to (known from the zip directory) may not exceed what it stores by
    more than :data:`UNPACK_SLACK_BYTES`, so a small compressed file cannot allocate gigabytes.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a readable PyTorch checkpoint holding a dict, would unpack
            to far more than its size, or holds pickled code (never run).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"weights path {path} is a directory; name the checkpoint file")
    if not os.path.lexists(path):
        raise MissingFileError(f"weights file not found: {path}")
    check_input_path(path, "weights file")  # a FIFO would block torch.load forever
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    check_unpacked_size(path, "weights file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            # A bare pickle draws torch's advice to file an issue; the error below says it all.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types on damaged files
        raise InputError(f"cannot read weights file {path}: {load_failure(exc, path)}") from exc
    if not isinstance(ckpt, dict):
        raise InputError(f"weights file {path} holds a {type(ckpt).__name__}, not a state dict")
    return ckpt


UNPACK_SLACK_BYTES = 64 << 20
"""How much more than twice its own size a zip-format checkpoint may unpack to. ``torch.save``
stores tensors uncompressed, so real weights unpack to about their file size."""


def check_unpacked_size(path: str | os.PathLike, what: str = "checkpoint") -> None:
    """Refuses a zip-format checkpoint whose entries unpack to more than twice its size plus
    :data:`UNPACK_SLACK_BYTES` (a compressed bomb), from the zip directory, before reading.

    Raises:
        ValueError: The entries would unpack to too much.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):  # not a zip: torch.load reports it
        return
    size = path.stat().st_size
    if unpacked > 2 * size + UNPACK_SLACK_BYTES:
        raise InputError(
            f"{what} {path} is refused: its entries unpack to {unpacked / 2**30:.2f} GiB from a "
            f"{size / 2**20:.1f} MiB file (torch.save stores tensors uncompressed, so this is a "
            "compressed bomb, not weights)"
        )


_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)")
_SAFE_MODULES = ("torch", "collections", "_codecs", "argparse", "numpy")


def load_failure(error: BaseException, path: str | os.PathLike | None = None) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in one line, without torch's
    paragraph (whose advice, loading with ``weights_only=False``, would run the file's code).

    Args:
        error: What ``torch.load`` raised.
        path: The file, scanned (never unpickled) for the code its pickle refers to when the
            error does not name it.
    """
    text = str(error)
    found = _GLOBAL.search(text)
    code = found[1] if found else _pickled_code(Path(path)) if path is not None else None
    if code is not None:
        return (
            f"refused: it holds pickled code ({code}), which is never run (weights_only); a "
            "checkpoint must hold tensors and plain values only"
        )
    if text.startswith("Weights only load failed") or isinstance(error, pickle.UnpicklingError):
        return "not a PyTorch checkpoint or corrupt (a damaged file, or another kind of file)"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"not a PyTorch checkpoint or corrupt ({first[:200]})"


def _pickled_code(path: Path) -> str | None:
    """The first global a checkpoint's pickle refers to outside torch's and the standard
    containers' (e.g. ``posix.system``), found by reading its opcodes, never by unpickling;
    None when there is none or the file cannot be scanned."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            with open(path, "rb") as handle:
                data = handle.read(16 << 20)
    except (OSError, StopIteration, zipfile.BadZipFile, ValueError):
        return None
    strings: list[str] = []
    stream = io.BytesIO(data)
    try:
        while stream.tell() < len(data):  # the legacy format holds several pickles in a row
            for opcode, arg, _ in pickletools.genops(stream):
                if isinstance(arg, str):
                    strings.append(arg)
                if opcode.name in ("GLOBAL", "INST"):
                    name = str(arg).replace(" ", ".")
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    name = f"{strings[-2]}.{strings[-1]}"
                else:
                    continue
                if name.split(".")[0] not in _SAFE_MODULES:
                    return name
    except Exception:  # the tensor bytes after a legacy pickle are not opcodes
        pass
    return None


def _read_safetensors(path: Path) -> dict[str, Any]:
    """A ``.safetensors`` file (the Hugging Face hub's format; tensors only, nothing to run)."""
    from safetensors.torch import load_file

    try:
        return dict(load_file(path, device="cpu"))
    except Exception as exc:  # safetensors raises its own error types on damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"cannot read weights file {path}: not a safetensors file or corrupt ({reason})"
        ) from exc


def export_metadata(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The architecture record of a dinotrack export, or None for other checkpoints."""
    if ckpt.get("format") != EXPORT_FORMAT:
        return None
    meta = ckpt.get("backbone")
    if not isinstance(meta, dict):
        raise InputError(
            "the weights file is a dinotrack export without its architecture record "
            f"('backbone' is {type(meta).__name__}); it is damaged or not written by dinotrack"
        )
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise InputError(
            "the weights file is a dinotrack export whose 'state_dict' is not a dict of "
            "tensors; it is damaged or not written by dinotrack"
        )
    return dict(meta)


def checkpoint_shape(ckpt: dict[str, Any]) -> tuple[int, int, int] | None:
    """``(patch size, width, depth)`` of the ViT whose tensors a checkpoint holds, read from its
    patch embedding and its block numbers; None when it holds no patch embedding."""
    state = {_strip_prefix(k): v for k, v in _unwrap(ckpt).items() if isinstance(v, torch.Tensor)}
    proj = state.get("patch_embed.proj.weight")
    if proj is None or proj.dim() != 4:
        return None
    blocks = {key.split(".")[1] for key in state if key.startswith("blocks.")}
    return int(proj.shape[-1]), int(proj.shape[0]), len(blocks)


def _strip_prefix(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def _unwrap(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Find the backbone's tensors inside a (possibly wrapped) checkpoint."""
    if ckpt.get("format") == EXPORT_FORMAT:
        return ckpt["state_dict"]
    for key in _WRAPPER_KEYS:  # the teacher wins over the student in DINO training checkpoints
        inner = ckpt.get(key)
        if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return ckpt


def remap_state_dict(ckpt: dict[str, Any], net: nn.Module) -> dict[str, torch.Tensor]:
    """Turn any recognised checkpoint into a state dict for the timm network ``net``.

    Prefixes are stripped only where they begin a key; projection heads, DINOv2's mask token
    and classifier weights are dropped; a position embedding trained at another image size is
    resampled to ``net``'s grid.

    Args:
        ckpt: The loaded checkpoint dict.
        net: The timm ``VisionTransformer`` that will receive the weights.

    Returns:
        A state dict whose keys are meant to match ``net.state_dict()`` exactly.
    """
    state: dict[str, torch.Tensor] = {}
    for key, value in _unwrap(ckpt).items():
        if not isinstance(value, torch.Tensor):
            continue
        key = _strip_prefix(key)
        if key.startswith(_IGNORED_PREFIXES):
            continue
        state[key] = value
    if "pos_embed" in state:  # before a family's conversion slices it
        _check_pos_embed(state["pos_embed"], net)
    if "storage_tokens" in state:
        state = _from_official_dinov3(state, net)
    elif "register_tokens" in state:
        state = _from_official_dinov2_registers(state)
    state = {_rename(k, _DINOV2_RENAMES): v for k, v in state.items()}
    target = net.state_dict()
    pos = state.get("pos_embed")
    if pos is not None and "pos_embed" in target and pos.shape != target["pos_embed"].shape:
        state["pos_embed"] = _resample_pos_embed(pos, net)
    return state


def _check_pos_embed(pos: torch.Tensor, net: nn.Module, prefix: int | None = None) -> None:
    """A position embedding ``[1, tokens, width]`` with ``net``'s width; with ``prefix``, also
    one that can be resampled: ``prefix`` tokens and then a square grid of patches.

    Raises:
        ValueError: Another shape; the message gives it and the expected one.
    """
    target = net.state_dict().get("pos_embed")
    width = int(target.shape[-1]) if target is not None else None
    shape = tuple(pos.shape)
    fits = len(shape) == 3 and shape[0] == 1 and shape[1] >= 1 and width in (None, shape[2])
    if fits and prefix is not None:
        grid = shape[1] - prefix
        fits = grid >= 1 and math.isqrt(grid) ** 2 == grid
    if not fits:
        tokens = "tokens" if prefix is None else f"{prefix} + a square number of tokens"
        raise InputError(
            f"pos_embed has shape {list(shape)}, expected [1, {tokens}, {width or 'width'}]: the "
            "file is damaged or holds another architecture"
        )


def _rename(key: str, renames: tuple[tuple[re.Pattern, str], ...]) -> str:
    for pattern, replacement in renames:
        key = pattern.sub(replacement, key)
    return key


# DINOv2 ViT-g's packed SwiGLU (``w12`` = both input projections, ``w3`` = output) is timm's
# ``SwiGLUPacked`` ``fc1``/``fc2``.
_DINOV2_RENAMES = (
    (re.compile(r"^(blocks\.\d+)\.mlp\.w12\."), r"\1.mlp.fc1."),
    (re.compile(r"^(blocks\.\d+)\.mlp\.w3\."), r"\1.mlp.fc2."),
)


def _from_official_dinov2_registers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official DINOv2 file with registers, in the layout of timm's ``*_reg4_dinov2``.

    The official model adds ``pos_embed[:, :1]`` to the class token and ``pos_embed[:, 1:]`` to
    the patches, then inserts the registers (no position) after the class token; timm adds
    positions to the patches only, so the class token's share is folded into ``cls_token``.
    """
    state = dict(state)
    pos = state.pop("pos_embed")
    state["reg_token"] = state.pop("register_tokens")
    state["cls_token"] = state["cls_token"] + pos[:, :1]
    state["pos_embed"] = pos[:, 1:]
    return state


_DINOV3_RENAMES = (
    (re.compile(r"^storage_tokens$"), "reg_token"),
    (re.compile(r"^(blocks\.\d+)\.ls1\.gamma$"), r"\1.gamma_1"),
    (re.compile(r"^(blocks\.\d+)\.ls2\.gamma$"), r"\1.gamma_2"),
    (re.compile(r"^(blocks\.\d+)\.mlp\.w1\."), r"\1.mlp.fc1_g."),
    (re.compile(r"^(blocks\.\d+)\.mlp\.w2\."), r"\1.mlp.fc1_x."),
    (re.compile(r"^(blocks\.\d+)\.mlp\.w3\."), r"\1.mlp.fc2."),
)
_DINOV3_DROPPED = re.compile(r"^rope_embed\.periods$|\.bias_mask$|^local_cls_norm\.")
_QKV_BIAS = re.compile(r"^(blocks\.\d+\.attn)\.qkv\.bias$")


def _from_official_dinov3(
    state: dict[str, torch.Tensor], net: nn.Module
) -> dict[str, torch.Tensor]:
    """An official DINOv3 file in the layout of timm's ``*_dinov3`` (``Eva``) models.

    Raises:
        ValueError: Non-zero query or value biases for a timm architecture without biases
            (the ``*_dinov3_qkvb`` architectures keep them).
    """
    has_bias = {name for name, _ in net.named_parameters() if name.endswith(".attn.q_bias")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _DINOV3_DROPPED.search(key):
            continue
        qkv = _QKV_BIAS.match(key)
        if qkv is not None:
            q_bias, _, v_bias = value.chunk(3)  # the key bias is masked out by the official code
            if f"{qkv[1]}.q_bias" in has_bias:
                out[f"{qkv[1]}.q_bias"], out[f"{qkv[1]}.v_bias"] = q_bias, v_bias
            elif q_bias.any() or v_bias.any():
                raise InputError(
                    f"{key} holds non-zero query/value biases, but this architecture has none; "
                    "build the *_dinov3_qkvb timm architecture for these weights"
                )
            continue
        out[_rename(key, _DINOV3_RENAMES)] = value
    return out


def _resample_pos_embed(pos: torch.Tensor, net: nn.Module) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(net, "no_embed_class", False) else getattr(net, "num_prefix_tokens", 1)
    _check_pos_embed(pos, net, prefix)
    grid = net.patch_embed.grid_size
    return resample_abs_pos_embed(pos, new_size=list(grid), num_prefix_tokens=prefix)


def load_into(net: nn.Module, ckpt: dict[str, Any], source: str | os.PathLike) -> None:
    """Load ``ckpt`` into ``net`` strictly.

    Raises:
        ValueError: Missing, unexpected or mis-shaped keys; the message lists them.
    """
    try:
        state = remap_state_dict(ckpt, net)
    except ValueError as error:
        raise InputError(f"weights {source}: {error}") from None
    target = net.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in set(state) & set(target)
        if state[k].shape != target[k].shape
    )
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", mis_shaped),
        ):
            if keys:
                more = f" and {len(keys) - 6} more" if len(keys) > 6 else ""
                parts.append(f"{label}: {', '.join(keys[:6])}{more}")
        raise InputError(f"weights {source} do not fit this backbone: " + "; ".join(parts))
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
        raise InputError(
            f"weights {source} hold NaN or infinite values (in {broken[0]}{more}); the training "
            "that wrote them diverged or the file is damaged"
        )
    net.load_state_dict(state, strict=True)


def save_backbone_export(
    path: str | os.PathLike,
    net: nn.Module,
    backbone: dict[str, Any],
    info: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a backbone in the format ``dinotrack --weights`` loads, atomically.

    Args:
        path: Destination file.
        net: The timm ``VisionTransformer`` (without DINO head).
        backbone: Architecture record: ``name``, ``timm_arch``, ``patch_size``,
            ``model_kwargs`` (dict), and optionally ``mean``, ``std``, ``pos_embed``. Plain
            values only.
        info: Plain-value provenance (data, steps, wall time, ...).
        dtype: Store floating tensors in this dtype (e.g. ``torch.float16`` for shipping).

    Returns:
        The path written.
    """
    for key in ("name", "timm_arch", "patch_size", "model_kwargs"):
        if key not in backbone:
            raise InputError(f"backbone record needs {key!r}")
    state = {}
    for key, value in net.state_dict().items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        state[_strip_prefix(key)] = value.contiguous()
    payload = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "backbone": dict(backbone),
        "info": dict(info or {}),
        "state_dict": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path
