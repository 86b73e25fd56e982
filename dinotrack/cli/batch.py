"""``dinotrack segment --batch LIST.csv``: many videos, one result folder each, on one or many
processes.

The list is a CSV file with a header naming the columns ``video`` and ``mask`` and optionally
``start_frame`` and ``out``; relative paths are relative to the CSV's folder. Each video is
segmented exactly as ``dinotrack segment VIDEO --mask MASK --start-frame N --out OUT/<out>``
with the batch's other flags (``<out>`` defaults to the video's file name without its suffix).

- Resume: a video whose result folder was published (complete, with its record of files, see
  :mod:`dinotrack.results.writer`) is skipped, so a killed batch restarted with the same command
  does only what is left.
- Errors: a video that fails (missing or unreadable file, bad mask...) is reported in one line
  and in ``OUT/batch-summary.json`` while the others go on; the exit status is 1 when any
  failed.
- Distributed: under ``torchrun`` each process takes every ``WORLD_SIZE``-th video from its
  ``RANK`` (see :func:`dinotrack.pipeline.distributed.shard`) and runs on its own GPU
  (``LOCAL_RANK``), or on the CPU with gloo; rank 0 gathers the records and writes the summary.

Launch::

    dinotrack segment --batch videos.csv --out runs/
    torchrun --nproc-per-node 8 -m dinotrack segment --batch videos.csv --out runs/
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.atomic import atomic_output
from dinotrack.results.writer import owned_files

__all__ = ["COLUMNS", "SUMMARY_FILE", "BatchItem", "read_batch_list", "run_batch"]

SUMMARY_FILE = "batch-summary.json"
REQUIRED_COLUMNS = ("video", "mask")
COLUMNS = (*REQUIRED_COLUMNS, "start_frame", "out")
"""The columns a batch list may have."""


@dataclass(frozen=True)
class BatchItem:
    """One video of a batch list.

    Attributes:
        row: Line number in the CSV file (2 for the first video, after the header).
        video: The video file or frames directory.
        mask: Its first mask.
        start_frame: Index of the frame the mask belongs to.
        out: Result folder, relative to the batch's output folder.
    """

    row: int
    video: Path
    mask: Path
    start_frame: int
    out: str


def read_batch_list(path: str | os.PathLike[str]) -> list[BatchItem]:
    """Read and check a batch list (see the module docstring).

    Files are not opened here: a missing video or mask is an error of that video alone.

    Raises:
        FileNotFoundError: No such list.
        ValueError: A missing or unknown column, an empty cell in ``video`` or ``mask``, a
            ``start_frame`` that is not an integer >= 0, an ``out`` that leaves the output
            folder, two videos with one ``out``, or no video at all.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"batch list {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file, skipinitialspace=True)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise InputError(
                f"batch list {path}: missing column(s) {', '.join(missing)}; its header must "
                f"name {','.join(REQUIRED_COLUMNS)} (optional: start_frame,out), got "
                f"{','.join(header) or 'nothing'}"
            )
        unknown = [name for name in header if name not in COLUMNS]
        if unknown:
            raise InputError(
                f"batch list {path}: unknown column(s) {', '.join(unknown)}; the columns are "
                f"{', '.join(COLUMNS)}"
            )
        rows = [
            {key.strip(): (value or "").strip() for key, value in row.items() if key}
            for row in reader
        ]
    items = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue  # a blank line
        items.append(_item(path, number, row))
        out = os.path.normcase(items[-1].out)
        if out in seen:
            raise InputError(
                f"batch list {path}: rows {seen[out]} and {number} both write to "
                f"{items[-1].out!r}; give them distinct out values"
            )
        seen[out] = number
    if not items:
        raise InputError(f"batch list {path} names no video")
    return items


def _item(path: Path, number: int, row: dict[str, str]) -> BatchItem:
    where = f"batch list {path}, row {number}"
    for name in REQUIRED_COLUMNS:
        if not row.get(name):
            raise InputError(f"{where}: the {name} cell is empty")
    text = row.get("start_frame") or "0"
    try:
        start_frame = int(text)
    except ValueError:
        raise InputError(f"{where}: start_frame must be an integer, got {text!r}") from None
    if start_frame < 0:
        raise InputError(f"{where}: start_frame must be 0 or more, got {start_frame}")
    video = path.parent / row["video"]
    out = row.get("out") or Path(row["video"]).stem
    parts = Path(out).parts
    if Path(out).is_absolute() or not parts or ".." in parts or out in (".", ""):
        raise InputError(
            f"{where}: out {out!r} must be a folder name inside --out (relative, without ..)"
        )
    return BatchItem(number, video, path.parent / row["mask"], start_frame, os.path.normpath(out))


@dataclass
class _Record:
    row: int
    video: str
    mask: str
    out: str
    status: str  # "done", "skipped" (published by an earlier run) or "failed"
    error: str | None
    seconds: float | None
    rank: int


