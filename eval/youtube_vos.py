"""Benchmarks whose objects appear on later frames: the YouTube-VOS layout (also MOSE's, LVOS's).

Layout (YouTube-VOS 2018/2019; MOSE and LVOS use the same folders)::

    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/Annotations/<video>/<frame>.png    palette PNGs, only for some frames
    <root>/<split>/meta.json                           optional: {"videos": {<video>:
                                                       {"objects": {"<id>": {"frames": [...]}}}}}

Annotation PNGs exist only for some frames: every 5th frame in YouTube-VOS train (its
JPEGImages hold every 5th frame of the video), and on the *valid* splits of YouTube-VOS and
MOSE only the frames on which an object first appears, holding that object (the rest of the
ground truth is withheld by the evaluation servers).

Protocol (the official one of these benchmarks): each object is given to the tracker as a
prompt on the frame of its first annotation, holding only the objects that first appear
there; every JPEG frame from the first prompt on gets a mask. An object is scored with J and
F (the DAVIS measures) on the annotated frames after its first one, averaged per object;
the dataset's J, F and J&F are the means over all objects of all videos. (The YouTube-VOS
server also splits objects into seen and unseen categories; that split needs its category
lists, which this layout does not hold.)

A split whose annotations hold no object on more than one frame (YouTube-VOS and MOSE
valid) has its ground truth withheld: :func:`run_sparse` then writes the submission the
servers take, ``submission.zip`` with ``Annotations/<video>/<frame>.png`` (palette PNGs) for
every JPEG frame of every video, and scores nothing.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.atomic import temporary_sibling
from dinotrack.io.images import check_input_path
from dinotrack.io.masks import davis_palette, read_mask, write_mask
from dinotrack.io.video import FRAME_SUFFIXES, natural_key, probe_video
from eval.metrics import label_frame_scores

__all__ = [
    "SparseVideo",
    "SparseScores",
    "open_sparse_split",
    "first_prompts",
    "score_sparse_video",
    "run_sparse",
    "write_submission",
]

SUBMISSION_NAME = "submission.zip"


@dataclass(frozen=True)
class SparseVideo:
    """One video of a split with annotations on some frames.

    Attributes:
        name: Video name (its folder name).
        frames: The frames, in the tracker's (natural) order: ``2.jpg`` before ``10.jpg``.
        annotations: ``{frame index: annotation PNG}`` for the frames that have one.
    """

    name: str
    frames: tuple[Path, ...]
    annotations: dict[int, Path]

    @property
    def output_names(self) -> tuple[str, ...]:
        """File name of each frame's result PNG (``00005.jpg`` -> ``00005.png``)."""
        return tuple(f"{p.stem}.png" for p in self.frames)


@dataclass(frozen=True)
class SparseScores:
    """J and F of every object of one video: ``{object id: (J mean, F mean, frames scored)}``."""

    video: str
    objects: dict[int, tuple[float, float, int]]


def open_sparse_split(
    root: str | os.PathLike[str], split: str, videos: Iterable[str] | None = None
) -> list[SparseVideo]:
    """The videos of ``<root>/<split>`` in the YouTube-VOS layout.

    Raises:
        FileNotFoundError: The split or its ``JPEGImages``/``Annotations`` folders are absent.
        ValueError: A video without frames, an annotation named like no frame, a requested
            video that is absent, or a ``meta.json`` that is not a regular file, not a JSON
            object with a ``"videos"`` object, or that names a video that is not there.
    """
    base = Path(root) / split
    images, annotations = base / "JPEGImages", base / "Annotations"
    for folder in (images, annotations):
        if not folder.is_dir():
            raise MissingFileError(f"{folder} is missing: not a YouTube-VOS-layout split")
    names = sorted(p.name for p in images.iterdir() if p.is_dir())
    meta_file = base / "meta.json"
    if os.path.lexists(meta_file):
        absent = sorted(set(_meta_videos(meta_file)) - set(names))
        if absent:
            raise InputError(f"{meta_file} lists videos absent from {images}: {absent[:5]}")
    if videos is not None:
        wanted = list(videos)
        absent = sorted(set(wanted) - set(names))
        if absent:
            raise InputError(f"videos absent from {images}: {absent}")
        names = [n for n in names if n in set(wanted)]
    out = []
    for name in names:
        frames = tuple(_frame_files(images / name))
        if not frames:
            raise InputError(f"{images / name} holds no {'/'.join(FRAME_SUFFIXES)} frames")
        index = {p.stem: i for i, p in enumerate(frames)}
        annotated = {}
        for png in _annotation_files(annotations / name):
            if png.stem not in index:
                raise InputError(f"annotation {png} is named like no frame of {images / name}")
            annotated[index[png.stem]] = png
        if not annotated:
            raise InputError(f"{annotations / name} holds no annotation PNG")
        out.append(SparseVideo(name, frames, annotated))
    return out


