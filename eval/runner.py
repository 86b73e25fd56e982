"""``eval davis``: propagate every sequence of a DAVIS split with a tracker, then score it.

Each sequence is tracked from its first annotated frame with :meth:`dinotrack.Tracker.track`
(the code path of ``dinotrack segment``), and every frame's mask is written as a palette PNG
``<out>/<sequence>/<frame>.png`` named like the annotations. The run's description (dataset
root, backbone, weights checksum, configuration) is kept in ``<out>/run.json``. An interrupted
run resumes: a sequence is not tracked again, unless ``overwrite``, when ``run.json`` describes
this run and the sequence folder's ownership record (:data:`dinotrack.results.writer.RECORD_NAME`)
lists a mask for every frame, each unchanged since dinotrack wrote it. Any other folder of PNGs
(another method's results, a copy of the dataset's annotations) is never taken as a result, and
``out`` may not lie inside the dataset root.

Under ``torchrun`` (a process group set up, e.g. by
:func:`dinotrack.pipeline.distributed.setup`) each process tracks its share of the sequences
(:func:`dinotrack.pipeline.distributed.shard`), and rank 0
scores them all once every process is done; every process returns the same result.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dinotrack import __version__ as dinotrack_version
from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.video import read_image_files
from dinotrack.models.hub import file_sha256, hub_weights_path
from dinotrack.models.registry import BackboneSpec
from dinotrack.pipeline import distributed
from dinotrack.pipeline.segment import segment_video
from dinotrack.results.writer import ResultWriter, check_output_directory, owned_files
from dinotrack.tracking.tracker import Tracker
from eval.davis import VOID_ID, DavisDataset, DavisSequence, read_annotation
from eval.report import (
    check_outside_dataset,
    evaluation_record,
    write_csvs,
    write_json,
    write_text_atomic,
)
from eval.scoring import Evaluation, score_results

__all__ = [
    "DavisRun",
    "RunProgress",
    "SequenceRun",
    "backbone_record",
    "output_complete",
    "run_davis",
    "track_sequence",
]

RUN_FILE = "run.json"


class RunProgress(Protocol):
    """Receives progress events of :func:`run_davis` (e.g. to drive a progress bar)."""

    def sequence_started(self, name: str, num_frames: int) -> None:
        """A sequence of ``num_frames`` frames starts (or is skipped when resumed)."""

    def frame_done(self) -> None:
        """One more frame was segmented and written."""

    def sequence_done(self, name: str, resumed: bool) -> None:
        """A sequence finished; ``resumed`` when its outputs were already complete."""


class _NoProgress:
    def sequence_started(self, name: str, num_frames: int) -> None:
        pass

    def frame_done(self) -> None:
        pass

    def sequence_done(self, name: str, resumed: bool) -> None:
        pass


@dataclass(frozen=True)
class SequenceRun:
    """What happened to one sequence.

    Attributes:
        name: Sequence name.
        num_frames: Frames written (from the first annotated frame to the last frame).
        seconds: Wall-clock tracking time, or None when the outputs were reused.
    """

    name: str
    num_frames: int
    seconds: float | None

    @property
    def resumed(self) -> bool:
        """True when the sequence's outputs were complete and it was not tracked again."""
        return self.seconds is None


@dataclass(frozen=True)
class DavisRun:
    """Result of :func:`run_davis`.

    Attributes:
        out: Output folder.
        evaluation: The scores.
        sequences: Per-sequence tracking records.
        record: The JSON record written to ``<out>/scores-<tag>.json``.
    """

    out: Path
    evaluation: Evaluation
    sequences: tuple[SequenceRun, ...]
    record: dict[str, Any]


def backbone_record(spec: BackboneSpec, weights: str | Path | None) -> dict[str, Any]:
    """Which network and which weights a tracker used, for result files.

    Args:
        spec: The tracker's backbone spec.
        weights: The weights file passed by the user, or None for the backbone's own.

    Returns:
        ``backbone`` (registry name), ``weights`` (a path, ``"random"`` for test backbones,
        or the official file in the hub cache) and ``weights_sha256`` (None when unknown).
    """
    if weights is not None:
        path = Path(weights)
        return {"backbone": spec.name, "weights": str(path), "weights_sha256": file_sha256(path)}
    if spec.random_weights:
        return {"backbone": spec.name, "weights": "random", "weights_sha256": None}
    if spec.url is not None:
        path = hub_weights_path(spec)
        if path.is_file():
            return {
                "backbone": spec.name,
                "weights": str(path),
                "weights_sha256": file_sha256(path),
            }
    source = spec.url or spec.hf_hub_id or spec.local_file
    return {"backbone": spec.name, "weights": source, "weights_sha256": None}