def run_batch(args: argparse.Namespace) -> int:
    """Run ``dinotrack segment --batch``: returns 0 when every video is done (or was done
    before), 1 when any failed.

    Each video is one :func:`dinotrack.cli.job.segment_one`, with the tracker built once.

    Raises:
        ValueError: Flags that belong to a single video, or a bad list (see
            :func:`read_batch_list`).
        RuntimeError: A process of a distributed batch failed outside a video (e.g. the
            backbone could not be loaded).
    """
    from dinotrack.pipeline import distributed

    _check_batch_flags(args)
    items = read_batch_list(args.batch)
    root = Path(args.out)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--out {root} is a file; batch results need a folder")
    info = distributed.setup(args.device)
    try:
        root.mkdir(parents=True, exist_ok=True)
        mine = [items[i] for i in distributed.shard(len(items), info.rank, info.world_size)]
        records, fatal = _run_share(args, mine, root, info)
        gathered = distributed.all_gather_objects((records, fatal))
        everything = sorted((r for part, _ in gathered for r in part), key=lambda r: r.row)
        failures = [f"rank {rank}: {err}" for rank, (_, err) in enumerate(gathered) if err]
        if info.is_main:
            _write_summary(root, args.batch, info.world_size, everything, failures)
            _print_summary(root, everything)
        if failures:
            raise RuntimeError("; ".join(failures))
    finally:
        distributed.teardown(info)
    return 1 if any(r.status == "failed" for r in everything) else 0


def _check_batch_flags(args: argparse.Namespace) -> None:
    if args.input is not None:
        raise InputError(
            f"--batch takes its videos from the list; drop the input {args.input} (or drop "
            "--batch to segment one video)"
        )
    single = {
        "--mask": args.mask is not None,
        "--auto": args.auto,
        "--overlay": args.overlay is not None,
        "--start-frame": args.start_frame != 0,
    }
    given = [flag for flag, present in single.items() if present]
    if given:
        raise InputError(
            f"{', '.join(given)} cannot be used with --batch: each video's mask and start "
            "frame come from the list's mask and start_frame columns"
        )


def _run_share(args, items: list[BatchItem], root: Path, info) -> tuple[list[_Record], str | None]:
    """Segment this process's videos; returns their records and a fatal error (or None)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from dinotrack.cli.common import USER_ERRORS, build_tracker, error_line
    from dinotrack.cli.job import segment_one

    console = Console(stderr=True)
    records: list[_Record] = []
    tracker = None
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.2f} fps"),
        console=console,
        transient=True,
        disable=not (console.is_terminal and info.is_main),
    )
    try:
        with progress:
            videos = progress.add_task("videos", total=len(items), fps=0.0)
            for item in items:
                record = _Record(
                    row=item.row,
                    video=str(item.video),
                    mask=str(item.mask),
                    out=item.out,
                    status="done",
                    error=None,
                    seconds=None,
                    rank=info.rank,
                )
                target = root / item.out
                if owned_files(target) is not None:  # published whole by an earlier run
                    record.status = "skipped"
                else:
                    if tracker is None:
                        tracker = build_tracker(_with(args, device=str(info.device)))
                    video_args = _with(
                        args,
                        batch=None,
                        input=str(item.video),
                        mask=str(item.mask),
                        start_frame=item.start_frame,
                        out=str(target),
                    )
                    started = time.perf_counter()
                    try:
                        segment_one(video_args, tracker=tracker, progress=progress)
                    except USER_ERRORS as exc:
                        record.status, record.error = "failed", error_line(exc)
                        console.print(
                            f"dinotrack: error: {item.video} (row {item.row}): {record.error}",
                            soft_wrap=True,
                            markup=False,
                            highlight=False,
                        )
                    record.seconds = time.perf_counter() - started
                records.append(record)
                progress.advance(videos)
    except Exception as exc:  # reported by every rank after the gather, not a hang
        return records, error_line(exc)
    return records, None


def _with(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def _write_summary(
    root: Path, batch: Path, world_size: int, records: list[_Record], failures: list[str]
) -> None:
    counts = {s: sum(r.status == s for r in records) for s in ("done", "skipped", "failed")}
    summary = {
        "list": str(batch),
        "out": str(root),
        "world_size": world_size,
        "counts": counts,
        "process_errors": failures,
        "videos": [asdict(r) for r in records],
    }
    with atomic_output(root / SUMMARY_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")


def _print_summary(root: Path, records: list[_Record]) -> None:
    from rich.console import Console

    counts = {s: sum(r.status == s for r in records) for s in ("done", "skipped", "failed")}
    Console(stderr=True).print(
        f"batch: {counts['done']} done, {counts['skipped']} skipped (finished before), "
        f"{counts['failed']} failed -> {root / SUMMARY_FILE}",
        soft_wrap=True,
    )
