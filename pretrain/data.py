"""Training frames from videos and image folders, sampled afresh each epoch.

Every epoch draws ``frames_per_video`` random frame indices from each video (and takes each
image once), shuffles the whole list with a generator seeded by ``(seed, epoch)``, and deals it
out: sample ``k`` goes to rank ``k % world_size``, so ranks hold disjoint parts; each rank cuts
its part into batches, and batch ``j`` is loaded by DataLoader worker ``j % num_workers``. The
order of batches depends only on the seed, the epoch and the world size, so a run restarted in
the middle of an epoch continues with exactly the batches it would have seen.

Frames are decoded on demand, never whole videos, by :mod:`dinotrack.io.video` (the reading
layer of every command): decord's random access when it is installed, otherwise PyAV (seek to
the keyframe before the wanted frame and decode forward). A batch is a
:class:`FrameBatch` of uint8 frames padded to a common size; cropping and the other
augmentations run batched on the training device (:mod:`pretrain.augment`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.images import check_input_path
from dinotrack.io.random_access import count_frames, read_video_frames, video_backends
from dinotrack.io.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_image

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(VIDEO_SUFFIXES)
IMAGE_EXTENSIONS = frozenset(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Source:
    """One video or image.

    Attributes:
        path: File path.
        num_frames: Frames in the video (1 for an image).
        is_video: Whether frames are decoded from a video.
    """

    path: str
    num_frames: int
    is_video: bool


@dataclass
class FrameBatch:
    """A batch of training frames before augmentation.

    Attributes:
        frames: uint8 ``[B, T, 3, H, W]`` RGB frames, zero-padded at the bottom and right to
            the largest frame of the batch. ``T`` is 2 with temporal views (the second global
            view's frame), else 1.
        sizes: int64 ``[B, 2]``, each frame's ``(height, width)`` before padding.
        ids: int64 ``[B, 3]``: source index, frame index of the first view, frame index of the
            second view (equal to the first without temporal views).
    """

    frames: torch.Tensor
    sizes: torch.Tensor
    ids: torch.Tensor

    def pin_memory(self) -> FrameBatch:
        """Page-locked copy for fast asynchronous transfer (used by the DataLoader)."""
        return FrameBatch(self.frames.pin_memory(), self.sizes, self.ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FrameBatch:
        """Move the frames to ``device``; sizes and ids stay on the CPU."""
        return FrameBatch(self.frames.to(device, non_blocking=non_blocking), self.sizes, self.ids)


def find_sources(paths: Sequence[str | os.PathLike], decoder: str = "auto") -> list[Source]:
    """List the videos and images under ``paths`` (files or folders, searched recursively).

    Each video is checked here, once, by the main process: a video that cannot be opened,
    declares no frames or whose first frame does not decode (a truncated or zero-length file,
    random bytes named .mp4) is skipped with one warning naming it and why, and training uses
    the rest. Files are returned in sorted order, folder by folder, so that every process sees
    the same list.

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: No readable video or image is left.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
            )
            if not found:
                logger.warning("no videos or images under %s", path)
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
                raise InputError(
                    f"--data {path}: not a video ({', '.join(sorted(VIDEO_EXTENSIONS))}) "
                    f"or image ({', '.join(sorted(IMAGE_EXTENSIONS))}) file"
                )
            files.append(path)
        else:  # missing, a symlink loop, or a FIFO / device (which would block forever)
            check_input_path(path, "--data")
            raise MissingFileError(f"--data {path} does not exist")
    sources = []
    skipped = 0
    for file in files:
        if file.suffix.lower() in IMAGE_EXTENSIONS:
            sources.append(Source(str(file), 1, False))
            continue
        try:
            n = _checked_frame_count(file, decoder)
        except ValueError as exc:
            logger.warning("skipping %s", exc)
            skipped += 1
            continue
        sources.append(Source(str(file), n, True))
    if not sources:
        unreadable = f" ({skipped} unreadable, skipped)" if skipped else ""
        raise InputError(
            f"no readable videos or images in {', '.join(str(p) for p in paths)}{unreadable}; "
            "--data takes video files, image files or folders holding them"
        )
    return sources


