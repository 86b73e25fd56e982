"""The ``dinotrack`` command line.

``dinotrack segment`` and ``dinotrack models`` live here (``attention`` in
:mod:`dinotrack.cli_attention`); other packages (``eval``, ``pretrain``) add sub-commands
through the ``dinotrack.commands`` entry-point group, each a function
``register(subparsers)`` that adds a parser whose ``func(args) -> int`` runs it. What every
command shares (error handling, exit codes, the tracker's flags) is :mod:`dinotrack.clikit`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dinotrack import __version__
from dinotrack.cli_export import add_segment_output_arguments
from dinotrack.cli_export import register as register_export
from dinotrack.clikit import (
    ArgumentParser,
    add_tracker_arguments,
    build_tracker,
    positive_int,
    run_command,
)
from dinotrack.config import DEFAULT_MASS, DIRECTIONS, PRESETS, UPSAMPLE_MODES
from dinotrack.results import START_MASK_NAME, ResultWriter
from dinotrack.studio.cli import register as register_studio


def _segment_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment the objects of a first-frame mask in every frame of a video",
        description="Propagate the objects of the first frame's mask through a video and "
        "write one palette PNG per frame.",
    )
    p.add_argument(
        "input",
        nargs="?",
        help="video file (mp4, mov, mkv, avi, webm, m4v, mpg, mpeg) or directory of frames "
        "(not with --batch)",
    )
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--mask",
        help="first-frame mask: palette PNG (index = object id), 8-bit grayscale (0/255 = one "
        "object; small integers = ids; anti-aliased masks are refused) or RGB (each colour an "
        "object, black = background) of the first frame (or of --start-frame), at its size "
        "or a rescale of it",
    )
    start.add_argument(
        "--auto",
        action="store_true",
        help=f"no mask: derive it from the first frame's attention and save it as "
        f"OUT/{START_MASK_NAME} (see --objects, --box, --mass)",
    )
    start.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="FRAME:MASK",
        help="the mask of frame FRAME (counted from 0), repeatable: new ids are objects from "
        "that frame on, known ids are corrected there, others go on being tracked",
    )
    start.add_argument(
        "--prompts",
        default=None,
        metavar="DIR",
        help="a directory of prompt masks (PNG) named like the frames they belong to "
        "(00120.png, or the frame folder's own names)",
    )
    p.add_argument(
        "--direction",
        default="forward",
        choices=DIRECTIONS,
        help="forward: from the earliest prompt to the end; backward: from the latest prompt "
        "down to frame 0; both: forward, and the frames before the earliest prompt backward "
        "(default %(default)s)",
    )
    p.add_argument(
        "--objects", type=int, default=None, help="--auto: number of objects (default 1)"
    )
    _click_arguments(p)
    p.add_argument(
        "--mass",
        type=float,
        default=None,
        help="--auto: share of the attention mass the foreground holds (default 0.6)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output directory for the per-frame PNGs; published when the run ends, replacing "
        "an earlier result (a directory holding files dinotrack did not write is refused)",
    )
    add_segment_output_arguments(p)
    p.add_argument(
        "--overlay", default=None, help="also write a video (.mp4/.mov/.mkv) of masks over frames"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --overlay file (as ffmpeg -y)"
    )
    p.add_argument(
        "--max-frames", type=positive_int, default=None, help="stop after this many frames"
    )
    p.add_argument(
        "--start-frame",
        type=int,
        default=0,
        metavar="N",
        help="the mask is frame N's (counted from 0): track from there on, skipping the frames "
        "before it (default 0)",
    )
    add_tracker_arguments(p)
    p.set_defaults(func=run_segment)


def _click_arguments(p: argparse.ArgumentParser) -> None:
    """``--point``, ``--neg-point`` and ``--box``: prompts grown from clicks (dinotrack.clicks)."""
    where = "pixels of frame FRAME (default 0), object OBJ (default 1), repeatable"
    clicks = {
        "--point": "a positive click: grow the object's mask there from feature similarity",
        "--neg-point": "a negative click: not the object",
    }
    for flag, what in clicks.items():
        p.add_argument(
            flag, action="append", default=[], metavar="[FRAME:]X,Y[:OBJ]", help=f"{what} ({where})"
        )
    p.add_argument(
        "--box",
        action="append",
        default=None,
        metavar="[FRAME:]X0,Y0,X1,Y1[:OBJ]",
        help=f"the object lies in this box ({where}); with --auto: X0,Y0,X1,Y1 restricts the "
        "start to the box",
    )


def _attention_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "attention",
        help="show the class-token attention of an image or a video (no labels needed)",
        description="Write the last block's class-token attention per head and averaged "
        "over the heads, and the smallest patch sets holding --mass of it: for an image a "
        "directory of PNGs, for a video an mp4 of the mean map (or --head) over the frames.",
    )
    p.add_argument("input", help="image (jpg, png, ...), video file, or directory of frames")
    p.add_argument(
        "--out",
        required=True,
        help="image input: output directory; video input: output .mp4, .mov or .mkv file",
    )
    p.add_argument(
        "--upsample",
        default="nearest",
        choices=UPSAMPLE_MODES,
        help="how patch maps are resized to the image (default: nearest, as the DINO figures)",
    )
    p.add_argument(
        "--mass",
        type=float,
        default=DEFAULT_MASS,
        help="share of each map's attention mass the thresholded masks hold (default 0.6)",
    )
    p.add_argument("--alpha", type=float, default=0.6, help="opacity of the colours, 0..1")
    p.add_argument("--no-outline", action="store_true", help="do not outline the thresholded set")
    p.add_argument("--head", type=int, default=None, help="video: show this head, not the mean")
    p.add_argument(
        "--max-frames", type=positive_int, default=None, help="video: stop after this many"
    )
    p.add_argument("--overwrite", action="store_true", help="video: replace an existing --out file")
    add_tracker_arguments(p)
    p.set_defaults(func=run_attention)


def run_attention(args: argparse.Namespace) -> int:
    from dinotrack.cli_attention import run_attention as run

    return run(args)


def _models_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the known backbones",
        description="List the known backbones, or describe one in full.",
    )
    p.add_argument("name", nargs="?", default=None, help="describe this backbone in full")
    p.set_defaults(func=run_models)


def weights_source(spec) -> str:
    """Where a backbone's weights come from, in a few words (for ``dinotrack models``)."""
    if spec.random_weights:
        return "random"
    if spec.local_file is not None:
        return "shipped"
    if spec.hf_hub_id is not None:
        return "HF hub"
    return "download" if spec.url is not None else "none"


