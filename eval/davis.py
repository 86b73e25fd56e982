"""DAVIS dataset layouts: split files, sequences, annotations and results folders.

Two layouts are read:

* DAVIS-2017: ``JPEGImages/<res>/<seq>/NNNNN.jpg``, ``Annotations/<res>/<seq>/NNNNN.png``
  (palette PNGs whose indices are object ids, 0 background, 255 void) and
  ``ImageSets/2017/<split>.txt`` (one sequence name per line).
* DAVIS-2016: the same folders, annotations 8-bit grayscale with 0 background and 255 the one
  object, and ``ImageSets/2016/<split>.txt`` (names) or the original
  ``ImageSets/480p/<split>.txt`` (lines ``/JPEGImages/480p/<seq>/00000.jpg
  /Annotations/480p/<seq>/00000.png``).

An annotation PNG is decoded by its content: a grayscale PNG holding only 0 and 255 is a
DAVIS-2016 binary mask (255 is object 1); otherwise the pixel values are object ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.images import open_image

__all__ = [
    "DavisDataset",
    "DavisSequence",
    "VOID_ID",
    "is_binary_annotation",
    "open_davis",
    "read_annotation",
    "read_result",
]

VOID_ID = 255
"""Annotation id of void pixels (DAVIS-2017); background in the semi-supervised task."""

_YEARS = ("2017", "2016")
_SINGLE_CHANNEL_MODES = ("P", "L", "1")


@dataclass(frozen=True)
class DavisSequence:
    """One sequence of a DAVIS split.

    Attributes:
        name: Sequence name, e.g. ``"bike-packing"``.
        image_paths: JPEG frames in order (empty when the dataset has no ``JPEGImages``).
        annotation_paths: Annotation PNGs in order; frame names are their stems.
    """

    name: str
    image_paths: tuple[Path, ...]
    annotation_paths: tuple[Path, ...]

    @property
    def frame_names(self) -> tuple[str, ...]:
        """Stems of the annotation files, e.g. ``("00000", "00001", ...)``."""
        return tuple(path.stem for path in self.annotation_paths)


@dataclass(frozen=True)
class DavisDataset:
    """A split of a DAVIS dataset on disk.

    Attributes:
        root: Dataset root (holds ``Annotations``, ``ImageSets`` and maybe ``JPEGImages``).
        split: Split name, e.g. ``"val"``.
        year: ``"2017"`` or ``"2016"``: which ``ImageSets`` folder named the sequences.
        resolution: Resolution folder, e.g. ``"480p"``.
        split_file: The file listing the split's sequences.
        sequences: The sequences, in split-file order (restricted by ``sequences=``).
        subset: Whether ``sequences=`` left out some of the split's sequences.
    """

    root: Path
    split: str
    year: str
    resolution: str
    split_file: Path
    sequences: tuple[DavisSequence, ...]
    subset: bool = False

    @property
    def sequence_names(self) -> tuple[str, ...]:
        """Names of the sequences, in order."""
        return tuple(seq.name for seq in self.sequences)

    @property
    def tag(self) -> str:
        """What names the score files: the split (``global_results-val.csv``), or for a part
        of it ``<split>-subset``, so that scoring a few sequences does not overwrite the
        whole split's scores."""
        return f"{self.split}-subset" if self.subset else self.split


