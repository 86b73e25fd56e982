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

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dinotrack.cli.common import build_tracker, check_not_input
from dinotrack.config import DEFAULT_MASS
from dinotrack.io.atomic import make_parents, output_file, remove_empty, remove_stale_temporaries
from dinotrack.io.images import check_input_path
from dinotrack.io.masks import blend_overlay, davis_palette, write_mask
from dinotrack.io.video import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    FrameReader,
    read_image,
)
from dinotrack.models.attention import mass_threshold, upsample_attention
from dinotrack.results.colour_map import attention_overlay
from dinotrack.results.overlay import OverlayWriter
from dinotrack.results.writer import ResultWriter

_VIDEO_OUTPUTS = (".mp4", ".mov", ".mkv")


def outline_palette() -> np.ndarray:
    """The DAVIS palette with id 1 white: the colour of the mass-threshold outlines."""
    palette = davis_palette()
    palette[1] = (255, 255, 255)  # the mass-threshold outline, white over the colour map
    return palette


def run_attention(args: argparse.Namespace) -> int:
    """Run ``dinotrack attention``; returns the exit status."""
    source = check_input_path(args.input, "input", directory_ok=True)
    if not 0.0 < args.mass <= 1.0:
        raise ValueError(f"--mass must be in (0, 1], got {args.mass}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        return _run_image(args, source)
    return _run_video(args, source)


def render(
    frame: np.ndarray,
    attn_map: Tensor,
    *,
    upsample: str = "nearest",
    mass: float = DEFAULT_MASS,
    alpha: float = 0.6,
) -> tuple[np.ndarray, np.ndarray]:
    """One attention map coloured over its frame, and the map's mass-threshold mask.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        attn_map: ``[h, w]`` patch-level map.
        upsample: ``"nearest"`` or ``"bilinear"`` resizing of the map to the frame.
        mass: Share of the map's mass the mask holds.
        alpha: Opacity of the colours.

    Returns:
        ``(picture, mask)``: ``[H, W, 3]`` uint8 RGB and ``[H, W]`` uint8 (1 = kept patch).
        ``blend_overlay(picture, mask, outline_palette(), alpha=0.0)`` outlines the mask.
    """
    size = (int(frame.shape[0]), int(frame.shape[1]))
    picture = attention_overlay(frame, upsample_attention(attn_map, size, upsample), alpha)
    keep = mass_threshold(attn_map, mass)
    mask = (upsample_attention(keep, size, "nearest") > 0.5).cpu().numpy().astype(np.uint8)
    return picture, mask


def _render_args(args: argparse.Namespace) -> dict:
    return dict(upsample=args.upsample, mass=args.mass, alpha=args.alpha)


def _run_image(args: argparse.Namespace, source: Path) -> int:
    if Path(args.out).suffix.lower() in VIDEO_SUFFIXES:
        raise ValueError(
            f"{source} is an image: --out names a directory of PNGs, not a video ({args.out})"
        )
    for flag in ("head", "max_frames"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} applies to videos; {source} is an image")
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
    if Path(args.out).suffix.lower() not in _VIDEO_OUTPUTS:
        raise ValueError(
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
            raise ValueError(f"--head {args.head} does not exist: the backbone has {heads} heads")
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