def run_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from dinotrack.backbones import get_backbone_spec, hub_weights_path, list_backbones

    console = Console()
    if args.name is not None:
        spec = get_backbone_spec(args.name)
        settings = PRESETS[spec.preset]
        rows = {
            "name": spec.name,
            "description": spec.description,
            "timm architecture": spec.timm_arch,
            "patch size": spec.patch_size,
            "feature channels": spec.embed_dim,
            "licence": spec.license,
            "preset": f"{spec.preset} ({', '.join(f'{k}={v}' for k, v in settings.items())})",
            "weights": spec.url or spec.hf_hub_id or spec.local_file or "random (tests)",
            "cache path": hub_weights_path(spec) if spec.url or spec.hf_hub_id else "-",
            "mean / std": f"{spec.mean} / {spec.std}",
            "position rule": spec.pos_embed + " (unused by RoPE backbones)",
        }
        for key, value in rows.items():
            console.print(f"{key:>18}: {value}", soft_wrap=True, highlight=False)
        return 0
    table = Table(
        caption="weights: HF hub = a timm tag, into the Hugging Face hub cache;\n"
        "download = the official URL, into torch's hub cache.\n"
        "`dinotrack models NAME` describes one backbone in full."
    )
    table.add_column("name", no_wrap=True)
    table.add_column("patch", no_wrap=True, justify="right")
    table.add_column("dim", no_wrap=True, justify="right")
    table.add_column("licence", no_wrap=True)
    table.add_column("preset", no_wrap=True)
    table.add_column("weights", no_wrap=True)
    for name in list_backbones():
        spec = get_backbone_spec(name)
        dim = "?" if spec.embed_dim is None else str(spec.embed_dim)
        licence = spec.license.split(" (")[0]  # the details: `dinotrack models NAME`
        row = (name, str(spec.patch_size), dim, licence, spec.preset, weights_source(spec))
        table.add_row(*row)
    console.print(table)
    return 0


