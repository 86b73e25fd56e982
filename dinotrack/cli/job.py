"""One video's ``segment`` job from the flags: what ``segment`` and each row of ``--batch`` do.

1. check the flags and the prompts against the video (before any model is loaded);
2. open the results (``--out``, ``--save``, ``--overlay``), refused before any work when
   they would replace a file dinotrack did not write;
3. run :func:`dinotrack.pipeline.segment.segment_video`, the one segment loop, with a
   progress display, and publish the results together (or not at all).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import stat
import time
from pathlib import Path

from dinotrack.cli.common import build_tracker, check_tracker_flags
from dinotrack.config import DEFAULT_MASS
from dinotrack.errors import InputError
from dinotrack.results.writer import START_MASK_NAME, ResultWriter


def segment_one(args: argparse.Namespace, tracker=None, progress=None) -> int:
    """Segment the video ``args.input`` into ``args.out`` as the flags say.

    Args:
        args: The parsed flags of ``segment`` (``input``, ``out``, the objects' flags...).
        tracker: A tracker to reuse (a batch builds one for all its videos); None: build it
            from the flags once the inputs are checked.
        progress: A running ``rich.progress.Progress`` to add this video's frames bar to
            (a batch's); None: a bar of its own on a terminal.

    Returns:
        0.
    """
    from rich.console import Console

    from dinotrack.io.video import FrameReader
    from dinotrack.pipeline.segment import frames_to_track, segment_video
    from dinotrack.results.formats import format_writers

    _check_flags(args)
    if tracker is None:
        check_tracker_flags(args)
    start_frame = args.start_frame
    stop = None if args.max_frames is None else start_frame + args.max_frames
    reader = FrameReader(args.input, start=start_frame, stop=stop)  # checks the input exists first
    try:
        info = reader.info
        if start_frame >= info.num_frames:
            raise InputError(
                f"--start-frame {start_frame} is past the last frame: {args.input} has "
                f"{info.num_frames} frames (0 to {info.num_frames - 1})"
            )
        inputs = [("input", args.input), ("--mask", args.mask), ("--weights", args.weights)]
        inputs += [("--prompt", text.partition(":")[2] or None) for text in args.prompt]
        inputs.append(("--prompts", args.prompts))
        # Checked before any work; --save without png writes no palette PNGs.
        results = ResultWriter(
            args.out,
            inputs=inputs,
            flag="--out",
            masks="png" in args.save,
        )
        try:
            clicks = _click_flags(args, info)
            auto_start, prompts = _start_masks(args, info, results)
            results.run = run_description(args)  # once the inputs are checked
            tracker = tracker or build_tracker(args)
            if clicks:
                from dinotrack.cli.clicks import click_prompts

                prompts = click_prompts(tracker, args.input, clicks, prompts)
        except BaseException:
            results.abort()  # removes the overlay's temporary file and new parent folders
            raise
        with results:
            # The extra formats (--save); their scratch files are part of the staging.
            video_name = Path(os.path.abspath(args.input)).stem
            results.formats = format_writers(
                args.save, video_name, scratch=results.staging / ".objects", source=args.input
            )
            end = info.num_frames if stop is None else min(stop, info.num_frames)
            # --mask is frame --start-frame's prompt: a backward pass goes on down to frame 0.
            first = 0 if args.mask is not None and args.direction != "forward" else start_frame
            total = frames_to_track(args.direction, sorted(prompts), first, end)
            with _progress_bar(progress, total, Path(args.input).name) as advance:
                done = segment_video(
                    tracker,
                    args.input,
                    results,
                    frame_names=info.frame_names,
                    prompts=None if args.auto else prompts,
                    auto_start=auto_start,
                    direction=args.direction,
                    start=first,
                    stop=stop,
                    overlay=args.overlay is not None,
                    on_frame=advance,
                )
    finally:
        reader.close()
    Console(stderr=True).print(
        f"segmented {done.frames} frames, {len(done.objects)} object(s) {list(done.objects)}, "
        f"{done.fps:.2f} fps on {tracker.device} ({tracker.spec.name}) -> {results.directory}"
        + (" (replacing the earlier result there)" if results.replaced else "")
        + (f", overlay {args.overlay}" if args.overlay else ""),
        soft_wrap=True,
    )
    return 0


LOG_EVERY_SHARE, LOG_EVERY_SECONDS = 0.1, 30.0
"""Off a terminal (a log, nohup, CI), a progress line every 10 % of the frames or 30 s."""


@contextlib.contextmanager
def _progress_bar(progress, total: int, label: str = "segment"):
    """A function to call once per frame that advances a bar of ``total`` frames: on the
    batch's display ``progress`` if given, else on a bar of its own (on a terminal), with the
    rate and the time left; off a terminal, a line every :data:`LOG_EVERY_SHARE` of the frames
    or :data:`LOG_EVERY_SECONDS` seconds instead."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]segment"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.2f} fps"),
        TimeRemainingColumn(),
    )
    if progress is None:
        bar = Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
    else:  # a batch's display: one more bar on it
        bar = contextlib.nullcontext(progress)
    log = not console.is_terminal
    with bar as shown:
        task = shown.add_task("frames", total=total, fps=0.0)
        began = time.perf_counter()
        count, logged_count, logged_at = 0, 0, began

        def advance(_index: int) -> None:
            nonlocal count, logged_count, logged_at
            count += 1
            now = time.perf_counter()
            fps = count / max(now - began, 1e-9)
            shown.update(task, advance=1, fps=fps)
            due = count - logged_count >= max(1, LOG_EVERY_SHARE * total)
            if log and (due or now - logged_at >= LOG_EVERY_SECONDS or count == total):
                left = max(total - count, 0) / fps
                console.print(
                    f"{label}: {count}/{total} frames ({100 * count // max(total, 1)}%), "
                    f"{fps:.2f} fps, {int(left) // 60}:{int(left) % 60:02d} left",
                    soft_wrap=True,
                    markup=False,
                    highlight=False,
                )
                logged_count, logged_at = count, now

        try:
            yield advance
        finally:
            shown.remove_task(task)


