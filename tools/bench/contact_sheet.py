"""Track a clip from a first mask and draw a contact sheet: chosen frames side by side, the
tracked mask overlaid in green (its outline in white), each labelled with its frame index and
the mask's share of the frame. For judging by eye whether an object is still followed.

    python -m tools.bench.contact_sheet ../shared/data/videos-wild/02_cups.mp4 \\
        --mask first.png --model dinotrack_vitt16_v3 --frames 0,15,30,45,60 --out cups.png

Prints one JSON line per shown frame (index, mask area share, seconds per tracked frame).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dinotrack import Tracker
from dinotrack.io.atomic import atomic_output
from dinotrack.io.masks import read_mask

TILE_WIDTH = 400


def overlay(frame: np.ndarray, mask: np.ndarray) -> Image.Image:
    """The frame with ``mask > 0`` tinted green and its border drawn white."""
    shown = frame.astype(np.float32)
    inside = mask > 0
    shown[inside] = 0.5 * shown[inside] + 0.5 * np.array([0, 255, 0], np.float32)
    edge = inside ^ _eroded(inside)
    shown[edge] = 255
    return Image.fromarray(shown.astype(np.uint8))


def _eroded(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--mask", type=Path, required=True, help="first frame's mask (PNG)")
    parser.add_argument("--model", default=None, help="backbone name (default: the offline one)")
    parser.add_argument("--weights", type=Path, default=None, help="a backbone.pth instead")
    parser.add_argument("--frames", default="0,15,30,45,60", help="comma-separated indices")
    parser.add_argument("--short-side", type=int, default=None, help="default: the preset's")
    parser.add_argument(
        "--redetect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="find lost objects again (TrackerConfig.redetect; default: the preset's)",
    )
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        shown = sorted({int(f) for f in args.frames.split(",") if f.strip()})
        if not shown or shown[0] < 0:
            raise ValueError("--frames needs indices >= 0")
    except ValueError as exc:
        print(f"contact_sheet: error: {exc}", file=sys.stderr)
        return 2
    from dinotrack.models.registry import OFFLINE_MODEL

    overrides = {} if args.short_side is None else {"short_side": args.short_side}
    if args.redetect is not None:
        overrides["redetect"] = args.redetect
    model = args.model or (None if args.weights else OFFLINE_MODEL)
    tracker = Tracker.from_pretrained(model, weights=args.weights, device="cpu", **overrides)
    first = read_mask(args.mask)
    tiles = []
    start = time.perf_counter()
    tracked = tracker.track(str(args.video), first.ids, with_frames=True, stop=shown[-1] + 1)
    for index, mask, frame in tracked:
        if index not in shown:
            continue
        tile = overlay(frame, mask)
        tile = tile.resize((TILE_WIDTH, round(TILE_WIDTH * tile.height / tile.width)))
        share = float((mask > 0).mean())
        ImageDraw.Draw(tile).text((6, 6), f"frame {index}  mask {100 * share:.1f}%", fill="white")
        tiles.append(tile)
        elapsed = (time.perf_counter() - start) / (index + 1)
        print(json.dumps({"frame": index, "mask_share": round(share, 4), "s_per_frame": elapsed}))
    sheet = Image.new("RGB", (TILE_WIDTH * len(tiles), tiles[0].height))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (k * TILE_WIDTH, 0))
    with atomic_output(args.out) as tmp:
        sheet.save(tmp, format="PNG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
