"""Training checkpoints: plain values and tensors, written atomically.

A checkpoint is a dict that ``torch.load(..., weights_only=True)`` reads: state dicts,
tensors, numbers, strings, lists and dicts only (no pickled objects). It is written to a
temporary file in the same folder, flushed to disk and renamed over the previous one, so a
run killed while saving keeps its last complete checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.atomic import atomic_output
from dinotrack.models.checkpoints import check_unpacked_size, load_failure

CHECKPOINT_NAME = "checkpoint.pth"
EXPORT_NAME = "backbone.pth"
FORMAT = "dinotrack.pretrain"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format tags) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a readable pretraining checkpoint, or one without an entry that
            resuming reads (e.g. only ``format`` and ``version``).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    check_unpacked_size(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types on damaged files
        raise InputError(
            f"cannot read checkpoint {path}: {load_failure(exc, path)}; delete it to start the "
            "run afresh"
        ) from exc
    return check_checkpoint(ckpt, path)


def check_checkpoint(ckpt: Any, path: str | os.PathLike) -> dict[str, Any]:
    """``ckpt``, read from ``path``, if it is a whole pretraining checkpoint of this version.

    Raises:
        ValueError: Not a pretraining checkpoint, another version, or an entry that resuming
            reads missing or of the wrong type.
    """
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"{path} is not a dinotrack pretraining checkpoint")
    if ckpt.get("version") != VERSION:
        raise InputError(f"{path} has checkpoint version {ckpt.get('version')}, not {VERSION}")
    wrong = [key for key, kind in _ENTRIES.items() if not _is(ckpt.get(key), kind)]
    if wrong:
        raise InputError(
            f"{path} is an incomplete or damaged pretraining checkpoint (missing or wrong: "
            f"{', '.join(wrong)}); delete it to start the run afresh"
        )
    return ckpt


_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "student": dict,
    "teacher": dict,
    "optimizer": dict,
    "loss": dict,
    "step": int,
    "epoch": int,
    "rng": list,
    "config": dict,
    "resolved": dict,
    "sources": list,
    "train_time_s": (int, float),
}
"""What resuming reads from a checkpoint, and the type of each entry."""


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def rng_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """This process's random state: the CPU generator and ``device``'s CUDA generator."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, torch.Tensor | None], device: torch.device) -> None:
    """Restore a state from :func:`rng_state` (the CUDA part only on a CUDA device)."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