RUN_SETTINGS = (
    "preset",
    "n_last_frames",
    "radius",
    "topk",
    "temperature",
    "short_side",
    "resize_rule",
    "max_prompt_frames",
    "group_merge",
    "redetect",
    "pos_embed",
    "precision",
    "start_frame",
    "max_frames",
    "direction",
    "auto",
    "objects",
    "box",
    "mass",
)
"""The flags that change a result, recorded with it (not the device, --batch-size...)."""


def run_description(args: argparse.Namespace) -> dict:
    """What makes ``segment``'s result, as plain JSON values kept in its record (see
    :func:`dinotrack.results.writer.reusable`): the input's and prompts' checksums (not their
    paths: a moved file is the same input), the model, the weights' checksum, the settings
    (:data:`RUN_SETTINGS`) and the formats."""
    prompts = []
    if args.mask is not None:
        prompts.append([str(args.start_frame), _digest(args.mask)])
    for text in args.prompt:
        frame, _, path = text.partition(":")
        prompts.append([frame.strip(), _digest(path)])
    if args.prompts is not None and os.path.isdir(args.prompts):
        for path in sorted(Path(args.prompts).iterdir()):
            if path.suffix.lower() == ".png":
                prompts.append([path.name, _digest(path)])
    return {
        "input": _digest(args.input),
        "prompts": sorted(prompts),
        "model": args.model,
        "weights": None if args.weights is None else _digest(args.weights),
        "settings": {name: getattr(args, name, None) for name in RUN_SETTINGS},
        "formats": sorted(args.save),
    }


def _digest(path: str | os.PathLike[str]) -> str | None:
    """The SHA-256 of a file or folder (None if it cannot be read: the run will say why); a
    file's is kept while its size and time are the same (a batch reads one weights file per
    video)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    if stat.S_ISDIR(info.st_mode):  # a folder's time does not change with its files' contents
        return _cached_digest.__wrapped__(path, 0, 0)
    if not stat.S_ISREG(info.st_mode):  # a FIFO, a device: never read here
        return None
    return _cached_digest(os.path.realpath(path), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _cached_digest(path: str, _size: int, _mtime_ns: int) -> str | None:
    from dinotrack.results.record import file_digest

    try:
        return file_digest(path)["sha256"]
    except OSError:
        return None


def _check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that do not go together, before reading anything."""
    if args.input is None:
        raise InputError("give the input video (or frames directory), or --batch LIST.csv")
    clicked = args.point or args.neg_point or (args.box and not args.auto)
    given = args.mask is not None or args.auto or args.prompt or args.prompts is not None
    if not given and not clicked:
        raise InputError(
            "give the objects: --prompt FRAME:MASK, --prompts DIR, --point X,Y, --box "
            "X0,Y0,X1,Y1, --mask FILE, or --auto"
        )
    auto_flags = [f"--{n}" for n in ("objects", "mass") if getattr(args, n) is not None]
    if auto_flags and not args.auto:
        raise InputError(f"{', '.join(auto_flags)} can only be used with --auto")
    if args.start_frame < 0:
        raise InputError(f"--start-frame must be 0 or more, got {args.start_frame}")
    if args.start_frame and not args.mask and not args.auto:
        raise InputError("--start-frame goes with --mask or --auto; --prompt names its frame")
    if args.direction != "forward" and args.auto:
        raise InputError(f"--direction {args.direction} needs a prompt (--mask or --prompt)")
    if args.direction != "forward" and args.overlay:
        raise InputError("--overlay needs --direction forward (frames are written in order)")


def _click_flags(args: argparse.Namespace, info) -> list:
    """The clicks and boxes of ``--point``, ``--neg-point`` and ``--box`` (without
    ``--auto``), checked against the video before any model loads."""
    from dinotrack.cli.clicks import parse_click_flags

    if args.auto:
        if args.point or args.neg_point:
            raise InputError("--point and --neg-point do not go with --auto")
        return []
    boxes = args.box or []
    size = (info.height, info.width)
    return parse_click_flags(args.point, args.neg_point, boxes, size, info.num_frames)


