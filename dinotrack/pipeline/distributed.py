"""Process-group setup from torchrun's environment, with a single-process fallback; shared by
``dinotrack segment --batch``, ``eval davis`` and ``pretrain``.

``torchrun`` (single node, several nodes, rendezvous) sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` for every process it starts. When none of
them is set the run is a single process without a process group; when only some are set the
environment is broken and :func:`setup` raises rather than guessing. NCCL is used for CUDA
devices and gloo for the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dinotrack.errors import InputError, UnavailableError
from dinotrack.models.features import resolve_device

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    Attributes:
        rank: Global rank, 0 for the main process.
        world_size: Number of processes.
        local_rank: Rank on this node (selects the GPU).
        device: The device this process runs on.
        backend: ``"nccl"``, ``"gloo"`` or ``None`` without a process group.
        owns_group: Whether :func:`setup` created the process group (and so must destroy it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    owns_group: bool

    @property
    def is_main(self) -> bool:
        """True on the process that writes summaries, checkpoints, logs and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process is active."""
        return self.world_size > 1


def read_env(env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """Rank, world size and local rank from torchrun's variables, or None when unset.

    Raises:
        RuntimeError: Some but not all of the variables are set, or they are not integers or
            are inconsistent.
    """
    env = os.environ if env is None else env
    present = [key for key in ENV_KEYS if key in env]
    if not present:
        return None
    missing = [key for key in ENV_KEYS if key not in env]
    if missing:
        raise UnavailableError(
            f"incomplete distributed environment: {', '.join(present)} set but "
            f"{', '.join(missing)} missing; launch with torchrun, or set all of "
            f"{', '.join(ENV_KEYS)}, or unset them all for a single process"
        )
    try:
        rank, world, local = (int(env[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError as exc:
        raise UnavailableError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc})"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UnavailableError(
            f"inconsistent distributed environment: RANK={rank} WORLD_SIZE={world}"
        )
    return rank, world, local


def setup(device: str = "auto") -> DistInfo:
    """Join the process group described by the environment, or run as a single process.

    A process group that already exists (created by the caller) is reused and left alone.

    Args:
        device: See :func:`dinotrack.models.features.resolve_device`.

    Returns:
        This process's place in the job and its device.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", 0))
        dev = resolve_device(device, local)
        return DistInfo(rank, world, local, dev, dist.get_backend(), owns_group=False)
    ranks = read_env()
    if ranks is None:
        return DistInfo(0, 1, 0, resolve_device(device), None, owns_group=False)
    rank, world, local = ranks
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        backend = "nccl"
        dist.init_process_group(backend, init_method="env://", device_id=dev)
    else:
        backend = "gloo"
        dist.init_process_group(backend, init_method="env://")
    return DistInfo(rank, world, local, dev, backend, owns_group=True)


def teardown(info: DistInfo) -> None:
    """Leave the process group if :func:`setup` created it."""
    if info.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_gather_objects(obj: object) -> list[object]:
    """Every process's ``obj``, in rank order (``[obj]`` for a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out: list[object] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    """Wait for every process (a no-op for a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Process ``src``'s ``obj`` on every process (``obj`` itself for a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def current_rank() -> tuple[int, int]:
    """``(rank, world size)`` of the active process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(count: int, rank: int, world_size: int) -> range:
    """The positions ``0..count-1`` that process ``rank`` of ``world_size`` takes: every
    ``world_size``-th one from ``rank`` (deterministic, and balanced within one item)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is not in a world of {world_size} processes")
    return range(rank, count, world_size)