def run_segment(args: argparse.Namespace, tracker=None, progress=None) -> int:
    """Run ``dinotrack segment`` (``--batch``: :func:`dinotrack.batch.run_batch`).

    Args:
        args: The parsed flags.
        tracker: A tracker to reuse (a batch builds one for all its videos); None: build it
            from the flags.
        progress: A running ``rich.progress.Progress`` to add this video's frames bar to.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from dinotrack.export import format_writers
    from dinotrack.video_io import FrameReader

    if args.batch is not None:
        from dinotrack.batch import run_batch

        return run_batch(args, run_segment)
    if args.input is None:
        raise ValueError("give the input video (or frames directory), or --batch LIST.csv")
    clicked = args.point or args.neg_point or (args.box and not args.auto)
    if args.mask is None and not args.auto and not args.prompt and args.prompts is None:
        if not clicked:
            raise ValueError(
                "give the objects: --prompt FRAME:MASK, --prompts DIR, --point X,Y, --box "
                "X0,Y0,X1,Y1, --mask FILE, or --auto"
            )
    console = Console(stderr=True)
    auto_flags = [f"--{n}" for n in ("objects", "mass") if getattr(args, n) is not None]
    if auto_flags and not args.auto:
        raise ValueError(f"{', '.join(auto_flags)} can only be used with --auto")
    start_frame = args.start_frame
    if start_frame < 0:
        raise ValueError(f"--start-frame must be 0 or more, got {start_frame}")
    _check_object_flags(args)
    stop = None if args.max_frames is None else start_frame + args.max_frames
    reader = FrameReader(args.input, start=start_frame, stop=stop)  # checks the input exists first
    try:
        info = reader.info
        if start_frame >= info.num_frames:
            raise ValueError(
                f"--start-frame {start_frame} is past the last frame: {args.input} has "
                f"{info.num_frames} frames (0 to {info.num_frames - 1})"
            )
        inputs = [("input", args.input), ("--mask", args.mask), ("--weights", args.weights)]
        # Checked before any work; --save without png writes no palette PNGs.
        results = ResultWriter(args.out, inputs=inputs, flag="--out", masks="png" in args.save)
        out = results.directory
        try:
            clicks = _click_flags(args, info)
            auto_start, prompts = _start_masks(args, info, results)
            tracker = tracker or build_tracker(args)
            if clicks:
                from dinotrack.cli_clicks import click_prompts

                prompts = click_prompts(tracker, args.input, clicks, prompts)
        except BaseException:
            results.abort()  # removes the overlay's temporary file and new parent folders
            raise
        with results:
            # The extra formats (--save); their scratch files are part of the staging.
            video_name = Path(os.path.abspath(args.input)).stem
            scratch = results.staging / ".objects"
            results.formats = format_writers(args.save, video_name, scratch=scratch)
            end = info.num_frames if stop is None else min(stop, info.num_frames)
            total = {
                "forward": end - min(prompts),
                "backward": max(prompts) + 1 - start_frame,
                "both": end - start_frame,
            }[args.direction]
            start = time.perf_counter()
            count = 0
            columns = (
                TextColumn("[bold]segment"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:.2f} fps"),
            )
            if progress is None:
                bar = Progress(
                    *columns, console=console, transient=True, disable=not console.is_terminal
                )
            else:  # a batch's display: one more bar on it
                bar = contextlib.nullcontext(progress)
            with bar as progress:
                task = progress.add_task("frames", total=total, fps=0.0)
                tracked = tracker.track(
                    args.input,
                    auto_start,  # a function of the first frame, which prompts cannot hold
                    prompts=None if args.auto else prompts,
                    direction=args.direction,
                    with_frames=True,
                    start=start_frame,
                    stop=stop,
                )
                objects: set[int] = set()
                for index, mask, frame in tracked:  # index: the frame's index in the video
                    if count == 0 and args.auto:
                        results.write_start_mask(mask)
                    objects.update(int(i) for i in np.unique(mask) if i)
                    names = info.frame_names
                    name = names[index] if index < len(names) else f"{index:05d}.png"
                    results.add(index, Path(name).stem, mask, frame if args.overlay else None)
                    count += 1
                    fps = count / max(time.perf_counter() - start, 1e-9)
                    progress.update(task, advance=1, fps=fps)
                progress.remove_task(task)
    finally:
        reader.close()
    elapsed = time.perf_counter() - start
    console.print(
        f"segmented {count} frames, {len(objects)} object(s) {sorted(objects)}, "
        f"{count / max(elapsed, 1e-9):.2f} fps on {tracker.device} "
        f"({tracker.spec.name}) -> {out}" + (f", overlay {args.overlay}" if args.overlay else ""),
        soft_wrap=True,
    )
    return 0


def _start_masks(args: argparse.Namespace, info, results: ResultWriter):
    """The :class:`AutoStart` of ``segment --auto`` (else None) and the prompts
    ``{frame index: mask}`` (the auto start's frame with ``--auto``), checked against the video
    ``info`` describes; sets the results' palette and opens the overlay (before any work)."""
    if args.auto:
        auto_start = _auto_start(args, info)
        prompts = {args.start_frame: auto_start}
    else:
        auto_start = None
        # Checked (and resized if need be) before any weights are loaded or frames decoded.
        prompts, palette = read_prompts(args, info)
        if palette is not None:
            results.palette = palette
    if args.overlay:
        size = (info.width, info.height)
        results.open_overlay(args.overlay, info.fps, *size, overwrite=args.overwrite)
    return auto_start, prompts


def _click_flags(args: argparse.Namespace, info) -> list:
    """The clicks and boxes of ``--point``, ``--neg-point`` and ``--box`` (without
    ``--auto``), checked against the video before any model loads."""
    from dinotrack.cli_clicks import parse_click_flags

    if args.auto:
        if args.point or args.neg_point:
            raise ValueError("--point and --neg-point do not go with --auto")
        return []
    boxes = args.box or []
    size = (info.height, info.width)
    return parse_click_flags(args.point, args.neg_point, boxes, size, info.num_frames)


def _check_object_flags(args: argparse.Namespace) -> None:
    """Refuse the flags that do not go with the way ``segment`` is given its objects."""
    if args.start_frame and not args.mask and not args.auto:
        raise ValueError("--start-frame goes with --mask or --auto; --prompt names its frame")
    if args.direction != "forward" and args.auto:
        raise ValueError(f"--direction {args.direction} needs a prompt (--mask or --prompt)")
    if args.direction != "forward" and args.overlay:
        raise ValueError("--overlay needs --direction forward (frames are written in order)")


def read_prompts(args: argparse.Namespace, info) -> tuple[dict[int, np.ndarray], object]:
    """The prompt masks of ``segment``'s ``--mask``, ``--prompt`` and ``--prompts`` for a video
    described by ``info``, read and checked against its frames; and the palette of the first
    palette PNG among them (None if there is none).

    Raises:
        ValueError: A malformed ``--prompt``, two prompts for one frame, a frame past the end,
            a file of ``--prompts`` named like no frame, or a mask that is unreadable or not
            of the frames' size.
        FileNotFoundError: A missing mask file or directory.
    """
    from dinotrack.masks import check_prompt, read_mask

    sources: dict[int, str] = {}
    end = info.num_frames
    if args.max_frames is not None:
        end = min(end, args.start_frame + args.max_frames)

    def add(index: int, path: str, flag: str) -> None:
        if index in sources:
            raise ValueError(f"two prompts for frame {index}: {sources[index]} and {path}")
        if index >= end:
            limit = "" if end == info.num_frames else f" (--max-frames: frames 0 to {end - 1})"
            raise ValueError(
                f"{flag} {path} is for frame {index}, past the last frame: {args.input} has "
                f"{info.num_frames} frames (0 to {info.num_frames - 1}){limit}"
            )
        sources[index] = path

    if args.mask is not None:
        add(args.start_frame, args.mask, "--mask")
    for text in args.prompt:
        frame, sep, path = text.partition(":")
        if not sep or not frame.strip().isdigit() or not path:
            raise ValueError(f"--prompt expects FRAME:MASK (e.g. 120:car.png), got {text!r}")
        add(int(frame), path, "--prompt")
    if args.prompts is not None:
        for index, path in prompt_files(args.prompts, info.frame_names):
            add(index, str(path), "--prompts")
    prompts, palette = {}, None
    for index in sorted(sources):
        loaded = read_mask(sources[index])
        if palette is None:
            palette = loaded.palette
        try:
            prompts[index] = check_prompt(loaded.ids, (info.height, info.width), index)
        except ValueError as error:
            raise ValueError(f"{sources[index]}: {error}") from None
    return prompts, palette


def prompt_files(directory: str | os.PathLike[str], frame_names: Sequence[str]) -> list:
    """``(frame index, path)`` of the PNG prompts in ``directory``, each named like a frame:
    its name in ``frame_names`` (the names of the masks written for the frames), or its
    frame index, zero-padded or not (``00120.png``).

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ValueError: It is not a directory, holds no PNG, or a PNG named like no frame.
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"--prompts {directory} does not exist")
    if not directory.is_dir():
        raise ValueError(f"--prompts {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"--prompts {directory} holds no PNG masks")
    by_name = {name: i for i, name in enumerate(frame_names)}
    found = []
    for path in files:
        index = by_name.get(path.name)
        if index is None and path.stem.isdigit():
            index = int(path.stem)
        if index is None:
            raise ValueError(
                f"--prompts: {path.name} is named like no frame; name prompts like the frames "
                f"(e.g. {frame_names[0]}) or by frame index (00120.png)"
            )
        found.append((index, path))
    return found


def parse_box(text: str) -> tuple[int, int, int, int]:
    """Parses ``"x0,y0,x1,y1"`` (pixels) into a box.

    Raises:
        ValueError: Not four integers, or not ``x0 < x1`` and ``y0 < y1``.
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        x0, y0, x1, y1 = (int(part) for part in parts)
    except ValueError:
        raise ValueError(
            f"box {text!r} must be four integers x0,y0,x1,y1 (pixels, e.g. 100,50,400,300)"
        ) from None
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"box {text!r} must have x0 < x1 and y0 < y1 (corners, in pixels)")
    return x0, y0, x1, y1


