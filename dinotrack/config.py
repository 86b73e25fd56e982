"""The tracker's configuration: every knob of the algorithm, with the DINO paper's values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

RESIZE_RULES = ("official", "aspect")
"""Frame resizing rules (see :func:`dinotrack.features.network_input_size`)."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Backbone precisions: ``auto`` is bf16 autocast on CUDA and fp32 on the CPU."""

UPSAMPLE_MODES = ("nearest", "bilinear")
"""How patch-level attention maps are resized to the frame."""

DEFAULT_MASS = 0.6
"""Share of the attention mass the thresholded maps keep (the DINO paper's figures)."""


@dataclass(frozen=True)
class TrackerConfig:
    """Label-propagation settings (defaults: the DINO paper's DAVIS protocol).

    Attributes:
        n_last_frames: Previous frames kept as context besides the first frame.
        radius: Half-side of the square search window in patches (12 -> 25 x 25 patches).
            A negative value searches the whole frame.
        topk: Source patches kept per target patch, over all context frames jointly.
        temperature: Temperature of the affinity ``exp(cos / temperature)``.
        short_side: Frames are resized so that their short side has this many pixels.
        resize_rule: ``"aspect"`` (same scale on both sides, rounded to the patch size) or
            ``"official"`` (long side floored to a multiple of 64, as the DINO script).
        pos_embed: Position-embedding resampling, ``"dino"`` (official), ``"timm"``, or None
            for the backbone's own rule.
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"bf16"``,
            ``"fp16"``.
        batch_size: Frames per backbone forward pass.
        tile: Side of the target-patch blocks of the windowed propagation; None picks 6 on
            the CPU and 12 on CUDA (speed only: results do not depend on it).
    """

    n_last_frames: int = 7
    radius: int = 12
    topk: int = 5
    temperature: float = 0.1
    short_side: int = 480
    resize_rule: str = "aspect"
    pos_embed: str | None = None
    precision: str = "auto"
    batch_size: int = 4
    tile: int | None = None

    def __post_init__(self) -> None:
        if self.n_last_frames < 0:
            raise ValueError(f"n_last_frames must be >= 0, got {self.n_last_frames}")
        if self.topk < 1:
            raise ValueError(f"topk must be >= 1, got {self.topk}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.short_side < 16:
            raise ValueError(f"short_side must be >= 16 pixels, got {self.short_side}")
        if self.resize_rule not in RESIZE_RULES:
            raise ValueError(f"resize_rule must be one of {RESIZE_RULES}, got {self.resize_rule!r}")
        if self.pos_embed not in (None, "dino", "timm"):
            raise ValueError(f"pos_embed must be 'dino', 'timm' or None, got {self.pos_embed!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.tile is not None and self.tile < 1:
            raise ValueError(f"tile must be >= 1, got {self.tile}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-value copy, for logs and result files."""
        return dataclasses.asdict(self)
