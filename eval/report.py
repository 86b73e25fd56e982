"""Write and show evaluation results: official CSVs, a JSON record and a rich table.

The CSVs are those of the official DAVIS-2017 evaluation, written with five decimals as it
writes them: ``global_results-<split>.csv`` with the columns ``J&F-Mean, J-Mean, J-Recall,
J-Decay, F-Mean, F-Recall, F-Decay``, and ``per-sequence_results-<split>.csv`` with a
``Sequence`` column (rows ``<sequence>_<object>``) and the same columns. The JSON record holds
the same numbers at full precision, the per-frame scores, and whatever metadata the caller adds
(configuration, backbone, weights checksum, timings).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from dinotrack.errors import InputError
from dinotrack.io.atomic import atomic_output, remove_stale_temporaries
from eval.scoring import GLOBAL_COLUMNS, Evaluation

__all__ = [
    "check_outside_dataset",
    "check_report_path",
    "evaluation_record",
    "global_csv_name",
    "per_sequence_csv_name",
    "print_table",
    "write_csvs",
    "write_json",
    "write_text_atomic",
]


def global_csv_name(split: str) -> str:
    """File name of the global results CSV, ``global_results-<split>.csv``."""
    return f"global_results-{split}.csv"


def per_sequence_csv_name(split: str) -> str:
    """File name of the per-object results CSV, ``per-sequence_results-<split>.csv``."""
    return f"per-sequence_results-{split}.csv"


def write_csvs(
    evaluation: Evaluation, folder: str | Path, tag: str | None = None
) -> tuple[Path, Path]:
    """Write the official global and per-sequence CSVs into a folder.

    Args:
        evaluation: The scores.
        folder: Destination folder (created if needed).
        tag: What the file names carry (default: the split; see ``DavisDataset.tag``).

    Returns:
        Paths of the global and the per-sequence CSV.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = evaluation.global_row()
    tag = tag or evaluation.split
    global_path = folder / global_csv_name(tag)
    global_rows = [[g[c] for c in GLOBAL_COLUMNS]]
    write_text_atomic(global_path, _csv_text(list(GLOBAL_COLUMNS), global_rows))
    rows = [
        [name, *(row[c] for c in GLOBAL_COLUMNS)] for name, row in evaluation.object_rows().items()
    ]
    per_sequence_path = folder / per_sequence_csv_name(tag)
    write_text_atomic(per_sequence_path, _csv_text(["Sequence", *GLOBAL_COLUMNS], rows))
    return global_path, per_sequence_path


def evaluation_record(
    evaluation: Evaluation, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """JSON-ready record of an evaluation.

    Args:
        evaluation: The scores.
        metadata: Extra top-level entries (e.g. ``config``, ``backbone``, ``weights_sha256``,
            ``timings``); an entry named ``timings`` is merged with the scoring time.

    Returns:
        A dict with ``split``, ``global`` and ``per_object`` (official columns, full
        precision), ``per_frame`` (frame names and J/F per object), ``timings`` and the
        metadata.
    """
    metadata = dict(metadata or {})
    timings = {"scoring_seconds": evaluation.seconds, **dict(metadata.pop("timings", {}))}
    return {
        "split": evaluation.split,
        **metadata,
        "global": _finite(evaluation.global_row()),
        "per_object": {name: _finite(row) for name, row in evaluation.object_rows().items()},
        "per_frame": {
            obj.name: {
                "frames": list(obj.frames),
                "J": _finite_list(obj.j.tolist()),
                "F": _finite_list(obj.f.tolist()),
            }
            for obj in evaluation.objects
        },
        "timings": timings,
    }


def write_json(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write a record as indented JSON, atomically.

    Args:
        path: Destination file.
        record: JSON-serialisable mapping (see :func:`evaluation_record`).

    Returns:
        The path written.
    """
    path = Path(path)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def print_table(
    evaluation: Evaluation, console: Console | None = None, title: str | None = None
) -> None:
    """Print the per-object rows and the global row as a rich table.

    Args:
        evaluation: The scores.
        console: Where to print (default: a console on stdout).
        title: Table title; default ``DAVIS <split>``.
    """
    if console is None:
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 120)  # files and pipes: keep the rows whole
    rows = {**evaluation.object_rows(), "Global": evaluation.global_row()}
    cells = {name: [_fmt(row[c]) for c in GLOBAL_COLUMNS] for name, row in rows.items()}
    # Nothing is cut at 80 columns: a header is two short lines ("J-" over "Recall"), a value
    # column is as wide as its widest value, and only a long sequence name wraps.
    table = Table(title=title or f"DAVIS {evaluation.split}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Sequence", style="bold", overflow="fold")
    for k, column in enumerate(GLOBAL_COLUMNS):
        header = column.replace("-", "-\n", 1)
        width = max(len(part) for part in [*header.split("\n"), *(v[k] for v in cells.values())])
        table.add_column(header, justify="right", no_wrap=True, min_width=width)
    for i, (name, values) in enumerate(cells.items()):
        last, is_global = i == len(cells) - 2, name == "Global"
        table.add_row(name, *values, end_section=last, style="bold" if is_global else None)
    console.print(table)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to a temporary file in the same folder, then rename it over ``path``."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as handle:
        handle.write(text)


def check_outside_dataset(out: str | Path, root: str | Path, flag: str = "--out") -> None:
    """Checks that the output folder ``out`` is not the dataset ``root`` nor inside it: a run
    never writes into a dataset (nor takes the dataset's own annotations for its results).

    Raises:
        ValueError: ``out`` is ``root`` or lies inside it (symbolic links resolved).
    """
    inside = Path(os.path.realpath(out)).is_relative_to(os.path.realpath(root))
    if inside:
        raise InputError(
            f"{flag} {out} is inside the dataset root {root}; a run never writes into its "
            "dataset. Name an output folder outside it"
        )


def check_report_path(path: str | Path, overwrite: bool = False, flag: str = "") -> None:
    """Checks, before scoring, that a report file may be written at ``path``.

    A file that is not a report this module wrote (the official CSV header, or a JSON record
    with ``split`` and ``global``) is replaced only with ``overwrite``: a mistyped path never
    destroys e.g. an annotation PNG.

    Raises:
        FileExistsError: ``path`` is another file and ``overwrite`` is False, or not a regular
            file.
    """
    path = Path(path)
    name = f"{flag} {path}" if flag else str(path)
    remove_stale_temporaries(path)  # left by a killed run
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_file():
        raise FileExistsError(f"{name} exists and is not a regular file; name another file")
    if not overwrite and not _is_report(path):
        raise FileExistsError(
            f"{name} exists and is not a score report dinotrack wrote; pass --overwrite to "
            "replace it, or name another file"
        )


def _is_report(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False
    first = text.split("\n", 1)[0]
    if first in (",".join(GLOBAL_COLUMNS), ",".join(["Sequence", *GLOBAL_COLUMNS])):
        return True
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and "split" in record and "global" in record


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.5f}" if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"


def _finite(row: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (None if math.isnan(v) else v) for k, v in row.items()}


def _finite_list(values: list[float]) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values]