def _meta_videos(meta_file: Path) -> list[str]:
    """The video names a ``meta.json`` lists, after checking that it is a regular file (a
    FIFO would block forever) holding ``{"videos": {<video>: ...}}``."""
    check_input_path(meta_file, "meta.json")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except ValueError as error:  # not JSON, or not UTF-8
        raise InputError(f"{meta_file} is not valid JSON ({error}); fix or remove it") from None
    videos = meta.get("videos", {}) if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise InputError(
            f'{meta_file} is not a YouTube-VOS meta.json: expected {{"videos": {{<video>: '
            f"...}}}}, got {_json_kind(meta)}; fix or remove it"
        )
    return list(videos)


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return f'an object whose "videos" is {type(value.get("videos")).__name__}'
    return f"a JSON {type(value).__name__}"


def _frame_files(folder: Path) -> list[Path]:
    """A video folder's frames exactly as the tracker reads a frames directory: regular,
    non-hidden files with a frame suffix, in natural order (``2.jpg`` before ``10.jpg``).
    Other entries (notes, ``.DS_Store``, sub-folders) are not frames and are skipped."""
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _annotation_files(folder: Path) -> list[Path]:
    """A video's annotation PNGs (non-hidden regular files), in natural order."""
    if not folder.is_dir():
        return []
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def first_prompts(video: SparseVideo) -> dict[int, np.ndarray]:
    """The tracker's prompts for a video: on each frame where objects first appear, the
    annotation holding only those objects (``{frame index: [H, W] uint8 ids}``)."""
    seen: set[int] = set()
    prompts = {}
    for index in sorted(video.annotations):
        ids = read_mask(video.annotations[index]).ids
        new = [int(i) for i in np.unique(ids) if i != 0 and int(i) not in seen]
        if new:
            prompts[index] = np.where(np.isin(ids, new), ids, 0).astype(np.uint8)
            seen.update(new)
    return prompts


def ground_truth_withheld(videos: list[SparseVideo]) -> bool:
    """Whether no object of any video is annotated on more than one frame (a valid split,
    whose annotations are the first-appearance prompts only)."""
    for video in videos:
        counts: dict[int, int] = {}
        for path in video.annotations.values():
            for i in np.unique(read_mask(path).ids):
                if i != 0:
                    counts[int(i)] = counts.get(int(i), 0) + 1
        if any(n > 1 for n in counts.values()):
            return False
    return True


