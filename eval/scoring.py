"""Score a folder of predicted masks against a DAVIS split (semi-supervised task).

Semantics of the official DAVIS-2017 evaluation: per sequence, the objects are 1..K with K the
largest id of the first annotation (void 255 excluded); ids absent from it are empty objects,
annotation ids above K and 255 are background; a predicted id above K is an error, and missing
predicted ids are empty masks. The first and last frames are not scored (and their result files
are not read). Per object, J and F are summarised by :func:`eval.metrics.statistics`; the global
row averages over all objects of all sequences.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.images import check_input_path
from eval.davis import (
    VOID_ID,
    DavisDataset,
    DavisSequence,
    is_binary_annotation,
    read_annotation,
    read_result,
)
from eval.metrics import BOUNDARY_THRESHOLD, Statistics, label_frame_scores, statistics

__all__ = [
    "GLOBAL_COLUMNS",
    "Evaluation",
    "ObjectScores",
    "count_objects",
    "score_label_sequence",
    "score_results",
    "score_sequence",
]

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
"""Columns of the official ``global_results-<split>.csv``, in order."""


@dataclass(frozen=True)
class ObjectScores:
    """Per-frame scores of one object of one sequence.

    Attributes:
        sequence: Sequence name.
        object_id: Object id, 1..K.
        frames: Names of the scored frames (all but the first and last).
        j: Float64 array ``[len(frames)]``, region similarity per frame.
        f: Float64 array ``[len(frames)]``, boundary F-measure per frame.
    """

    sequence: str
    object_id: int
    frames: tuple[str, ...]
    j: np.ndarray
    f: np.ndarray

    @property
    def name(self) -> str:
        """Row name in the official per-sequence table, ``<sequence>_<object>``."""
        return f"{self.sequence}_{self.object_id}"

    @property
    def j_stats(self) -> Statistics:
        """Mean, recall and decay of J."""
        return statistics(self.j)

    @property
    def f_stats(self) -> Statistics:
        """Mean, recall and decay of F."""
        return statistics(self.f)

    def row(self) -> dict[str, float]:
        """The object's row with the official columns (``J&F-Mean`` first)."""
        j, f = self.j_stats, self.f_stats
        return {
            "J&F-Mean": (j.mean + f.mean) / 2.0,
            "J-Mean": j.mean,
            "J-Recall": j.recall,
            "J-Decay": j.decay,
            "F-Mean": f.mean,
            "F-Recall": f.recall,
            "F-Decay": f.decay,
        }


@dataclass(frozen=True)
class Evaluation:
    """Scores of a results folder on a DAVIS split.

    Attributes:
        split: Split name.
        objects: Scores of every object of every sequence, in sequence order then object id.
        seconds: Wall-clock time spent scoring.
    """

    split: str
    objects: tuple[ObjectScores, ...]
    seconds: float = 0.0

    def global_row(self) -> dict[str, float]:
        """The global row: means over all objects (not over sequences); NaN when empty."""
        if not self.objects:
            return dict.fromkeys(GLOBAL_COLUMNS, float("nan"))
        rows = [obj.row() for obj in self.objects]
        out = {col: float(np.mean([row[col] for row in rows])) for col in GLOBAL_COLUMNS[1:]}
        return {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2.0, **out}

    def object_rows(self) -> dict[str, dict[str, float]]:
        """Per-object rows keyed ``<sequence>_<object>``, with the official columns."""
        return {obj.name: obj.row() for obj in self.objects}


def count_objects(first_annotation: np.ndarray) -> int:
    """Number of objects K of a sequence: the largest id of its first annotation, void excluded.

    Args:
        first_annotation: Integer array ``[H, W]`` of ids.

    Returns:
        K (0 when the first frame holds no object).
    """
    ids = first_annotation[first_annotation != VOID_ID]
    return int(ids.max()) if ids.size else 0


