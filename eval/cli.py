"""``dinotrack eval``: DAVIS scoring and benchmarking sub-commands.

Plugged into the ``dinotrack`` CLI through the ``dinotrack.commands`` entry point group:
:func:`register` adds ``eval score`` (score any method's result PNGs) and ``eval davis``
(propagate a split with a dinotrack backbone, then score it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dinotrack.cli.common import add_tracker_arguments
from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.atomic import make_parents, output_file

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command and its sub-commands to the ``dinotrack`` parser.

    Args:
        subparsers: The sub-parsers object of the ``dinotrack`` parser.
    """
    parser = subparsers.add_parser(
        "eval",
        help="DAVIS benchmarking with the official J&F semantics",
        description="Score video object segmentation results on DAVIS with the official "
        "DAVIS-2017 semi-supervised J&F semantics.",
    )
    commands = parser.add_subparsers(dest="eval_command", metavar="{score,davis,youtube-vos}")
    commands.required = True

    score = commands.add_parser(
        "score",
        help="score a folder of result PNGs from any method",
        description="Score <results>/<sequence>/<frame>.png against a DAVIS split; write "
        "global_results-<split>.csv, per-sequence_results-<split>.csv and "
        "scores-<split>.json into the results folder.",
    )
    _add_dataset_arguments(score)
    score.add_argument(
        "--results", required=True, type=Path, help="folder of <sequence>/<frame>.png results"
    )
    score.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --json file, and score files in --results that dinotrack "
        "did not write",
    )
    _add_output_arguments(score)
    score.set_defaults(func=_run_score)

    davis = commands.add_parser(
        "davis",
        help="propagate a DAVIS split with a backbone, then score it",
        description="Track every sequence of a DAVIS split from its first annotated frame "
        "(same flags and code path as `dinotrack segment`), write <out>/<sequence>/<frame>.png, "
        "then score them into <out>. Sequences whose outputs are complete are not redone "
        "unless --overwrite.",
    )
    _add_dataset_arguments(davis)
    davis.add_argument("--out", required=True, type=Path, help="output folder")
    davis.add_argument(
        "--overwrite",
        action="store_true",
        help="track every sequence again (no resuming), and replace an existing --json file",
    )
    add_tracker_arguments(davis)
    _add_output_arguments(davis, json_default="<out>/scores-<split>.json")
    davis.set_defaults(func=_run_davis)

    ytvos = commands.add_parser(
        "youtube-vos",
        help="track and score a split in the YouTube-VOS layout (also MOSE, LVOS)",
        description="Prompt each object on its first annotated frame, track every video "
        "into <out>/Annotations/<video>/<frame>.png, and score J&F on the annotated frames "
        "after each object's first; a split whose ground truth is withheld (YouTube-VOS or "
        "MOSE valid) gets <out>/submission.zip for the evaluation server instead.",
    )
    ytvos.add_argument("--root", required=True, type=Path, help="dataset root folder")
    ytvos.add_argument("--split", default="valid", help="split folder (default valid)")
    ytvos.add_argument(
        "--videos", type=_comma_list, default=None, help="comma-separated video names"
    )
    ytvos.add_argument("--out", required=True, type=Path, help="output folder")
    add_tracker_arguments(ytvos)
    ytvos.set_defaults(func=_run_youtube_vos)


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dataset")
    group.add_argument("--root", required=True, type=Path, help="DAVIS root folder")
    group.add_argument("--split", default="val", help="split name, e.g. train, val (default val)")
    group.add_argument(
        "--sequences",
        type=_comma_list,
        default=None,
        help="comma-separated sequence names to restrict the run to (its score files are "
        "then named <split>-subset, e.g. global_results-val-subset.csv)",
    )
    group.add_argument(
        "--year",
        choices=("2016", "2017"),
        default=None,
        help="read ImageSets/<year>/<split>.txt (default: 2017, else 2016, else "
        "ImageSets/<resolution>/<split>.txt)",
    )
    group.add_argument("--resolution", default="480p", help="resolution folder (default 480p)")


def _add_output_arguments(
    parser: argparse.ArgumentParser, json_default: str = "<results>/scores-<split>.json"
) -> None:
    group = parser.add_argument_group("scoring")
    group.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes scoring sequences in parallel (default: one per CPU core)",
    )
    group.add_argument(
        "--json",
        type=Path,
        default=None,
        help=f"also write the JSON record here (it is always written to {json_default})",
    )


def _comma_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated sequence names")
    return names


def _open_dataset(args: argparse.Namespace, require_images: bool = False):
    """The split named by the dataset flags (after checking ``--workers``)."""
    from eval.davis import open_davis

    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be 0 or more, got {args.workers}")
    return open_davis(
        args.root,
        args.split,
        sequences=args.sequences,
        year=args.year,
        resolution=args.resolution,
        require_images=require_images,
    )


def _run_score(args: argparse.Namespace) -> int:
    from eval.report import (
        check_report_path,
        evaluation_record,
        global_csv_name,
        per_sequence_csv_name,
        print_table,
        write_csvs,
        write_json,
    )
    from eval.scoring import score_results

    dataset = _open_dataset(args)
    results = Path(args.results)
    if results.exists() and not results.is_dir():
        raise NotADirectoryError(f"--results {results} is a file, not a folder of PNG masks")
    if not results.is_dir():
        raise MissingFileError(f"results folder {results} does not exist")
    tag = dataset.tag
    for name in (global_csv_name(tag), per_sequence_csv_name(tag), f"scores-{tag}.json"):
        check_report_path(results / name, args.overwrite)  # before any work
    if args.json is not None:
        _check_json(args)
    stderr = Console(stderr=True)
    with _progress(stderr) as progress:
        task = progress.add_task("scoring", total=len(dataset.sequences))
        evaluation = score_results(
            dataset,
            results,
            workers=args.workers,
            on_sequence_done=lambda name: progress.advance(task),
        )
    global_path, per_sequence_path = write_csvs(evaluation, results, dataset.tag)
    record = evaluation_record(
        evaluation,
        {
            "root": str(dataset.root.resolve()),
            "results": str(results.resolve()),
            "year": dataset.year,
        },
    )
    json_path = write_json(results / f"scores-{dataset.tag}.json", record)
    if args.json is not None:
        write_json(args.json, record)
    print_table(evaluation)
    stderr.print(f"wrote {global_path}, {per_sequence_path} and {json_path}", soft_wrap=True)
    return 0