def score_sparse_video(video: SparseVideo, results: str | os.PathLike[str]) -> SparseScores:
    """J and F of each object on the annotated frames after its first annotation.

    Args:
        video: The video.
        results: Folder of its result PNGs, named as :attr:`SparseVideo.output_names`.

    Raises:
        FileNotFoundError: A result PNG for a scored frame is missing.
        ValueError: A result PNG of another size than its annotation.
    """
    results = Path(results)
    first: dict[int, int] = {}
    per_object: dict[int, list[tuple[float, float]]] = {}
    for index in sorted(video.annotations):
        truth = read_mask(video.annotations[index]).ids
        present = [int(i) for i in np.unique(truth) if i != 0]
        for obj in present:
            first.setdefault(obj, index)
        scored = [obj for obj in first if first[obj] < index]
        if not scored:
            continue
        path = results / video.output_names[index]
        if not path.exists():
            raise MissingFileError(f"result {path} is missing (frame {index} is scored)")
        pred = read_mask(path).ids
        if pred.shape != truth.shape:
            raise InputError(f"result {path} is {pred.shape}, its annotation {truth.shape}")
        for obj in scored:
            j, f = label_frame_scores(
                (truth == obj).astype(np.uint8), (pred == obj).astype(np.uint8), 1
            )
            per_object.setdefault(obj, []).append((float(j[0]), float(f[0])))
    objects = {
        obj: (float(np.mean([j for j, _ in v])), float(np.mean([f for _, f in v])), len(v))
        for obj, v in sorted(per_object.items())
    }
    return SparseScores(video.name, objects)


def summarise(scores: list[SparseScores]) -> dict[str, float]:
    """The dataset's J, F and J&F: means over every scored object of every video."""
    js = [j for s in scores for j, _, _ in s.objects.values()]
    fs = [f for s in scores for _, f, _ in s.objects.values()]
    if not js:
        raise InputError("no object has an annotated frame after its first: nothing to score")
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"J-Mean": j, "F-Mean": f, "J&F-Mean": (j + f) / 2, "objects": len(js)}


def write_submission(videos: list[SparseVideo], out: str | os.PathLike[str]) -> Path:
    """Zip the result PNGs of every frame of every video as the servers want them,
    ``Annotations/<video>/<frame>.png``, into ``<out>/submission.zip`` (atomically).

    Raises:
        FileNotFoundError: A frame's result PNG is missing.
    """
    out = Path(out)
    target = out / SUBMISSION_NAME
    tmp = temporary_sibling(target)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for video in videos:
                for name in video.output_names:
                    path = out / "Annotations" / video.name / name
                    if not path.exists():
                        raise MissingFileError(f"result {path} is missing for the submission")
                    archive.write(path, f"Annotations/{video.name}/{name}")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def run_sparse(videos: list[SparseVideo], tracker, out: str | os.PathLike[str]) -> dict:
    """Track every video from its first-appearance prompts, write
    ``<out>/Annotations/<video>/<frame>.png``, then score them, or, when the ground truth is
    withheld, write ``<out>/submission.zip``.

    Args:
        videos: From :func:`open_sparse_split`.
        tracker: A :class:`dinotrack.Tracker`.
        out: Output folder.

    Returns:
        ``{"withheld": bool, "submission": path or None, "scores": [SparseScores],
        "summary": {...} or None}``.
    """
    out = Path(out)
    palette = davis_palette()
    for video in videos:
        folder = out / "Annotations" / video.name
        folder.mkdir(parents=True, exist_ok=True)
        prompts = first_prompts(video)
        first = min(prompts)
        names = video.output_names
        tracked = probe_video(video.frames[0].parent).frame_names
        if tracked != names:  # a result PNG must never be written under another frame's name
            raise InputError(
                f"the tracker reads {len(tracked)} frames from {video.frames[0].parent}, the "
                f"split lists {len(names)}: their frame lists differ"
            )
        for index, mask in tracker.track(video.frames[0].parent, prompts=prompts):
            write_mask(folder / names[index], mask, palette)
        if first > 0:  # frames before any object: empty masks, so that every frame has one
            empty = np.zeros_like(read_mask(video.annotations[first]).ids)
            for index in range(first):
                write_mask(folder / names[index], empty, palette)
    if ground_truth_withheld(videos):
        return {
            "withheld": True,
            "submission": write_submission(videos, out),
            "scores": [],
            "summary": None,
        }
    scores = [score_sparse_video(v, out / "Annotations" / v.name) for v in videos]
    return {"withheld": False, "submission": None, "scores": scores, "summary": summarise(scores)}
