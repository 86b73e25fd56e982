"""``segment --point``, ``--neg-point`` and ``--box`` as prompts: parsing the flags and
growing their masks with :func:`dinotrack.tracking.clicks.click_mask` (``segment`` imports this
module
when it runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dinotrack.errors import InputError
from dinotrack.tracking.clicks import check_clicks

__all__ = ["ClickPrompt", "click_prompts", "parse_click_flags"]


@dataclass(frozen=True)
class ClickPrompt:
    """Clicks and a box for one object on one frame (``segment --point/--neg-point/--box``)."""

    frame: int
    object_id: int
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None


def parse_click_flags(
    points: Sequence[str],
    negative_points: Sequence[str],
    boxes: Sequence[str],
    frame_size: tuple[int, int],
    num_frames: int,
) -> list[ClickPrompt]:
    """``segment``'s ``--point``, ``--neg-point`` and ``--box`` values, checked against the
    video, grouped by (frame, object).

    Each value is ``[FRAME:]X,Y[:OBJ]`` (a box ``[FRAME:]X0,Y0,X1,Y1[:OBJ]``): pixels of frame
    ``FRAME`` (default 0) for object ``OBJ`` (default 1).

    Raises:
        ValueError: A malformed value, a frame past the end, a point or box outside the frame,
            two boxes for one object on one frame, an object id outside 1..254.
    """
    grouped: dict[tuple[int, int], dict] = {}

    def entry(frame: int, object_id: int) -> dict:
        return grouped.setdefault((frame, object_id), {"points": [], "labels": [], "box": None})

    flagged = [("--point", text, 1) for text in points]
    flagged += [("--neg-point", text, 0) for text in negative_points]
    for flag, text, label in flagged:
        frame, values, object_id = _parse_flag(text, flag, 2, num_frames)
        try:
            check_clicks([values], [label], None, frame_size)
        except ValueError as error:
            raise InputError(f"{flag} {text}: {error}") from None
        entry(frame, object_id)["points"].append(tuple(values))
        entry(frame, object_id)["labels"].append(label)
    for text in boxes:
        frame, values, object_id = _parse_flag(text, "--box", 4, num_frames)
        try:
            _, _, box = check_clicks([], [], values, frame_size)
        except ValueError as error:
            raise InputError(f"--box {text}: {error}") from None
        if entry(frame, object_id)["box"] is not None:
            raise InputError(f"--box {text}: object {object_id} has a box on frame {frame} already")
        entry(frame, object_id)["box"] = box
    prompts = []
    for (frame, object_id), given in sorted(grouped.items()):
        if 1 not in given["labels"] and given["box"] is None:
            raise InputError(
                f"object {object_id} on frame {frame} has only negative clicks; give it a "
                "--point or a --box there too"
            )
        prompts.append(
            ClickPrompt(
                frame, object_id, tuple(given["points"]), tuple(given["labels"]), given["box"]
            )
        )
    return prompts


def _parse_flag(text: str, flag: str, count: int, num_frames: int) -> tuple[int, list[float], int]:
    """``[FRAME:]V1,...,Vcount[:OBJ]`` -> ``(frame, values, object id)``."""
    example = "120:350,200:2" if count == 2 else "120:100,50,400,300:2"
    shape = "X,Y" if count == 2 else "X0,Y0,X1,Y1"
    parts = text.split(":")
    coords = [i for i, part in enumerate(parts) if "," in part]
    if len(parts) > 3 or len(coords) != 1 or coords[0] > 1 or len(parts) - coords[0] > 2:
        raise InputError(f"{flag} expects [FRAME:]{shape}[:OBJ] (e.g. {example}), got {text!r}")
    frame_text = parts[0] if coords[0] == 1 else "0"
    object_text = parts[coords[0] + 1] if len(parts) > coords[0] + 1 else "1"
    try:
        values = [float(v) for v in parts[coords[0]].split(",")]
        frame, object_id = int(frame_text), int(object_text)
    except ValueError:
        raise InputError(
            f"{flag} expects [FRAME:]{shape}[:OBJ] (e.g. {example}), got {text!r}"
        ) from None
    if len(values) != count:
        raise InputError(f"{flag} expects [FRAME:]{shape}[:OBJ] (e.g. {example}), got {text!r}")
    if not 0 <= frame < num_frames:
        raise InputError(
            f"{flag} {text}: frame {frame} does not exist (the video has {num_frames} frames, 0 "
            f"to {num_frames - 1})"
        )
    if not 1 <= object_id <= 254:
        raise InputError(f"{flag} {text}: object ids go from 1 to 254, got {object_id}")
    return frame, values, object_id


def click_prompts(
    tracker,
    video: str,
    clicks: Sequence[ClickPrompt],
    prompts: dict[int, np.ndarray],
) -> dict[int, np.ndarray]:
    """``prompts`` with the masks the clicks grow drawn in: each object's mask on its frame
    replaces its pixels there (over a ``--prompt`` mask of that frame, if any).

    Args:
        tracker: The :class:`dinotrack.Tracker` whose backbone gives the features.
        video: The video file or frames directory.
        clicks: From :func:`parse_click_flags`.
        prompts: ``{frame: [H, W] ids}`` from the mask flags (not changed).

    Raises:
        ValueError: The clicks leave a frame with no object at all.
    """
    from dinotrack.io.frame_cache import FrameCache
    from dinotrack.tracking.clicks import click_mask

    frames = FrameCache(video, capacity=2)
    out = dict(prompts)
    for clicked in clicks:
        frame = frames.get(clicked.frame)
        size = tracker.input_size(*frame.shape[:2])
        feats = tracker.extractor(frame[None].copy(), size)[0]
        base = np.array(out.get(clicked.frame, np.zeros(frame.shape[:2], np.uint8)))
        current = base == clicked.object_id
        mask = click_mask(
            frame,
            feats,
            clicked.points,
            clicked.labels,
            clicked.box,
            current if current.any() else None,
        )
        base[base == clicked.object_id] = 0
        base[mask] = clicked.object_id
        out[clicked.frame] = base
    return out