def _run_davis(args: argparse.Namespace) -> int:
    """``eval davis``; under torchrun each process tracks its share of the sequences and rank 0
    scores and reports them."""
    from dinotrack.pipeline import distributed
    from eval.report import (
        check_outside_dataset,
        check_report_path,
        global_csv_name,
        per_sequence_csv_name,
    )

    dataset = _open_dataset(args, require_images=True)
    check_outside_dataset(args.out, dataset.root)  # before the model loads
    tag = dataset.tag
    for name in (global_csv_name(tag), per_sequence_csv_name(tag), f"scores-{tag}.json"):
        check_report_path(args.out / name, args.overwrite)  # before any work
    if args.json is not None:
        _check_json(args)
    info = distributed.setup(args.device)
    try:
        return _run_davis_process(args, dataset, info)
    finally:
        distributed.teardown(info)


def _run_davis_process(args: argparse.Namespace, dataset, info) -> int:
    from dinotrack.cli.common import build_tracker
    from eval.report import print_table, write_json
    from eval.runner import run_davis

    stderr = Console(stderr=True, quiet=not info.is_main)
    t0 = time.perf_counter()
    # The tracker of `dinotrack segment`, from the same flags, on this process's device.
    tracker = build_tracker(argparse.Namespace(**{**vars(args), "device": str(info.device)}))
    load_seconds = time.perf_counter() - t0
    with _progress(stderr) as progress:
        bar = _RichRunProgress(progress, len(dataset.sequences))
        run = run_davis(
            dataset,
            tracker,
            args.out,
            weights=args.weights,
            overwrite=args.overwrite,
            workers=args.workers,
            progress=bar,
            extra={"timings": {"model_load_seconds": load_seconds}},
        )
    if not info.is_main:
        return 0
    if args.json is not None:
        write_json(args.json, run.record)
    resumed = [r.name for r in run.sequences if r.resumed]
    if resumed:
        stderr.print(
            f"resumed: {len(resumed)} sequence(s) already complete in {run.out} were not "
            "tracked again (--overwrite redoes them)",
            soft_wrap=True,
        )
    print_table(run.evaluation, title=f"DAVIS {dataset.split} - {tracker.spec.name}")
    fps = run.record["timings"]["tracking_fps"]
    stderr.print(
        f"J&F {run.evaluation.global_row()['J&F-Mean']:.4f}; "
        + (f"{fps:.2f} frames/s on {tracker.device}; " if fps else "")
        + f"wrote {run.out}/scores-{dataset.tag}.json and the CSVs",
        soft_wrap=True,
    )
    return 0


def _check_json(args: argparse.Namespace) -> None:
    from eval.report import check_report_path

    output_file(args.json, overwrite=True, flag="--json")  # a directory, a parent that is a file
    check_report_path(args.json, args.overwrite, flag="--json")
    make_parents(args.json)


def _run_youtube_vos(args: argparse.Namespace) -> int:
    from dinotrack.cli.common import build_tracker
    from dinotrack.results.writer import ResultWriter
    from eval.report import check_outside_dataset
    from eval.youtube_vos import SUBMISSION_NAME, open_sparse_split, run_sparse

    videos = open_sparse_split(args.root, args.split, args.videos)
    check_outside_dataset(args.out, args.root)
    results = ResultWriter(args.out, inputs=[("--root", args.root)], flag="--out")
    out = results.directory
    tracker = build_tracker(args)
    with results:  # published whole when every video is done, else not at all
        result = run_sparse(videos, tracker, results.staging)
    stderr = Console(stderr=True)
    if result["withheld"]:
        stderr.print(
            f"the ground truth of {args.split} is withheld (annotations hold each object's "
            f"first frame only): wrote {out / SUBMISSION_NAME} for the evaluation server, "
            f"{len(videos)} videos; nothing scored here",
            soft_wrap=True,
        )
        return 0
    summary = result["summary"]
    print(
        f"{args.split}: J {summary['J-Mean']:.4f}  F {summary['F-Mean']:.4f}  "
        f"J&F {summary['J&F-Mean']:.4f}  ({summary['objects']} objects, {len(videos)} videos)"
    )
    return 0


class _RichRunProgress:
    """Two bars: sequences done, and frames of the current sequence."""

    def __init__(self, progress: Progress, num_sequences: int) -> None:
        self.progress = progress
        self.sequences = progress.add_task("sequences", total=num_sequences)
        self.frames = progress.add_task("frames", total=None)

    def sequence_started(self, name: str, num_frames: int) -> None:
        self.progress.reset(self.frames, total=num_frames, description=f"frames of {name}")

    def frame_done(self) -> None:
        self.progress.advance(self.frames)

    def sequence_done(self, name: str, resumed: bool) -> None:
        self.progress.advance(self.sequences)
        if resumed:
            self.progress.update(self.frames, completed=self.progress.tasks[self.frames].total)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # a log file gets the summary lines only
    )