def _start_masks(args: argparse.Namespace, info, results: ResultWriter):
    """The :class:`AutoStart` of ``segment --auto`` (else None) and the prompts
    ``{frame index: mask}`` (the auto start's frame with ``--auto``), checked against the video
    ``info`` describes; sets the results' palette and opens the overlay (before any work)."""
    if args.auto:
        auto_start = _auto_start(args, info)
        prompts = {args.start_frame: auto_start}
    else:
        from dinotrack.pipeline.prompts import load_prompts

        auto_start = None
        # Checked (and resized if need be) before any weights are loaded or frames decoded.
        mask_frame = args.start_frame if args.mask is not None else None
        sources = prompt_sources(args, info)
        prompts, palette = load_prompts(sources, (info.height, info.width), mask_frame)
        if palette is not None:
            results.palette = palette
    if args.overlay:
        size = (info.width, info.height)
        results.open_overlay(args.overlay, info.fps, *size, overwrite=args.overwrite)
    return auto_start, prompts


def prompt_sources(args: argparse.Namespace, info) -> dict[int, str]:
    """``{frame index: mask file}`` of ``segment``'s ``--mask``, ``--prompt`` and
    ``--prompts`` for a video described by ``info``.

    Raises:
        InputError: A malformed ``--prompt``, two prompts for one frame, a frame past the end,
            or a file of ``--prompts`` named like no frame.
        MissingFileError: A missing ``--prompts`` directory.
    """
    from dinotrack.pipeline.prompts import prompt_files

    sources: dict[int, str] = {}
    end = info.num_frames
    if args.max_frames is not None:
        end = min(end, args.start_frame + args.max_frames)

    def add(index: int, path: str, flag: str) -> None:
        if index in sources:
            raise InputError(f"two prompts for frame {index}: {sources[index]} and {path}")
        if index >= end:
            limit = "" if end == info.num_frames else f" (--max-frames: frames 0 to {end - 1})"
            raise InputError(
                f"{flag} {path} is for frame {index}, past the last frame: {args.input} has "
                f"{info.num_frames} frames (0 to {info.num_frames - 1}){limit}"
            )
        sources[index] = path

    if args.mask is not None:
        add(args.start_frame, args.mask, "--mask")
    for text in args.prompt:
        add(*_prompt_frame(text, info.num_frames, args.input), "--prompt")
    if args.prompts is not None:
        for index, path in prompt_files(args.prompts, info.frame_names):
            add(index, str(path), "--prompts")
    return sources


_FRAME_NUMBER = re.compile(r"-?[0-9]+")
"""A prompt's frame: ASCII digits (``int`` would also take "²" or "١"), negative from the end."""


def _prompt_frame(text: str, num_frames: int, video) -> tuple[int, str]:
    """``(frame index, mask file)`` of a ``--prompt FRAME:MASK``; a negative frame counts
    from the end of the video (-1 is its last frame)."""
    frame, sep, path = text.partition(":")
    if not sep or not _FRAME_NUMBER.fullmatch(frame.strip()) or not path:
        raise InputError(
            f"--prompt expects FRAME:MASK, FRAME a frame number (e.g. 120:car.png, or "
            f"-1:car.png for the last frame), got {text!r}"
        )
    index = int(frame)
    if index < 0:
        if index < -num_frames:
            raise InputError(
                f"--prompt {text}: frame {index} counts from the end, but {video} has only "
                f"{num_frames} frames (-1 to -{num_frames})"
            )
        index += num_frames
    return index, path


def parse_box(text: str) -> tuple[int, int, int, int]:
    """Parses ``"x0,y0,x1,y1"`` (pixels) into a box.

    Raises:
        InputError: Not four integers, or not ``x0 < x1`` and ``y0 < y1``.
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        x0, y0, x1, y1 = (int(part) for part in parts)
    except ValueError:
        raise InputError(
            f"box {text!r} must be four integers x0,y0,x1,y1 (pixels, e.g. 100,50,400,300)"
        ) from None
    if not (x0 < x1 and y0 < y1):
        raise InputError(f"box {text!r} must have x0 < x1 and y0 < y1 (corners, in pixels)")
    return x0, y0, x1, y1


def _auto_start(args: argparse.Namespace, info):
    """The :class:`dinotrack.tracking.autostart.AutoStart` of ``segment --auto``'s flags for
    a video described by ``info`` (a :class:`dinotrack.io.video.VideoInfo`)."""
    from dinotrack.tracking.autostart import AutoStart, check_box

    if START_MASK_NAME in info.frame_names:
        raise InputError(
            f"a frame of {args.input} is named like the start mask {START_MASK_NAME}; rename "
            "that frame"
        )
    box = None
    if args.box is not None:
        if len(args.box) > 1:
            raise InputError("--auto takes one --box")
        box = check_box(parse_box(args.box[0]), (info.height, info.width))
    mass = DEFAULT_MASS if args.mass is None else args.mass
    objects = 1 if args.objects is None else args.objects
    return AutoStart(mass=mass, objects=objects, box=box)
