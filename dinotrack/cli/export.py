"""``dinotrack export`` and the output flags of ``dinotrack segment`` (``--save``, ``--batch``).

Importing this module is cheap (no torch): the commands import what they need when they run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dinotrack.results.formats import EXPORT_FORMATS, FORMATS, parse_formats

__all__ = ["add_segment_output_arguments", "register", "run_export"]


def _formats_type(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        try:
            return parse_formats(text, allowed)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def add_segment_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--save`` (output formats) and ``--batch`` (a list of videos) to ``segment``."""
    parser.add_argument(
        "--save",
        type=_formats_type(FORMATS),
        default=("png",),
        metavar="FORMATS",
        help="comma list of outputs: png (palette PNG per frame), coco (coco.json: per object "
        "and frame an RLE mask, box and area, YouTube-VIS layout), mot (mot.txt: MOTChallenge "
        "box tracks), objects (objects/<id>/<frame>.png binary masks) (default png)",
    )
    parser.add_argument(
        "--batch",
        type=Path,
        default=None,
        metavar="LIST.csv",
        help="segment many videos: a CSV with a header and columns video and mask (or "
        "prompts: a folder, or FRAME:MASK;FRAME:MASK) and optional start_frame,direction,out "
        "(relative paths are relative to the CSV); one result folder per video under --out, "
        "reused on a rerun only if made the same way and whole, --out/batch-summary.json; "
        "under torchrun each process takes its share of the list",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` command to the ``dinotrack`` parser."""
    p = subparsers.add_parser(
        "export",
        help="convert a results folder of palette PNGs to COCO RLE, MOT tracks, per-object masks",
        description="Convert the palette PNGs of a results folder (from dinotrack or any other "
        "method; one video, or <video>/<frame>.png folders) to the formats of "
        "`segment --save`. PNGs named by frame number (00012.png) give those frame numbers.",
    )
    p.add_argument("results", type=Path, help="folder of <frame>.png, or of <video>/<frame>.png")
    p.add_argument(
        "--to",
        required=True,
        type=_formats_type(EXPORT_FORMATS),
        metavar="FORMATS",
        help=f"comma list of {', '.join(EXPORT_FORMATS)}",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: each video's own results folder); with several videos "
        "each gets <out>/<video>/",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier export"
    )
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Run ``dinotrack export``."""
    from rich.console import Console

    from dinotrack.results.export import export_results
    from dinotrack.results.writer import START_MASK_NAME

    written = export_results(
        args.results, args.to, args.out, overwrite=args.overwrite, ignore=(START_MASK_NAME,)
    )
    shown = ", ".join(str(p) for p in written[:4]) + (" ..." if len(written) > 4 else "")
    Console(stderr=True).print(f"exported {len(written)} file(s): {shown}", soft_wrap=True)
    return 0