def score_label_sequence(
    annotations: np.ndarray,
    predictions: np.ndarray,
    *,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of every object of one sequence held in memory.

    Args:
        annotations: Integer array ``[T, H, W]`` of annotated ids (T >= 3; 255 is void).
        predictions: Integer array ``[T, H, W]`` of predicted ids; frames 0 and T - 1 are
            ignored.
        bound_th: Boundary tolerance as a fraction of the image diagonal.

    Returns:
        ``(j, f)``: two float64 arrays ``[K, T - 2]`` for objects 1..K and frames 1..T-2.
    """
    if annotations.ndim != 3 or annotations.shape != predictions.shape:
        raise InputError(
            "annotations and predictions must both have shape [T, H, W]; got "
            f"{annotations.shape} and {predictions.shape}"
        )
    if len(annotations) < 3:
        raise InputError(
            f"a sequence needs at least 3 frames (first and last are not scored), got "
            f"{len(annotations)}"
        )
    num_objects = count_objects(annotations[0])
    j = np.zeros((num_objects, len(annotations) - 2))
    f = np.zeros_like(j)
    for t in range(1, len(annotations) - 1):
        j[:, t - 1], f[:, t - 1] = label_frame_scores(
            annotations[t], predictions[t], num_objects, bound_th
        )
    return j, f


def score_sequence(
    sequence: DavisSequence,
    results_dir: str | Path,
    *,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> list[ObjectScores]:
    """Score one sequence's result PNGs against its annotations.

    Args:
        sequence: The sequence (its annotation files define the frames).
        results_dir: Results root; frames are read from ``<results_dir>/<sequence>/<frame>.png``.
        bound_th: Boundary tolerance as a fraction of the image diagonal.

    Returns:
        One :class:`ObjectScores` per object 1..K.

    Raises:
        FileNotFoundError: The sequence's results folder or a scored frame is missing.
        ValueError: A result has another size than its annotation, is not single-channel, or
            holds an id above K; the sequence has fewer than 3 frames.
    """
    paths = sequence.annotation_paths
    if len(paths) < 3:
        raise InputError(
            f"sequence {sequence.name} has {len(paths)} annotated frames; scoring needs at "
            "least 3 (the first and last are not scored)"
        )
    seq_dir = Path(results_dir) / sequence.name
    if not seq_dir.is_dir():
        raise MissingFileError(
            f"results folder {seq_dir} not found: expected one PNG per frame of sequence "
            f"{sequence.name}, named like its annotations ({paths[1].name}, ...)"
        )
    scored = paths[1:-1]
    for path in scored:  # a FIFO or a symlink loop is named, not waited on or called missing
        if os.path.lexists(seq_dir / path.name):
            check_input_path(seq_dir / path.name, "result")
    missing = [p.name for p in scored if not (seq_dir / p.name).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise MissingFileError(
            f"results folder {seq_dir} misses {len(missing)} of the {len(scored)} scored "
            f"frames: {shown} (result PNGs must be named like the annotations)"
        )
    first = read_annotation(paths[0])
    num_objects = count_objects(first)
    binary = is_binary_annotation(paths[0])
    j = np.zeros((num_objects, len(scored)))
    f = np.zeros_like(j)
    for t, annotation_path in enumerate(scored):
        truth = read_annotation(annotation_path)
        result_path = seq_dir / annotation_path.name
        pred = read_result(result_path, binary=binary)
        if pred.shape != truth.shape:
            raise InputError(
                f"result {result_path} is {pred.shape[1]}x{pred.shape[0]} (WxH); expected "
                f"{truth.shape[1]}x{truth.shape[0]}, the size of annotation {annotation_path}"
            )
        top = int(pred.max()) if pred.size else 0
        if top > num_objects:
            raise InputError(
                f"result {result_path} holds object id {top}, but sequence {sequence.name} has "
                f"{num_objects} objects (ids 1..{num_objects}, from the largest id of its first "
                f"annotation {paths[0].name})"
            )
        j[:, t], f[:, t] = label_frame_scores(truth, pred, num_objects, bound_th)
    frames = tuple(p.stem for p in scored)
    return [ObjectScores(sequence.name, k + 1, frames, j[k], f[k]) for k in range(num_objects)]


def score_results(
    dataset: DavisDataset,
    results_dir: str | Path,
    *,
    workers: int | None = None,
    bound_th: float = BOUNDARY_THRESHOLD,
    on_sequence_done: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score a results folder on every sequence of a DAVIS split.

    Sequences are scored in parallel worker processes (each one reads and scores whole
    sequences), the longest first.

    Args:
        dataset: The split (see :func:`eval.davis.open_davis`).
        results_dir: Folder holding ``<sequence>/<frame>.png`` for every sequence.
        workers: Number of worker processes; ``None`` uses one per CPU core (at most one per
            sequence), 0 or 1 scores in this process.
        bound_th: Boundary tolerance as a fraction of the image diagonal.
        on_sequence_done: Called with each sequence name as it finishes (e.g. a progress bar).

    Returns:
        The :class:`Evaluation`.

    Raises:
        FileNotFoundError: The results folder, a sequence folder or a frame is missing.
        ValueError: A result is malformed (see :func:`score_sequence`).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise MissingFileError(f"results folder {results_dir} does not exist")
    start = time.perf_counter()
    sequences = dataset.sequences
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(1, min(workers, len(sequences)))
    by_name: dict[str, list[ObjectScores]] = {}
    if workers == 1:
        for seq in sequences:
            by_name[seq.name] = score_sequence(seq, results_dir, bound_th=bound_th)
            if on_sequence_done is not None:
                on_sequence_done(seq.name)
    else:
        # Longest first, so that the last sequence to start is a short one.
        order = sorted(sequences, key=lambda s: len(s.annotation_paths), reverse=True)
        with _process_pool(workers) as pool:
            futures = {
                pool.submit(score_sequence, seq, results_dir, bound_th=bound_th): seq.name
                for seq in order
            }
            try:
                for future in as_completed(futures):
                    by_name[futures[future]] = future.result()
                    if on_sequence_done is not None:
                        on_sequence_done(futures[future])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    objects = tuple(obj for seq in sequences for obj in by_name[seq.name])
    return Evaluation(split=dataset.split, objects=objects, seconds=time.perf_counter() - start)


def _process_pool(workers: int) -> Executor:
    # fork starts workers in milliseconds and the work is numpy and Pillow only; where fork is
    # unavailable the platform default is used.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)
