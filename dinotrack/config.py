"""The tracker's configuration: every knob of the algorithm, with the DINO paper's values, and
the propagation presets of the DINO and DINOv3 papers."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from dinotrack.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet (images in [0, 1]), as torchvision normalises."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel RGB std of ImageNet: what DINO pretraining and timm's backbones use."""
DINO_VIDEO_PROTOCOL_STD = (0.228, 0.224, 0.225)
"""The std of the official DINO video-segmentation script (``eval_video_segmentation.py``),
0.228 for red: the DINO backbones are run with it, so that their masks match that script's."""

RESIZE_RULES = ("official", "aspect")
"""Frame resizing rules (see :func:`dinotrack.models.features.network_input_size`)."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Precisions of the backbone, for tracking and pretraining alike: ``auto`` is what
:func:`resolve_precision` makes of it."""

UPSAMPLE_MODES = ("nearest", "bilinear")
"""How patch-level attention maps are resized to the frame."""

DIRECTIONS = ("forward", "backward", "both")
"""Directions a video is tracked in from its prompts (see :meth:`dinotrack.Tracker.track`)."""

GROUP_MERGES = ("min", "product")
"""How the background channels of object groups prompted on different frames are merged."""

DEFAULT_MASS = 0.6
"""Share of the attention mass the thresholded maps keep (the DINO paper's figures)."""

# The DINO paper's DAVIS protocol: the defaults of TrackerConfig and of the propagation API.
N_LAST_FRAMES = 7
"""Previous frames kept as context besides the first."""
RADIUS = 12
"""Half-side of the search window in patches (25 x 25 patches)."""
TOPK = 5
"""Source patches kept per target patch."""
TEMPERATURE = 0.1
"""Temperature of the affinity ``exp(cos / temperature)``."""

# Speed only (results do not depend on them).
CPU_TILE = 6
"""Side of the blocks of target patches propagated together on the CPU (see :func:`cpu_tile`)."""
CUDA_TILE = 12
"""The same on CUDA."""


def cpu_tile(radius: int) -> int:
    """The tile :func:`~dinotrack.tracking.propagation.propagate_labels` is fastest with on
    the CPU for a search radius: ``CPU_TILE`` (6) when it divides the radius (the DINO
    protocol's 12) or the window is the whole frame, else 4. A target tile reaches
    ``ceil(radius / tile)`` tiles on each side, so a tile that does not divide the radius
    compares every target with sources outside its window: at radius 8, tile 6 compares with
    30 x 30 sources and tile 4 with 20 x 20, which halves the time (docs/benchmarks.md)."""
    return CPU_TILE if radius < 0 or radius % CPU_TILE == 0 else 4