def _checked_frame_count(file: Path, decoder: str) -> int:
    """The frame count of a video whose first frame decodes the way training reads it.

    Raises:
        ValueError: One line naming the file and why it cannot be used.
    """
    n = count_frames(file, decoder)
    if n < 1:
        raise InputError(f"video {file} has no frames")
    read_video_frames(file, [0], decoder)
    return n


def sources_to_json(sources: Sequence[Source]) -> list[dict]:
    """Plain values for ``sources.json`` and checkpoints."""
    return [dataclasses.asdict(s) for s in sources]


def sources_from_json(values: Sequence[dict]) -> list[Source]:
    """Inverse of :func:`sources_to_json`."""
    return [Source(str(v["path"]), int(v["num_frames"]), bool(v["is_video"])) for v in values]


def epoch_plan(
    sources: Sequence[Source],
    frames_per_video: int,
    max_frame_gap: int,
    seed: int,
    epoch: int,
) -> np.ndarray:
    """All samples of one epoch, shuffled.

    Each video contributes ``frames_per_video`` distinct random frames (all of its frames,
    then repeats, when it is shorter); each image contributes itself once. With
    ``max_frame_gap > 0`` every video sample also gets a second, different frame at most
    ``max_frame_gap`` frames away for the second global view.

    Returns:
        int64 ``[N, 3]``: source index, frame index, second-view frame index.
    """
    rng = np.random.default_rng([seed, epoch])
    rows = []
    for index, source in enumerate(sources):
        n = source.num_frames
        if not source.is_video:
            frames = np.zeros(1, dtype=np.int64)
        elif n >= frames_per_video:
            frames = rng.choice(n, size=frames_per_video, replace=False)
        else:
            frames = np.resize(rng.permutation(n), frames_per_video)
        partner = frames.copy()
        if max_frame_gap > 0 and n > 1:
            low = np.maximum(frames - max_frame_gap, 0)
            high = np.minimum(frames + max_frame_gap, n - 1)
            pick = low + (rng.random(len(frames)) * (high - low)).astype(np.int64)
            partner = pick + (pick >= frames)  # skip the first view's own frame
        block = np.stack([np.full_like(frames, index), frames, partner], axis=1)
        rows.append(block.astype(np.int64))
    plan = np.concatenate(rows)
    return plan[rng.permutation(len(plan))]


