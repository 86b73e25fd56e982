"""A cheap tracking probe, run every few steps, so that a run that stops learning is seen early.

The probe tracks the first frames of a few labelled DAVIS sequences with the teacher's
backbone through :class:`dinotrack.Tracker` (the same propagation as ``dinotrack eval davis``,
at a small frame size) and reports the region similarity J (mask IoU) against the
annotations, averaged over the frames after the first and over the objects. Frames and
annotations are read once, when the probe is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from dinotrack import BackboneSpec, Tracker, TrackerConfig
from dinotrack.errors import InputError, MissingFileError
from dinotrack.io.masks import read_mask


@dataclass(frozen=True)
class ProbeClip:
    """The first frames of one sequence with their annotations.

    Attributes:
        name: Sequence name.
        frames: uint8 ``[T, H, W, 3]`` RGB frames.
        masks: ``[T, H, W]`` integer object ids (0 = background).
    """

    name: str
    frames: np.ndarray
    masks: np.ndarray


def default_probe_sequences(root: str | Path, count: int = 3) -> tuple[str, ...]:
    """The first ``count`` sequences of a DAVIS root, by name.

    Raises:
        FileNotFoundError: ``root`` has no ``JPEGImages/480p`` folder.
    """
    images = Path(root) / "JPEGImages" / "480p"
    if not images.is_dir():
        raise MissingFileError(f"--probe-davis {root}: no DAVIS frames folder {images}")
    return tuple(sorted(p.name for p in images.iterdir() if p.is_dir())[:count])


def load_probe_clips(root: str | Path, sequences: tuple[str, ...], frames: int) -> list[ProbeClip]:
    """Read the first ``frames`` frames and annotations of ``sequences`` from a DAVIS root
    (``JPEGImages/480p/<seq>/*.jpg``, ``Annotations/480p/<seq>/*.png``).

    Raises:
        FileNotFoundError: A sequence's frames or annotations are missing.
        ValueError: No sequence, fewer than 2 frames, or a sequence shorter than ``frames``.
    """
    if not sequences:
        raise InputError("--probe-sequences names no sequence")
    if frames < 2:
        raise InputError(f"--probe-frames must be at least 2 (got {frames})")
    root = Path(root)
    clips = []
    for name in sequences:
        image_dir = root / "JPEGImages" / "480p" / name
        mask_dir = root / "Annotations" / "480p" / name
        if not image_dir.is_dir() or not mask_dir.is_dir():
            raise MissingFileError(
                f"probe sequence {name!r}: {image_dir} or {mask_dir} is missing; pass "
                "--probe-davis a DAVIS root that holds it, or other --probe-sequences"
            )
        images = sorted(image_dir.glob("*.jpg"))[:frames]
        masks = [mask_dir / f"{p.stem}.png" for p in images]
        if len(images) < frames or not all(m.is_file() for m in masks):
            raise InputError(
                f"probe sequence {name!r} has fewer than {frames} annotated frames in {root}"
            )
        rgb = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images])
        ids = np.stack([read_mask(m).ids for m in masks])
        clips.append(ProbeClip(name, rgb, ids))
    return clips


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mask IoU of two boolean masks; 1 when both are empty (the DAVIS convention)."""
    union = np.logical_or(pred, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, truth).sum() / union)


class TrackingProbe:
    """Mean J of tracking a few short clips with a backbone.

    Args:
        clips: What to track (see :func:`load_probe_clips`).
        config: Propagation settings; default: the tracker's, with a short side of 240
            pixels (small keeps the probe cheap).
        device: Where to run the backbone.
    """

    def __init__(
        self,
        clips: list[ProbeClip],
        config: TrackerConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.clips = clips
        self.config = config or TrackerConfig(short_side=240)
        self.device = device

    def __call__(self, net: nn.Module, spec: BackboneSpec) -> dict[str, float]:
        """Track every clip from its first annotation with ``net``.

        ``net`` is left as it was: it runs in eval mode under ``torch.inference_mode`` and
        its training flag is restored afterwards.

        Returns:
            ``{"probe_j": mean over clips, "probe_j/<sequence>": J of each clip}``; a clip's J
            is the mean over its frames after the first and over the first frame's objects.
        """
        was_training = net.training
        tracker = Tracker(net, spec, self.config, self.device)
        scores: dict[str, float] = {}
        try:
            for clip in self.clips:
                objects = [i for i in np.unique(clip.masks[0]) if i != 0]
                values = []
                for index, mask in tracker.track(iter(clip.frames), clip.masks[0]):
                    if index == 0:
                        continue
                    truth = clip.masks[index]
                    values.extend(jaccard(mask == i, truth == i) for i in objects)
                scores[f"probe_j/{clip.name}"] = float(np.mean(values)) if values else 1.0
        finally:
            net.train(was_training)
        scores["probe_j"] = float(np.mean([scores[f"probe_j/{c.name}"] for c in self.clips]))
        return scores
