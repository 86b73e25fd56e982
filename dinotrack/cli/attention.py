"""``dinotrack attention``: the last block's class-token attention of an image or a video.

For an image, ``--out`` is a directory (published atomically) holding, for each head
``k`` and for the mean of the heads:

- ``head-KK.png`` / ``mean.png``: the map coloured over the image (viridis, each map scaled
  by its own maximum), with the outline of its mass-threshold set;
- ``head-KK-mask.png`` / ``mean-mask.png``: that set (the smallest set of patches holding
  ``--mass`` of the map) as a palette PNG, id 1 = inside; usable as ``segment --mask``;
- ``attention.npy``: the patch-level maps ``[heads, h/p, w/p]`` float32, each summing to 1.

For a video (or a directory of frames), ``--out`` is an mp4/mov/mkv showing the mean map (or
``--head K``) coloured the same way, frame by frame; frames are streamed, so memory does not
grow with the video's length, and the file appears only once complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dinotrack.cli.common import (
    add_tracker_arguments,
    build_tracker,
    check_not_input,
    check_tracker_flags,
    positive_int,
)
from dinotrack.config import DEFAULT_MASS, UPSAMPLE_MODES
from dinotrack.errors import InputError


def register(subparsers) -> None:
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


_VIDEO_OUTPUTS = (".mp4", ".mov", ".mkv")
_DATA_SUFFIXES = (".npy", ".npz", ".json", ".txt", ".csv", ".pdf", ".svg", ".gif")
"""With the image and video suffixes: names of files, not of an image's output folder."""


def run_attention(args: argparse.Namespace) -> int:
    """Run ``dinotrack attention``; returns the exit status."""
    from dinotrack.io.images import check_input_path
    from dinotrack.io.video import IMAGE_SUFFIXES

    source = check_input_path(args.input, "input", directory_ok=True)
    check_tracker_flags(args)
    if not 0.0 < args.mass <= 1.0:
        raise InputError(f"--mass must be in (0, 1], got {args.mass}")
    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be in [0, 1], got {args.alpha}")
    if source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        return _run_image(args, source)
    return _run_video(args, source)


def _render_args(args: argparse.Namespace) -> dict:
    return dict(upsample=args.upsample, mass=args.mass, alpha=args.alpha)


def _run_image(args: argparse.Namespace, source: Path) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from dinotrack.io.masks import write_mask
    from dinotrack.io.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_image
    from dinotrack.results.colour_map import outline_palette, render
    from dinotrack.results.overlay import blend_overlay
    from dinotrack.results.writer import ResultWriter

    suffix = Path(args.out).suffix.lower()
    if suffix in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES, *_DATA_SUFFIXES):
        kind = "a video" if suffix in VIDEO_SUFFIXES else f"a {suffix} file"
        raise InputError(
            f"{source} is an image: --out names a directory of PNGs (one per head), not "
            f"{kind} ({args.out}); give a folder name, e.g. {Path(args.out).with_suffix('')}"
        )
    for flag in ("head", "max_frames"):
        if getattr(args, flag) is not None:
            raise InputError(f"--{flag.replace('_', '-')} applies to videos; {source} is an image")
    results = ResultWriter(
        args.out, inputs=[("input", source), ("--weights", args.weights)], flag="--out"
    )
    target = results.directory
    frame = read_image(source)
    tracker = build_tracker(args)
    attn = tracker.attention(frame[None])[0]  # [heads, h/p, w/p], each summing to 1
    maps = torch.cat([attn, attn.mean(0, keepdim=True)])
    names = [f"head-{k:02d}" for k in range(len(attn))] + ["mean"]
    with results:
        out = results.staging
        for name, attn_map in zip(names, maps, strict=True):
            picture, mask = render(frame, attn_map, **_render_args(args))
            outline = np.zeros_like(mask) if args.no_outline else mask
            # alpha 0 keeps the colours and only draws the outline (see blend_overlay).
            picture = blend_overlay(picture, outline, outline_palette(), alpha=0.0)
            Image.fromarray(picture).save(out / f"{name}.png")
            write_mask(out / f"{name}-mask.png", mask)
        np.save(out / "attention.npy", attn.numpy())
    print(
        f"attention of {len(attn)} heads of {tracker.spec.name} on a "
        f"{frame.shape[1]}x{frame.shape[0]} image -> {target}",
        file=sys.stderr,
    )
    return 0


def _run_video(args: argparse.Namespace, source: Path) -> int:
    import numpy as np

    from dinotrack.io.atomic import (
        make_parents,
        output_file,
        remove_empty,
        remove_stale_temporaries,
    )
    from dinotrack.io.video import FrameReader
    from dinotrack.results.colour_map import outline_palette, render
    from dinotrack.results.overlay import OverlayWriter

    if Path(args.out).suffix.lower() not in _VIDEO_OUTPUTS:
        raise InputError(
            f"{source} is a video: --out must be a {'/'.join(_VIDEO_OUTPUTS)} file, got {args.out}"
        )
    reader = FrameReader(source, stop=args.max_frames)
    made: list[Path] = []
    try:
        info = reader.info
        target = output_file(args.out, overwrite=args.overwrite, flag="--out")
        check_not_input(target, source, "--out")
        remove_stale_temporaries(target)
        tracker = build_tracker(args)
        heads = tracker.num_heads
        if args.head is not None and not 0 <= args.head < heads:
            raise InputError(f"--head {args.head} does not exist: the backbone has {heads} heads")
        start, count = time.perf_counter(), 0
        settings = _render_args(args)
        # With alpha 0 the writer keeps the pictures' colours and only outlines the masks,
        # as the image path does.
        size = (info.width, info.height)
        made = make_parents(target)
        with OverlayWriter(target, info.fps, *size, outline_palette(), alpha=0.0) as writer:
            for frame, attn in tracker.iter_attention(reader):
                attn_map = attn.mean(0) if args.head is None else attn[args.head]
                picture, mask = render(frame, attn_map, **settings)
                writer.write(picture, np.zeros_like(mask) if args.no_outline else mask)
                count += 1
    except BaseException:
        remove_empty(made)  # a failed run leaves no new empty folder
        raise
    finally:
        reader.close()
    elapsed = time.perf_counter() - start
    shown = "the mean of the heads" if args.head is None else f"head {args.head}"
    print(
        f"attention video of {count} frames ({shown} of {tracker.spec.name}), "
        f"{count / max(elapsed, 1e-9):.2f} fps on {tracker.device} -> {target}",
        file=sys.stderr,
    )
    return 0