def output_complete(sequence: DavisSequence, out: str | Path) -> bool:
    """Whether ``<out>/<sequence>/`` holds a mask for every frame the run would write, each
    listed in dinotrack's ownership record of the folder and unchanged since it was written.

    Args:
        sequence: The sequence (needs its image paths).
        out: Output root.
    """
    folder = Path(out) / sequence.name
    owned = owned_files(folder)
    names = _output_names(sequence)
    if owned is None or not all(name in owned and (folder / name).is_file() for name in names):
        return False
    try:
        check_output_directory(folder)  # every file as recorded, nothing foreign
    except (OSError, ValueError):
        return False
    return True


def track_sequence(
    tracker: Tracker,
    sequence: DavisSequence,
    out: str | Path,
    progress: RunProgress | None = None,
) -> int:
    """Track one sequence from its first annotated frame and write every frame's mask.

    Args:
        tracker: The tracker.
        sequence: The sequence; needs its JPEG frames and a first annotation.
        out: Output root; masks go to ``<out>/<sequence>/<frame>.png`` (palette PNGs).
        progress: Told about each frame written.

    Returns:
        The number of frames written.

    Raises:
        FileNotFoundError: The sequence has no JPEG frames.
        ValueError: The first annotation matches no frame, or holds no object.
    """
    progress = progress or _NoProgress()
    start = _first_annotated_index(sequence)
    first = read_annotation(sequence.annotation_paths[0])
    first = np.where(first == VOID_ID, 0, first).astype(np.uint8)
    if not first.any():
        raise InputError(
            f"first annotation {sequence.annotation_paths[0]} of sequence {sequence.name} holds "
            "no object; nothing to propagate"
        )
    names = _output_names(sequence)
    with ResultWriter(Path(out) / sequence.name, inputs=_inputs(sequence)) as results:
        done = segment_video(
            tracker,
            read_image_files(sequence.image_paths),
            results,
            frame_names=[path.name for path in sequence.image_paths],
            prompts={start: first},
            start=start,
            on_frame=lambda _index: progress.frame_done(),
        )
        if done.frames != len(names):
            raise RuntimeError(
                f"sequence {sequence.name}: the tracker returned {done.frames} masks for "
                f"{len(names)} frames"
            )
    return done.frames


def _inputs(sequence: DavisSequence) -> list[tuple[str, Path]]:
    """What tracking ``sequence`` reads, none of which may lie in its output folder."""
    inputs = [("annotation", sequence.annotation_paths[0])]
    if sequence.image_paths:
        inputs.append(("frames", sequence.image_paths[0].parent))
    return inputs


def run_davis(
    dataset: DavisDataset,
    tracker: Tracker,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: RunProgress | None = None,
    extra: dict[str, Any] | None = None,
) -> DavisRun:
    """Propagate every sequence of a split, score the outputs and write the reports.

    Args:
        dataset: The split, opened with ``require_images=True``.
        tracker: The tracker (backbone and configuration).
        out: Output root: masks, ``run.json``, the official CSVs and ``scores-<tag>.json``
            (tag: the split, or ``<split>-subset`` for a part of it; see ``DavisDataset.tag``).
        weights: The weights file the tracker was built from, for the checksum (None: the
            backbone's own weights).
        overwrite: Track every sequence again even when its outputs are complete.
        workers: Scoring processes (see :func:`eval.scoring.score_results`).
        progress: Progress events receiver.
        extra: More top-level entries for the JSON record.

    Returns:
        The :class:`DavisRun`.

    Raises:
        ValueError: ``out`` holds outputs of another dataset root, backbone, weights or
            configuration and ``overwrite`` is False; ``out`` lies inside the dataset root; or
            a sequence's input lies in its output folder.
        FileExistsError: A sequence folder to (re)write holds files dinotrack did not write.
        RuntimeError: Another process of a distributed run failed.
    """
    progress = progress or _NoProgress()
    rank, world = distributed.current_rank()
    out = Path(out)
    check_outside_dataset(out, dataset.root)
    run = {
        "split": dataset.split,
        "root": str(dataset.root.resolve()),
        **backbone_record(tracker.spec, weights),
        "config": tracker.config.to_dict(),
    }
    # On every process, before any writes run.json: resume only what this run would write.
    resume = not overwrite and _same_run(out, run)
    reused = {s.name for s in dataset.sequences if resume and output_complete(s, out)}
    for sequence in dataset.sequences:  # before any work: no user's file is replaced
        if sequence.name not in reused:
            check_output_directory(out / sequence.name, _inputs(sequence))
    out.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    if rank == 0:
        write_text_atomic(out / RUN_FILE, json.dumps(run, indent=2) + "\n")

    started = time.perf_counter()
    mine = [dataset.sequences[i] for i in distributed.shard(len(dataset.sequences), rank, world)]
    runs, error = _track_sequences(tracker, mine, out, reused, progress)
    gathered = distributed.all_gather_objects((runs, None if error is None else str(error)))
    tracking_seconds = time.perf_counter() - started
    _raise_for_errors([part[1] for part in gathered], error)
    order = {sequence.name: i for i, sequence in enumerate(dataset.sequences)}
    runs = sorted((r for part, _ in gathered for r in part), key=lambda r: order[r.name])
    if rank == 0:
        try:
            result = _score(dataset, tracker, out, run, runs, tracking_seconds, workers, extra)
        except Exception as exc:
            distributed.broadcast_object(str(exc))  # the other processes must not wait forever
            raise
    else:
        result = None
    result = distributed.broadcast_object(result)
    if isinstance(result, str):
        raise RuntimeError(f"scoring failed on rank 0: {result}")
    return result


