"""Distributed helpers of pretraining; process-group setup lives in
:mod:`dinotrack.pipeline.distributed` (``setup``, ``teardown``, ``read_env``...), re-exported
here."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from dinotrack.models.features import resolve_device
from dinotrack.pipeline.distributed import (
    ENV_KEYS,
    DistInfo,
    all_gather_objects,
    read_env,
    setup,
    teardown,
)

__all__ = [
    "ENV_KEYS",
    "DistInfo",
    "all_gather_objects",
    "all_reduce_mean",
    "any_rank",
    "configure_logging",
    "read_env",
    "resolve_device",
    "setup",
    "teardown",
]


def configure_logging(info: DistInfo, name: str = "pretrain") -> None:
    """Silence all but errors of logger ``name`` on every process except rank 0."""
    if not info.is_main:
        logging.getLogger(name).setLevel(logging.ERROR)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over all processes, in place; a no-op for a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (``flag`` itself for a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())
    return flag
