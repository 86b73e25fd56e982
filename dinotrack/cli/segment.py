"""``dinotrack segment``: its flags; one video's job is :mod:`dinotrack.cli.job`, a list of
videos :mod:`dinotrack.cli.batch`."""

from __future__ import annotations

import argparse

from dinotrack.cli.batch import run_batch
from dinotrack.cli.common import add_tracker_arguments, positive_int
from dinotrack.cli.export import add_segment_output_arguments
from dinotrack.cli.job import segment_one
from dinotrack.config import DIRECTIONS
from dinotrack.results.writer import START_MASK_NAME


def register(subparsers) -> None:
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
        help="the mask of frame FRAME (counted from 0; negative from the end: -1 is the last "
        "frame), repeatable: new ids are objects from that frame on, known ids are corrected "
        "there, others go on being tracked; an RGB colour is one object in every prompt",
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
        "before it (default 0); with --direction backward or both, also from there down to "
        "frame 0",
    )
    add_tracker_arguments(p)
    p.set_defaults(func=run_segment)


def _click_arguments(p: argparse.ArgumentParser) -> None:
    """``--point``, ``--neg-point`` and ``--box``: prompts grown from clicks
    (:mod:`dinotrack.cli.clicks`)."""
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


def run_segment(args: argparse.Namespace) -> int:
    """Run ``dinotrack segment``: one video (:func:`dinotrack.cli.job.segment_one`), or the
    videos of ``--batch`` (:func:`dinotrack.cli.batch.run_batch`)."""
    if args.batch is not None:
        return run_batch(args)
    return segment_one(args)
