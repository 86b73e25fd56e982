"""``dinotrack segment --batch LIST.csv``: many videos, one result folder each, on one or many
processes.

The list is a CSV file with a header naming the columns ``video`` and ``mask`` (or
``prompts``) and optionally ``start_frame``, ``direction`` and ``out``; relative paths are
relative to the CSV's folder. Each video is segmented exactly as ``dinotrack segment VIDEO
--mask MASK --start-frame N --direction D --out OUT/<out>`` with the batch's other flags
(``<out>`` defaults to the video's file name without its suffix). A ``prompts`` cell is a
folder (``--prompts DIR``) or ``FRAME:MASK;FRAME:MASK`` (``--prompt FRAME:MASK`` each). The
list is read strictly: an unclosed quote, a cell over 128 KiB, extra cells, a column named
twice, and outs that clash (shared, nested, the summary's name) are refused before any work
(:mod:`dinotrack.cli.batch_list`).

- Resume: a video whose result folder was published, whose record describes the same run
  (:func:`dinotrack.cli.job.run_description`: the input's and prompts' checksums, model,
  weights' checksum, settings, formats) and whose recorded files are whole (see
  :func:`dinotrack.results.writer.reusable`) is skipped, so a killed batch restarted with the
  same command does only what is left; any other is segmented again, with a line saying why.
- Errors: a video that fails (missing or unreadable file, bad mask...) is reported in one line
  and in ``OUT/batch-summary.json`` while the others go on; the exit status is 1 when any
  failed (0 under ``torchrun``, see :func:`run_batch`).
- One batch per ``OUT`` at a time (an ``flock`` of the folder); an ``out`` that a symbolic link
  leads out of ``OUT`` is refused.
- Distributed: under ``torchrun`` each process takes every ``WORLD_SIZE``-th video from its
  ``RANK`` (see :func:`dinotrack.pipeline.distributed.shard`) and runs on its own GPU
  (``LOCAL_RANK``), or on the CPU with gloo; rank 0 gathers the records and writes the summary.

Launch::

    dinotrack segment --batch videos.csv --out runs/
    torchrun --nproc-per-node 8 -m dinotrack segment --batch videos.csv --out runs/
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dinotrack.cli.batch_list import COLUMNS, SUMMARY_FILE, BatchItem, read_batch_list
from dinotrack.errors import InputError
from dinotrack.io.atomic import atomic_output

__all__ = ["COLUMNS", "SUMMARY_FILE", "BatchItem", "read_batch_list", "run_batch"]


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
    before), 1 when any failed (0 under ``torchrun``, whose launcher turns any other status of
    a process into a crash report: there the summary line and file count the failures).

    Each video is one :func:`dinotrack.cli.job.segment_one`, with the tracker built once.

    Raises:
        InputError: Flags that belong to a single video, a bad list (see
            :func:`read_batch_list`), an ``out`` that leads outside ``--out`` through a
            symbolic link, or another batch running on the same ``--out``.
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
        with _batch_lock(root, info, distributed):
            _check_links(root, items)
            mine = [items[i] for i in distributed.shard(len(items), info.rank, info.world_size)]
            records, fatal = _run_share(args, mine, root, info)
            gathered = distributed.all_gather_objects((records, fatal))
            everything = sorted((r for part, _ in gathered for r in part), key=lambda r: r.row)
            failures = [f"rank {rank}: {err}" for rank, (_, err) in enumerate(gathered) if err]
            if info.is_main:
                _write_summary(root, args.batch, info.world_size, everything, failures)
                _print_summary(root, everything, info.distributed)
            if failures:
                raise RuntimeError("; ".join(failures))
    finally:
        distributed.teardown(info)
    if info.distributed:
        return 0
    return 1 if any(r.status == "failed" for r in everything) else 0


@contextlib.contextmanager
def _batch_lock(root: Path, info, distributed):
    """Hold ``root`` (made if need be) locked for the batch (an ``flock`` of the folder
    itself: no file is left behind, and a killed batch holds nothing): rank 0 takes it, and
    every rank refuses when another batch holds it."""
    handle, error = None, None
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        handle = os.open(root, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            handle = None
            error = (
                f"another batch is running on --out {root}; wait for it to end, or give "
                "another --out"
            )
    error = distributed.broadcast_object(error)
    if error is not None:
        raise InputError(error)
    try:
        yield
    finally:
        if handle is not None:
            os.close(handle)


def _check_links(root: Path, items: list[BatchItem]) -> None:
    """Refuse a row whose ``out`` leads out of ``root`` through a symbolic link."""
    real_root = os.path.realpath(root)
    for item in items:
        if not Path(os.path.realpath(root / item.out)).is_relative_to(real_root):
            raise InputError(
                f"row {item.row}: out {item.out!r} leads "
                f"outside --out {root} through a symbolic link "
                f"(to {os.path.realpath(root / item.out)}); name a folder inside --out"
            )


def _check_batch_flags(args: argparse.Namespace) -> None:
    if args.input is not None:
        raise InputError(
            f"--batch takes its videos from the list; drop the input {args.input} (or drop "
            "--batch to segment one video)"
        )
    single = {
        "--mask": args.mask is not None,
        "--prompt": bool(args.prompt),
        "--prompts": args.prompts is not None,
        "--auto": args.auto,
        "--overlay": args.overlay is not None,
        "--start-frame": args.start_frame != 0,
    }
    given = [flag for flag, present in single.items() if present]
    if given:
        raise InputError(
            f"{', '.join(given)} cannot be used with --batch: each video's masks and start "
            "frame come from the list's mask (or prompts) and start_frame columns"
        )


def _item_args(args: argparse.Namespace, item: BatchItem, target: Path) -> argparse.Namespace:
    """The flags of ``dinotrack segment`` for one row of the list."""
    return _with(
        args,
        batch=None,
        input=str(item.video),
        mask=None if item.mask is None else str(item.mask),
        prompt=list(item.prompt),
        prompts=None if item.prompts is None else str(item.prompts),
        direction=item.direction or args.direction,
        start_frame=item.start_frame,
        out=str(target),
    )


def _run_share(args, items: list[BatchItem], root: Path, info) -> tuple[list[_Record], str | None]:
    """Segment this process's videos; returns their records and a fatal error (or None)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from dinotrack.cli.common import USER_ERRORS, build_tracker, error_line
    from dinotrack.cli.job import run_description, segment_one
    from dinotrack.results.record import reusable

    console = Console(stderr=True)

    def say(text: str) -> None:
        prefix = f"[rank {info.rank}] " if info.distributed else ""
        console.print(prefix + text, soft_wrap=True, markup=False, highlight=False)

    records: list[_Record] = []
    tracker = None
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.2f} fps"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (console.is_terminal and info.is_main),
    )
    published = 0
    args.on_interrupt = _interrupted(published)
    try:
        with progress:
            videos = progress.add_task("videos", total=len(items), fps=0.0)
            for position, item in enumerate(items, start=1):
                record = _Record(
                    row=item.row,
                    video=str(item.video),
                    mask=str(item.mask or item.prompts or ";".join(item.prompt)),
                    out=item.out,
                    status="done",
                    error=None,
                    seconds=None,
                    rank=info.rank,
                )
                target = root / item.out
                video_args = _item_args(args, item, target)
                why = reusable(target, run_description(video_args))
                if why is None:  # published whole by an earlier run, the same way
                    record.status = "skipped"
                else:
                    if why != "no result":
                        say(f"row {item.row} ({item.out}): segmenting again: {why}")
                    if tracker is None:
                        tracker = build_tracker(_with(args, device=str(info.device)))
                    started = time.perf_counter()
                    try:
                        segment_one(video_args, tracker=tracker, progress=progress)
                    except USER_ERRORS as exc:
                        record.status, record.error = "failed", error_line(exc)
                        say(f"dinotrack: error: {item.video} (row {item.row}): {record.error}")
                    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: was it published before?
                        published += reusable(target, run_description(video_args)) is None
                        args.on_interrupt = _interrupted(published)
                        raise
                    else:
                        published += 1
                        args.on_interrupt = _interrupted(published)
                    record.seconds = time.perf_counter() - started
                records.append(record)
                progress.advance(videos)
                if progress.disable:  # off a terminal (a log): one line per video
                    took = "" if record.seconds is None else f" in {record.seconds:.1f} s"
                    say(
                        f"video {position}/{len(items)} (row {item.row}) {item.out}: "
                        f"{record.status}{took}"
                    )
    except Exception as exc:  # reported by every rank after the gather, not a hang
        return records, error_line(exc)
    return records, None


def _interrupted(published: int) -> str:
    """What an interrupted batch says after ``interrupted;``/``terminated;``."""
    if published == 0:
        done = "no video of this run was published (results of earlier runs are kept)"
    else:
        done = f"{published} video(s) of this run were published before it (complete, kept)"
    return f"{done}; the video being segmented was discarded; run the same command again"


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


def _print_summary(root: Path, records: list[_Record], distributed: bool = False) -> None:
    from rich.console import Console

    counts = {s: sum(r.status == s for r in records) for s in ("done", "skipped", "failed")}
    Console(stderr=True).print(
        f"batch: {counts['done']} done, {counts['skipped']} skipped (finished before), "
        f"{counts['failed']} failed -> {root / SUMMARY_FILE}"
        + (
            " (under torchrun the exit status is 0 even when videos failed: count them here)"
            if distributed and counts["failed"]
            else ""
        ),
        soft_wrap=True,
    )