class FrameBatches(IterableDataset):
    """This process's batches of one epoch, as :class:`FrameBatch` objects.

    Use with :func:`make_loader` (the dataset batches by itself). Call :meth:`set_epoch`
    before creating each epoch's iterator.

    Args:
        sources: From :func:`find_sources`; the same list on every process.
        batch_size: Samples per batch on this process.
        frames_per_video: See :func:`epoch_plan`.
        max_frame_gap: See :func:`epoch_plan`; 0 for single-frame samples.
        max_short_side: Downscale frames whose shorter side exceeds this (0: never).
        seed: Seeds the per-epoch sampling.
        rank: This process's rank.
        world_size: Number of processes.
        decoder: ``"auto"``, ``"decord"`` or ``"pyav"``.

    Raises:
        ValueError: An epoch is too small to give every process one batch.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        batch_size: int,
        frames_per_video: int = 16,
        max_frame_gap: int = 0,
        max_short_side: int = 480,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        decoder: str = "auto",
    ) -> None:
        super().__init__()
        self.sources = list(sources)
        self.batch_size = batch_size
        self.frames_per_video = frames_per_video
        self.max_frame_gap = max_frame_gap
        self.max_short_side = max_short_side
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        video_backends(decoder)  # checks the name
        self.decoder = decoder
        self.epoch = 0
        self.start_batch = 0
        n = sum(frames_per_video if s.is_video else 1 for s in self.sources)
        self.samples_per_epoch = n
        self.steps_per_epoch = n // world_size // batch_size
        if self.steps_per_epoch < 1:
            raise InputError(
                f"an epoch holds {n} samples, fewer than one global batch of "
                f"{batch_size} x {world_size} processes; add data, raise --frames-per-video "
                "or lower --batch-size"
            )

    @property
    def frames_per_sample(self) -> int:
        """``T``: 2 with temporal views, else 1."""
        return 2 if self.max_frame_gap > 0 else 1

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to iterate, starting at batch ``start_batch`` (for resuming)."""
        if not 0 <= start_batch <= self.steps_per_epoch:
            raise InputError(f"start_batch {start_batch} outside 0..{self.steps_per_epoch}")
        self.epoch = epoch
        self.start_batch = start_batch

    def rank_batches(self, epoch: int) -> np.ndarray:
        """This rank's samples of ``epoch`` as int64 ``[steps_per_epoch, batch_size, 3]``."""
        plan = epoch_plan(self.sources, self.frames_per_video, self.max_frame_gap, self.seed, epoch)
        per_rank = len(plan) // self.world_size
        mine = plan[self.rank : per_rank * self.world_size : self.world_size]
        used = self.steps_per_epoch * self.batch_size
        return mine[:used].reshape(self.steps_per_epoch, self.batch_size, 3)

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[FrameBatch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        batches = self.rank_batches(self.epoch)
        for j in range(self.start_batch, self.steps_per_epoch):
            if (j - self.start_batch) % workers == worker:
                yield self.load(batches[j])

    def load(self, rows: np.ndarray) -> FrameBatch:
        """Decode the frames of one batch.

        Args:
            rows: int64 ``[B, 3]`` samples as in :func:`epoch_plan`.
        """
        t = self.frames_per_sample
        images: dict[tuple[int, int], torch.Tensor] = {}
        for source_index in np.unique(rows[:, 0]):
            source = self.sources[int(source_index)]
            mine = rows[rows[:, 0] == source_index]
            wanted = sorted(set(mine[:, 1].tolist()) | set(mine[:, 2].tolist()))
            try:
                if source.is_video:
                    arrays = read_video_frames(source.path, wanted, self.decoder)
                else:
                    arrays = [read_image(source.path)] * len(wanted)
            except ValueError as exc:
                raise InputError(
                    f"{exc}; repair that file, then run the same command again: the run "
                    "resumes from its last checkpoint (or start a new run without it)"
                ) from exc
            for index, array in zip(wanted, arrays, strict=True):
                images[int(source_index), index] = self._fit(array)
        views = [[images[int(r[0]), int(r[1 + k])] for k in range(t)] for r in rows]
        height = max(v[0].shape[1] for v in views)
        width = max(v[0].shape[2] for v in views)
        frames = torch.zeros(len(rows), t, 3, height, width, dtype=torch.uint8)
        sizes = torch.zeros(len(rows), 2, dtype=torch.int64)
        for b, pair in enumerate(views):
            for k, image in enumerate(pair):
                frames[b, k, :, : image.shape[1], : image.shape[2]] = image
            sizes[b, 0], sizes[b, 1] = pair[0].shape[1], pair[0].shape[2]
        return FrameBatch(frames, sizes, torch.from_numpy(np.ascontiguousarray(rows)))

    def _fit(self, array: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        h, w = image.shape[1:]
        limit = self.max_short_side
        if limit and min(h, w) > limit:
            scale = limit / min(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
        return image.contiguous()


def make_loader(
    dataset: FrameBatches, num_workers: int, pin_memory: bool, seed: int = 0
) -> DataLoader:
    """A DataLoader over ``dataset``'s batches, in order, with ``num_workers`` processes.

    The loader gets its own seeded generator, so creating an iterator does not consume the
    global random state (which must stay reproducible for exact resumption).
    """
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