@dataclass(frozen=True)
class TrackerConfig:
    """Label-propagation settings (defaults: the DINO paper's DAVIS protocol).

    Attributes:
        n_last_frames: Previous frames kept as context besides the first frame.
        radius: Half-side of the square search window in patches (12 -> 25 x 25 patches).
            A negative value searches the whole frame.
        topk: Source patches kept per target patch, over all context frames jointly, >= 1;
            a value above the number of candidates keeps them all.
        temperature: Temperature of the affinity ``exp(cos / temperature)``, finite and > 0.
        short_side: Frames are resized so that their short side has this many pixels.
        resize_rule: ``"aspect"`` (same scale on both sides, rounded to the patch size) or
            ``"official"`` (long side floored to a multiple of 64, as the DINO script).
        pos_embed: Position-embedding resampling, ``"dino"`` (official), ``"timm"``, or None
            for the backbone's own rule.
        precision: ``"auto"`` (see :func:`resolve_precision`: bf16 autocast on CUDA, fp16
            on a GPU without bf16, fp32 on the CPU), ``"fp32"``, ``"bf16"``, ``"fp16"``.
        batch_size: Frames per backbone forward pass.
        tile: Side of the target-patch blocks of the windowed propagation; None picks
            :func:`cpu_tile` of the radius on the CPU and ``CUDA_TILE`` (12) on CUDA (speed
            only: results do not depend on it beyond floating-point rounding).
        max_prompt_frames: Most prompted frames each object group keeps in its permanent
            memory (the first and the most recent), >= 1; the DINO protocol's first frame is
            the one prompt of a plain run.
        group_merge: How the groups' soft labels are merged per frame (objects first prompted
            on different frames form different groups): the background is the ``"min"`` or
            the ``"product"`` of the groups' backgrounds; object channels are kept as they are.
        compile: Compile the backbone's blocks with ``torch.compile`` (speed only).
        redetect: Look for an object again in the whole frame once propagation has lost it,
            among the regions that look like it and moved, nearest to where its motion puts
            it (:mod:`dinotrack.tracking.redetect`); off in the DINO protocol.

    Raises:
        TypeError: A count (``n_last_frames``, ``radius``, ``topk``, ``short_side``,
            ``batch_size``, ``tile``) that is not an integer, or a temperature that is not a
            number.
        ValueError: A value out of range (e.g. a NaN, infinite or non-positive temperature)
            or an unknown choice.
    """

    n_last_frames: int = N_LAST_FRAMES
    radius: int = RADIUS
    topk: int = TOPK
    temperature: float = TEMPERATURE
    short_side: int = 480
    resize_rule: str = "aspect"
    pos_embed: str | None = None
    precision: str = "auto"
    batch_size: int = 4
    tile: int | None = None
    max_prompt_frames: int = 4
    group_merge: str = "min"
    compile: bool = False
    redetect: bool = False

    def __post_init__(self) -> None:
        # Numbers are stored as plain Python ints and floats (numpy scalars are accepted),
        # so that to_dict() holds plain values.
        ints = {
            "n_last_frames": 0,
            "radius": None,
            "topk": 1,
            "short_side": 16,
            "batch_size": 1,
            "max_prompt_frames": 1,
        }
        if self.tile is not None:
            ints["tile"] = 1
        for name, minimum in ints.items():
            unit = " pixels" if name == "short_side" else ""
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum, unit))
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        if self.resize_rule not in RESIZE_RULES:
            raise InputError(f"resize_rule must be one of {RESIZE_RULES}, got {self.resize_rule!r}")
        if self.pos_embed not in (None, "dino", "timm"):
            raise InputError(f"pos_embed must be 'dino', 'timm' or None, got {self.pos_embed!r}")
        if self.group_merge not in GROUP_MERGES:
            raise InputError(f"group_merge must be one of {GROUP_MERGES}, got {self.group_merge!r}")
        for name in ("compile", "redetect"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-value copy, for logs and result files."""
        return dataclasses.asdict(self)


def resolve_precision(precision: str, device: Any) -> str:
    """The precision that ``precision`` means on ``device``, the same for every command.

    ``"auto"`` is bf16 autocast on a CUDA device that supports it, fp16 on one that does
    not, and fp32 elsewhere (the CPU); the other names are kept.

    Args:
        precision: One of :data:`PRECISIONS`.
        device: A ``torch.device``.

    Returns:
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises:
        ValueError: An unknown precision.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    import torch  # here, so that importing the settings does not import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def check_int(name: str, value: Any, minimum: int | None = None, unit: str = "") -> int:
    """Checks that a setting is an integer (not a bool), at least ``minimum`` if given.

    Args:
        name: The setting's name, for the message.
        value: Its value.
        minimum: Smallest allowed value, or None for no bound.
        unit: Appended to the bound in the message (e.g. ``" pixels"``).

    Returns:
        ``value`` as a Python int.

    Raises:
        TypeError: If ``value`` is not an integer.
        ValueError: If it is below ``minimum``.
    """
    bound = "" if minimum is None else f" >= {minimum}{unit}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer{bound}, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be{bound}, got {value}")
    return int(value)


def check_temperature(value: Any) -> float:
    """Checks the affinity temperature: a finite number > 0.

    Returns:
        ``value`` as a Python float.

    Raises:
        TypeError: If ``value`` is not a real number.
        ValueError: If it is NaN or infinite, or <= 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"temperature must be a finite number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"temperature must be a finite number > 0, got {value}")
    return float(value)


PRESET_FIELDS = ("short_side", "n_last_frames", "radius", "topk", "temperature", "redetect")
"""The settings a preset fixes; every one stays overridable."""

PRESETS: dict[str, dict[str, Any]] = {
    # DINO (Caron et al. 2021), the official eval_video_segmentation.py: 480p frames, the
    # first frame and 7 previous ones as context, a 25 x 25 patch window, top-5, T = 0.1.
    "dino": dict(short_side=480, n_last_frames=7, radius=12, topk=5, temperature=0.1),
    # DINOv3 (Simeoni et al. 2025), its segmentation-tracking notebook
    # (facebookresearch/dinov3, notebooks/segmentation_tracking.ipynb): short side 960,
    # context of 7 frames besides the first, neighbourhood of 12 patches, top-5, T = 0.2.
    # That notebook's neighbourhood is a disc of radius 12; ours is the square window.
    "dinov3": dict(short_side=960, n_last_frames=7, radius=12, topk=5, temperature=0.2),
    # The shipped offline model's (issue 22), at the short side and window its held-out
    # DAVIS-2016 J&F and CPU speed were measured at (docs/benchmarks.md): 640 (a 16-pixel
    # patch is too coarse for small frames) and a radius of 8 patches, 128 input pixels, the
    # 96 frame pixels of DINO's window at 480p (12 patches of 8). About 2.4 frames/s of 480p
    # video on 2 CPU cores. With re-detection of lost objects: the cup of the shell game in
    # 02_cups is found again when it comes out from behind its look-alike, and the 10 DAVIS
    # dev sequences are unchanged (no object is lost there).
    "offline": dict(
        short_side=640, n_last_frames=7, radius=8, topk=5, temperature=0.1, redetect=True
    ),
}
"""Propagation protocols by name (see docs in README.md, "Backbones and presets")."""


def preset_config(name: str, **overrides: Any) -> TrackerConfig:
    """The :class:`TrackerConfig` of preset ``name``, with ``overrides`` replacing fields.

    Raises:
        ValueError: An unknown preset; the message lists the known ones.
    """
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrackerConfig(**{**PRESETS[name], **overrides})
