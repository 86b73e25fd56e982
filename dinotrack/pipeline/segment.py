"""The segment loop: a tracker's masks for one video, written through a result writer.

Every front end runs this one loop: ``dinotrack segment`` and ``--batch``
(:mod:`dinotrack.cli.segment`, :mod:`dinotrack.pipeline.batch`), ``eval davis``
(``eval/runner.py``) and the studio. They differ only in how they gather the prompts and
where the results go; the tracking, the names of the written files and what is published
are the same, so the same prompts give the same bytes whichever front end ran them.

The caller owns the :class:`~dinotrack.results.writer.ResultWriter` (opened before any work, so
that a refused output folder costs nothing) and publishes it by leaving its ``with`` block.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dinotrack.results.writer import ResultWriter
    from dinotrack.tracking.autostart import AutoStart
    from dinotrack.tracking.tracker import Tracker, VideoSource


@dataclass(frozen=True)
class Segmented:
    """What one run of :func:`segment_video` did.

    Attributes:
        frames: Number of frames written.
        objects: The object ids seen in the written masks, sorted.
        seconds: Wall time of the loop (decoding, tracking and writing).
    """

    frames: int
    objects: tuple[int, ...]
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def frames_to_track(direction: str, prompt_frames: Sequence[int], start: int, end: int) -> int:
    """How many frames a run yields (for progress bars).

    Args:
        direction: ``"forward"``, ``"backward"`` or ``"both"``.
        prompt_frames: The prompted frame indices (at least one).
        start: First frame considered.
        end: One past the last frame considered (the video's length, or ``stop``).
    """
    return {
        "forward": end - min(prompt_frames),
        "backward": max(prompt_frames) + 1 - start,
        "both": end - start,
    }[direction]


def segment_video(
    tracker: Tracker,
    source: VideoSource,
    results: ResultWriter,
    *,
    frame_names: Sequence[str],
    prompts: Mapping[int, np.ndarray] | None = None,
    auto_start: AutoStart | None = None,
    direction: str = "forward",
    start: int = 0,
    stop: int | None = None,
    overlay: bool = False,
    on_frame: Callable[[int], None] | None = None,
) -> Segmented:
    """Track ``source`` and add every frame's mask to ``results``.

    Args:
        tracker: The tracker (backbone and settings).
        source: Video file, frames directory, or an iterable of ``[H, W, 3]`` uint8 frames
            (see :meth:`dinotrack.Tracker.track`).
        results: An open result writer; the masks are added to it, the caller publishes.
        frame_names: The source's frame names, by frame index; frame ``i``'s mask is named
            after ``frame_names[i]`` (``00012.jpg`` -> ``00012``), ``00012`` past its end.
        prompts: ``{frame index: [H, W] object ids}`` (checked, e.g. by
            :func:`dinotrack.pipeline.prompts.load_prompts`).
        auto_start: Instead of prompts: derive frame ``start``'s mask from its attention;
            that mask is written as the results' start mask.
        direction: ``"forward"``, ``"backward"`` or ``"both"``.
        start: First frame considered; frames before it are skipped.
        stop: One past the last frame considered; None: the end of the video.
        overlay: Also pass each frame to the results (for their overlay video).
        on_frame: Called with each frame's index once its mask is added.

    Returns:
        What was done.
    """
    began = time.perf_counter()
    tracked = tracker.track(
        source,
        auto_start,  # a function of the first frame, which prompts cannot hold
        prompts=None if auto_start is not None else prompts,
        direction=direction,
        with_frames=True,
        start=start,
        stop=stop,
    )
    count = 0
    objects: set[int] = set()
    for index, mask, frame in tracked:  # index: the frame's index in the video
        if count == 0 and auto_start is not None:
            results.write_start_mask(mask)
        objects.update(int(i) for i in np.unique(mask) if i)
        name = frame_names[index] if index < len(frame_names) else f"{index:05d}.png"
        results.add(index, Path(name).stem, mask, frame if overlay else None)
        count += 1
        if on_frame is not None:
            on_frame(index)
    return Segmented(count, tuple(sorted(objects)), time.perf_counter() - began)