def open_davis(
    root: str | Path,
    split: str,
    *,
    sequences: Sequence[str] | None = None,
    year: str | None = None,
    resolution: str = "480p",
    require_images: bool = False,
) -> DavisDataset:
    """Find a DAVIS split on disk and list its sequences' frames.

    Args:
        root: Dataset root folder.
        split: Split name (``train``, ``val``, ``dev``, ...): the ``<split>.txt`` file to read.
        sequences: Optional subset of the split's sequence names to keep, in the given order.
        year: ``"2017"`` or ``"2016"`` to pick the split file's folder; by default
            ``ImageSets/2017``, then ``ImageSets/2016``, then ``ImageSets/<resolution>``
            (the original DAVIS-2016 path lists) are tried in that order.
        resolution: Resolution folder under ``JPEGImages`` and ``Annotations``.
        require_images: Also require ``JPEGImages/<resolution>/<seq>/*.jpg`` for every
            sequence (needed to propagate, not to score).

    Returns:
        The :class:`DavisDataset`.

    Raises:
        FileNotFoundError: The root, the split file, the annotations folder, or a sequence's
            frames are missing.
        ValueError: ``year`` is not recognised, the split is empty, or ``sequences`` names a
            sequence that is not in the split.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"DAVIS root {root} does not exist or is not a folder")
    split_file, found_year = _find_split_file(root, split, year, resolution)
    names = _read_split_file(split_file)
    if not names:
        raise InputError(f"split file {split_file} lists no sequences")
    subset = False
    if sequences is not None:
        unknown = [name for name in sequences if name not in names]
        if unknown:
            raise InputError(
                f"sequences {', '.join(unknown)} are not in split {split!r} ({split_file}); "
                f"it lists: {', '.join(names)}"
            )
        subset = set(sequences) != set(names)
        names = list(dict.fromkeys(sequences))
    annotations_dir = root / "Annotations" / resolution
    if not annotations_dir.is_dir():
        raise MissingFileError(
            f"annotations folder {annotations_dir} not found: expected one folder of PNGs per "
            "sequence there"
        )
    images_dir = root / "JPEGImages" / resolution
    missing = [name for name in names if not (annotations_dir / name).is_dir()]
    if missing:
        raise MissingFileError(
            f"split file {split_file} names sequences without annotations: "
            f"{', '.join(missing)} (expected folders {annotations_dir}/<sequence>/)"
        )
    seqs = []
    for name in names:
        annotation_paths = tuple(sorted((annotations_dir / name).glob("*.png")))
        if not annotation_paths:
            raise MissingFileError(f"no PNG annotations in {annotations_dir / name}")
        image_paths = tuple(sorted((images_dir / name).glob("*.jpg")))
        if require_images and not image_paths:
            raise MissingFileError(
                f"no JPEG frames in {images_dir / name}: propagating a sequence needs its "
                "frames as JPEGImages/<resolution>/<sequence>/*.jpg"
            )
        seqs.append(DavisSequence(name, image_paths, annotation_paths))
    return DavisDataset(
        root=root,
        split=split,
        year=found_year,
        resolution=resolution,
        split_file=split_file,
        sequences=tuple(seqs),
        subset=subset,
    )


def read_annotation(path: str | Path) -> np.ndarray:
    """Read an annotation PNG as object ids.

    Args:
        path: A palette PNG (indices are ids, 255 void) or an 8-bit grayscale PNG; a grayscale
            PNG holding only 0 and 255 is a DAVIS-2016 mask and 255 becomes id 1.

    Returns:
        Uint8 array ``[H, W]`` of ids (0 background, 255 void).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The PNG is not single-channel.
    """
    ids, mode = _read_single_channel(Path(path), what="annotation")
    if mode != "P" and _is_binary_255(ids):
        ids = (ids == 255).astype(np.uint8)
    return ids


def read_result(path: str | Path, *, binary: bool = False) -> np.ndarray:
    """Read a predicted mask PNG as object ids.

    Args:
        path: A palette or grayscale PNG whose pixel values are object ids.
        binary: The sequence is a DAVIS-2016 binary one; a value of 255 then means object 1,
            as in its annotations.

    Returns:
        Uint8 array ``[H, W]`` of ids.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The PNG is not single-channel (e.g. an RGB rendering).
    """
    ids, _ = _read_single_channel(Path(path), what="result")
    if binary and ids.size and ids.max() == 255:
        ids = np.where(ids == 255, 1, ids).astype(np.uint8)
    return ids


def is_binary_annotation(path: str | Path) -> bool:
    """Whether an annotation PNG is a DAVIS-2016 0/255 grayscale mask.

    Args:
        path: Annotation PNG.

    Returns:
        True for a non-palette PNG whose values are only 0 and 255.
    """
    ids, mode = _read_single_channel(Path(path), what="annotation")
    return mode != "P" and _is_binary_255(ids)


def _is_binary_255(ids: np.ndarray) -> bool:
    if ids.size == 0 or ids.max() != 255:
        return False
    return not bool(((ids != 0) & (ids != 255)).any())


def _read_single_channel(path: Path, *, what: str) -> tuple[np.ndarray, str]:
    if not os.path.lexists(path):
        raise MissingFileError(f"{what} frame {path} not found")
    with open_image(path, what) as image:
        mode = image.mode
        if mode not in _SINGLE_CHANNEL_MODES:
            raise InputError(
                f"{what} {path} is a {mode} image; expected a single-channel PNG (palette or "
                "8-bit grayscale) whose pixel values are object ids, not a colour rendering"
            )
        ids = np.asarray(image)
    if ids.dtype != np.uint8:
        ids = ids.astype(np.uint8)
    return ids, mode


def _find_split_file(root: Path, split: str, year: str | None, resolution: str) -> tuple[Path, str]:
    if year is not None and year not in _YEARS:
        raise InputError(f"year must be one of {', '.join(_YEARS)}, got {year!r}")
    candidates: list[tuple[Path, str]] = []
    for y in (year,) if year else _YEARS:
        candidates.append((root / "ImageSets" / y / f"{split}.txt", y))
    if year in (None, "2016"):
        candidates.append((root / "ImageSets" / resolution / f"{split}.txt", "2016"))
    for path, y in candidates:
        if path.is_file():
            return path, y
    available = (
        sorted(str(p.relative_to(root)) for p in (root / "ImageSets").glob("*/*.txt"))
        if (root / "ImageSets").is_dir()
        else []
    )
    raise MissingFileError(
        f"split file for split {split!r} not found; looked for "
        f"{', '.join(str(p) for p, _ in candidates)}"
        + (f"; available: {', '.join(available)}" if available else "")
    )


def _read_split_file(path: Path) -> list[str]:
    names: dict[str, None] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line:
            continue
        first = line.split()[0]
        # The original DAVIS-2016 lists hold "/JPEGImages/480p/<seq>/00000.jpg /Annotations/...".
        names[Path(first).parent.name if "/" in first else first] = None
    return list(names)
