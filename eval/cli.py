"""``dinotrack eval``: DAVIS scoring and benchmarking sub-commands.

Plugged into the ``dinotrack`` CLI through the ``dinotrack.commands`` entry point group:
:func:`register` adds ``eval score`` (score any method's result PNGs) and ``eval davis``
(propagate a split with a dinotrack backbone, then score it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
    commands = parser.add_subparsers(dest="eval_command", metavar="{score,davis}")
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
    _add_output_arguments(score)
    score.set_defaults(func=_run_score)


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dataset")
    group.add_argument("--root", required=True, type=Path, help="DAVIS root folder")
    group.add_argument("--split", default="val", help="split name, e.g. train, val (default val)")
    group.add_argument(
        "--sequences",
        type=_comma_list,
        default=None,
        help="comma-separated sequence names to restrict the run to",
    )
    group.add_argument(
        "--year",
        choices=("2016", "2017"),
        default=None,
        help="read ImageSets/<year>/<split>.txt (default: 2017, else 2016, else "
        "ImageSets/<resolution>/<split>.txt)",
    )
    group.add_argument("--resolution", default="480p", help="resolution folder (default 480p)")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
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
        help="where to write the JSON record (default <results>/scores-<split>.json)",
    )


def _comma_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated sequence names")
    return names


def _run_score(args: argparse.Namespace) -> int:
    from eval.davis import open_davis
    from eval.report import evaluation_record, print_table, write_csvs, write_json
    from eval.scoring import score_results

    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {args.workers}")
    dataset = open_davis(
        args.root,
        args.split,
        sequences=args.sequences,
        year=args.year,
        resolution=args.resolution,
    )
    results = Path(args.results)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {results} does not exist")
    stderr = Console(stderr=True)
    with _progress(stderr) as progress:
        task = progress.add_task("scoring", total=len(dataset.sequences))
        evaluation = score_results(
            dataset,
            results,
            workers=args.workers,
            on_sequence_done=lambda name: progress.advance(task),
        )
    global_path, per_sequence_path = write_csvs(evaluation, results)
    record = evaluation_record(
        evaluation,
        {"root": str(dataset.root), "results": str(results), "year": dataset.year},
    )
    json_path = write_json(args.json or results / f"scores-{dataset.split}.json", record)
    print_table(evaluation)
    stderr.print(f"wrote {global_path}, {per_sequence_path} and {json_path}", soft_wrap=True)
    return 0


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
