"""The list of ``dinotrack segment --batch LIST.csv``, read strictly (one idea: from a CSV
file to checked :class:`BatchItem` rows; running them is :mod:`dinotrack.cli.batch`).

The header names ``video`` and ``mask`` (or ``prompts``) and optionally ``start_frame``,
``direction`` and ``out``; relative paths are relative to the CSV's folder. A ``prompts`` cell
is a folder (``--prompts DIR``) or ``FRAME:MASK;FRAME:MASK`` (``--prompt FRAME:MASK`` each).
An unclosed quote, a cell over 128 KiB, a NUL byte, extra cells, a column named twice, and outs
that clash (shared, nested, the summary's name, leaving ``--out``) are refused before any work.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dinotrack.config import DIRECTIONS
from dinotrack.errors import InputError, MissingFileError

__all__ = ["COLUMNS", "MAX_CELL", "SUMMARY_FILE", "BatchItem", "read_batch_list"]

SUMMARY_FILE = "batch-summary.json"
COLUMNS = ("video", "mask", "prompts", "start_frame", "direction", "out")
"""The columns a batch list may have: ``video`` and one of ``mask`` or ``prompts`` are needed."""
MAX_CELL = 128 * 1024
"""The longest cell a batch list may have, in characters (the csv module's limit)."""


@dataclass(frozen=True)
class BatchItem:
    """One video of a batch list.

    Attributes:
        row: Line number in the CSV file (2 for the first video, after the header).
        video: The video file or frames directory.
        mask: Its first mask (the mask of ``start_frame``), or None.
        start_frame: Index of the frame the mask belongs to.
        out: Result folder, relative to the batch's output folder.
        prompt: ``FRAME:MASK`` prompts of the ``prompts`` cell (as ``segment --prompt``).
        prompts: The folder of the ``prompts`` cell (as ``segment --prompts``), or None.
        direction: The ``direction`` cell, or None (the batch's ``--direction``).
    """

    row: int
    video: Path
    mask: Path | None
    start_frame: int
    out: str
    prompt: tuple[str, ...] = ()
    prompts: Path | None = None
    direction: str | None = None


def read_batch_list(path: str | os.PathLike[str]) -> list[BatchItem]:
    """Read and check a batch list (see the module docstring).

    Files are not opened here: a missing video or mask is an error of that video alone.

    Raises:
        MissingFileError: No such list.
        InputError: The list is not a regular file, not UTF-8 text or not CSV (an unclosed
            quote, a cell over :data:`MAX_CELL` characters); a missing, unknown or repeated
            column; a row with more cells than the header; an empty ``video`` cell, or neither
            ``mask`` nor ``prompts`` (or both); a ``start_frame`` that is not an integer >= 0;
            an unknown ``direction``; an ``out`` that leaves the output folder, is the batch's
            own file, lies inside another row's ``out``, or is shared by two rows; no video.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"batch list {path} does not exist")
    if not path.is_file():
        raise InputError(f"batch list {path} is not a regular file; give a CSV file")
    header, rows = _read_csv(path)
    items = []
    for number, cells in rows:
        if len(cells) > len(header):
            raise InputError(
                f"batch list {path}, row {number}: {len(cells)} cells, but the header names "
                f"{len(header)} columns ({','.join(header)}); quote cells that hold a comma"
            )
        row = dict(zip(header, cells, strict=False))  # short rows: empty cells
        if not any(row.values()):
            continue  # a blank line
        items.append(_item(path, number, row))
    if not items:
        raise InputError(f"batch list {path} names no video")
    _check_outs(path, items)
    return items


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The checked header and ``(line number, stripped cells)`` of each row of a batch list."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, skipinitialspace=True, strict=True)
            lines = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as error:
        raise InputError(f"batch list {path} is not UTF-8 text ({error.reason})") from None
    except csv.Error as error:
        line = reader.line_num
        if "field larger than field limit" in str(error):
            reason = f"a cell is longer than {MAX_CELL // 1024} KiB"
        elif "unexpected end of data" in str(error):
            reason = 'a quote (") is opened and never closed'
        else:
            reason = str(error)
        raise InputError(f"batch list {path}, near line {line}: {reason}") from None
    header = [name.strip() for name in lines[0][1]] if lines else []
    missing = [] if "video" in header else ["video"]
    if not {"mask", "prompts"} & set(header):
        missing.append("mask (or prompts)")
    if missing:
        raise InputError(
            f"batch list {path}: missing column(s) {', '.join(missing)}; its header must name "
            f"video and mask or prompts (optional: start_frame,direction,out), got "
            f"{','.join(header) or 'nothing'}"
        )
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise InputError(
            f"batch list {path}: unknown column(s) {', '.join(unknown)}; the columns are "
            f"{', '.join(COLUMNS)}"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"batch list {path}: column(s) {', '.join(repeated)} named twice")
    rows = [(number, [cell.strip() for cell in cells]) for number, cells in lines[1:]]
    for number, cells in rows:
        if any("\0" in cell for cell in cells):
            raise InputError(f"batch list {path}, row {number}: a cell holds a NUL byte")
    return header, rows


def _item(path: Path, number: int, row: dict[str, str]) -> BatchItem:
    where = f"batch list {path}, row {number}"
    if not row.get("video"):
        raise InputError(f"{where}: the video cell is empty")
    mask, prompts = row.get("mask"), row.get("prompts")
    if not mask and not prompts:
        cells = " or ".join(name for name in ("mask", "prompts") if name in row)
        raise InputError(f"{where}: the {cells} cell is empty")
    if mask and prompts:
        raise InputError(
            f"{where}: give the mask or the prompts, not both (a mask of frame N is the prompt "
            "N:MASK of the prompts cell)"
        )
    text = row.get("start_frame") or "0"
    try:
        start_frame = int(text)
    except ValueError:
        raise InputError(f"{where}: start_frame must be an integer, got {text!r}") from None
    if start_frame < 0:
        raise InputError(f"{where}: start_frame must be 0 or more, got {start_frame}")
    if start_frame and not mask:
        raise InputError(f"{where}: start_frame goes with mask; each prompt names its frame")
    direction = row.get("direction") or None
    if direction is not None and direction not in DIRECTIONS:
        raise InputError(
            f"{where}: direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}"
        )
    prompt, folder = _prompt_cell(where, path.parent, prompts) if prompts else ((), None)
    video = path.parent / row["video"]
    out = row.get("out") or Path(row["video"]).stem
    parts = Path(out).parts
    if Path(out).is_absolute() or not parts or ".." in parts or out in (".", ""):
        raise InputError(
            f"{where}: out {out!r} must be a folder name inside --out (relative, without ..)"
        )
    out = os.path.normpath(out)
    if os.path.normcase(Path(out).parts[0]) == SUMMARY_FILE:
        raise InputError(f"{where}: out {out!r} is the batch's own file; name another folder")
    return BatchItem(
        number,
        video,
        path.parent / mask if mask else None,
        start_frame,
        out,
        prompt=prompt,
        prompts=folder,
        direction=direction,
    )


def _prompt_cell(where: str, base: Path, text: str) -> tuple[tuple[str, ...], Path | None]:
    """The ``prompts`` cell: ``FRAME:MASK;FRAME:MASK`` (``--prompt`` each) or a folder
    (``--prompts``); paths relative to the list's folder."""
    parts = [part.strip() for part in text.split(";")]
    if not any(re.match(r"\d+:", part) for part in parts):
        if len(parts) > 1:
            raise InputError(f"{where}: prompts {text!r}: write each as FRAME:MASK")
        return (), base / text
    prompt = []
    for part in parts:
        frame, sep, mask = part.partition(":")
        if not sep or not frame.strip().isdigit() or not mask.strip():
            raise InputError(
                f"{where}: prompts must be a folder or FRAME:MASK;FRAME:MASK (e.g. "
                f"0:a.png;40:b.png), got {part!r} in {text!r}"
            )
        prompt.append(f"{int(frame)}:{base / mask.strip()}")
    return tuple(prompt), None


def _check_outs(path: Path, items: list[BatchItem]) -> None:
    """Refuse two rows with one ``out``, or an ``out`` inside another row's (a result folder
    is replaced as a whole)."""
    seen: dict[tuple[str, ...], int] = {}
    for item in items:
        parts = Path(os.path.normcase(item.out)).parts
        if parts in seen:
            raise InputError(
                f"batch list {path}: rows {seen[parts]} and {item.row} both write to "
                f"{item.out!r}; give them distinct out values"
            )
        seen[parts] = item.row
    for parts, row in seen.items():
        for depth in range(1, len(parts)):
            outer = seen.get(parts[:depth])
            if outer is not None:
                raise InputError(
                    f"batch list {path}: row {row}'s out {os.path.join(*parts)!r} is inside "
                    f"row {outer}'s out {os.path.join(*parts[:depth])!r}, which is replaced "
                    "as a whole; give them separate folders"
                )