def _auto_start(args: argparse.Namespace, info):
    """The :class:`dinotrack.autostart.AutoStart` of ``segment --auto``'s flags for a video
    described by ``info`` (a :class:`dinotrack.video_io.VideoInfo`)."""
    from dinotrack.autostart import AutoStart, check_box

    if START_MASK_NAME in info.frame_names:
        raise ValueError(
            f"a frame of {args.input} is named like the start mask {START_MASK_NAME}; rename "
            "that frame"
        )
    box = None
    if args.box is not None:
        if len(args.box) > 1:
            raise ValueError("--auto takes one --box")
        box = check_box(parse_box(args.box[0]), (info.height, info.width))
    mass = DEFAULT_MASS if args.mass is None else args.mass
    objects = 1 if args.objects is None else args.objects
    return AutoStart(mass=mass, objects=objects, box=box)


def build_parser() -> argparse.ArgumentParser:
    """The ``dinotrack`` parser with every sub-command, plugins included."""
    parser = ArgumentParser(
        prog="dinotrack", description="Video object segmentation with DINO ViT features."
    )
    parser.add_argument("--version", action="version", version=f"dinotrack {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _segment_parser(subparsers)
    _attention_parser(subparsers)
    _models_parser(subparsers)
    register_export(subparsers)
    register_studio(subparsers)
    for entry in sorted(
        importlib.metadata.entry_points(group="dinotrack.commands"), key=lambda e: e.name
    ):
        try:
            register = entry.load()
        except ImportError as exc:  # a plugin that cannot import must not break the rest
            warnings.warn(f"sub-command {entry.name!r} is unavailable: {exc}", stacklevel=2)
            continue
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input or failure, 130 interrupted)."""
    parser = build_parser()
    return run_command(parser, parser.parse_args(argv))