def _track_sequences(
    tracker: Tracker,
    sequences: list[DavisSequence],
    out: Path,
    reused: set[str],
    progress: RunProgress,
) -> tuple[list[SequenceRun], Exception | None]:
    """Track ``sequences``, except those named in ``reused`` (complete earlier); returns their
    records and the error that stopped them, if any (raised on every process once they are
    gathered, rather than hanging)."""
    runs: list[SequenceRun] = []
    try:
        for sequence in sequences:
            num_frames = len(_output_names(sequence))
            progress.sequence_started(sequence.name, num_frames)
            if sequence.name in reused:
                runs.append(SequenceRun(sequence.name, num_frames, None))
                progress.sequence_done(sequence.name, True)
                continue
            t0 = time.perf_counter()
            written = track_sequence(tracker, sequence, out, progress)
            runs.append(SequenceRun(sequence.name, written, time.perf_counter() - t0))
            progress.sequence_done(sequence.name, False)
    except Exception as exc:
        if distributed.current_rank()[1] == 1:
            raise
        return runs, exc
    return runs, None


def _raise_for_errors(errors: list[str | None], own: Exception | None) -> None:
    if own is not None:
        raise own
    failed = [(rank, error) for rank, error in enumerate(errors) if error is not None]
    if failed:
        rank, error = failed[0]
        raise RuntimeError(f"rank {rank} failed: {error}")


def _score(
    dataset: DavisDataset,
    tracker: Tracker,
    out: Path,
    run: dict[str, Any],
    runs: list[SequenceRun],
    tracking_seconds: float,
    workers: int | None,
    extra: dict[str, Any] | None,
) -> DavisRun:
    evaluation = score_results(dataset, out, workers=workers)
    write_csvs(evaluation, out, dataset.tag)
    tracked = [r for r in runs if not r.resumed]
    frames_tracked = sum(r.num_frames for r in tracked)
    seconds_tracked = sum(r.seconds or 0.0 for r in tracked)
    record = evaluation_record(
        evaluation,
        {
            "dinotrack_version": dinotrack_version,
            "root": str(dataset.root.resolve()),
            "year": dataset.year,
            "results": str(out.resolve()),
            **{k: v for k, v in run.items() if k not in ("split", "root")},
            "device": str(tracker.device),
            **(extra or {}),
            "resumed_sequences": [r.name for r in runs if r.resumed],
            "timings": {
                "tracking_seconds": tracking_seconds,
                "frames_tracked": frames_tracked,
                "tracking_fps": frames_tracked / seconds_tracked if seconds_tracked else None,
                "per_sequence": {
                    r.name: {"frames": r.num_frames, "seconds": r.seconds} for r in tracked
                },
            },
        },
    )
    write_json(out / f"scores-{dataset.tag}.json", record)
    return DavisRun(out=out, evaluation=evaluation, sequences=tuple(runs), record=record)


def _same_run(out: Path, run: dict[str, Any]) -> bool:
    """Whether ``<out>/run.json`` describes ``run``: False when there is none (nothing in
    ``out`` is then taken as a result of this run).

    Raises:
        ValueError: It describes another run, or is not a run description.
    """
    path = out / RUN_FILE
    if not path.is_file():
        return False
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # not JSON, or not UTF-8
        raise InputError(f"{path} is not valid JSON ({error}); use --overwrite") from None
    if not isinstance(previous, dict):
        raise InputError(f"{path} is not a run description (a JSON object); use --overwrite")
    keys = ("root", "backbone", "weights_sha256", "config")
    changed = [k for k in keys if previous.get(k) != run[k]]
    if changed:
        raise InputError(
            f"{out} holds outputs of another run (different {', '.join(changed)}: see "
            f"{path}); resuming would mix them. Use another --out, or --overwrite to redo "
            "every sequence"
        )
    return True


def _first_annotated_index(sequence: DavisSequence) -> int:
    if not sequence.image_paths:
        raise MissingFileError(
            f"sequence {sequence.name} has no JPEG frames; propagating needs "
            "JPEGImages/<resolution>/<sequence>/*.jpg"
        )
    stems = [p.stem for p in sequence.image_paths]
    first = sequence.annotation_paths[0].stem
    if first not in stems:
        raise InputError(
            f"first annotation {sequence.annotation_paths[0]} of sequence {sequence.name} "
            f"matches no frame in {sequence.image_paths[0].parent} (expected {first}.jpg)"
        )
    return stems.index(first)


def _output_names(sequence: DavisSequence) -> list[str]:
    start = _first_annotated_index(sequence)
    return [f"{p.stem}.png" for p in sequence.image_paths[start:]]
