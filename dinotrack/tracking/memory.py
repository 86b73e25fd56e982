"""The context memory of label propagation, and how groups' labels and prompts combine.

:class:`LabelPropagator` is the DINO protocol's memory (the first frame plus the last few),
extended with a capped permanent memory of prompted frames; :func:`propagate_sequence` runs it
over precomputed features. The propagation step itself is
:func:`dinotrack.tracking.propagation.propagate_labels`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinotrack.config import (
    N_LAST_FRAMES,
    RADIUS,
    TEMPERATURE,
    TOPK,
    TrackerConfig,
    check_int,
    cpu_tile,
)
from dinotrack.errors import InputError
from dinotrack.tracking.propagation import (
    check_settings,
    one_hot_labels,
    propagate_labels,
)
from dinotrack.tracking.redetect import Redetector


class LabelPropagator:
    """The DINO protocol's memory: the first frame plus the last ``n_last_frames`` frames.

    Each :meth:`step` propagates labels to a new frame from that context and then pushes the
    frame's features and *soft* labels into the queue (the oldest frame drops out).

    The first frame is the first entry of a *permanent* memory: frames whose labels are given
    (prompts, corrections) join it through :meth:`add_permanent`, which keeps at most
    ``max_permanent`` of them (the first and the most recent). With the first frame alone the
    context is exactly the DINO protocol's.

    Args:
        first_feats: ``[C, h, w]`` features of the first frame.
        first_labels: ``[K, h, w]`` float soft labels of the first frame (one-hot usually).
        n_last_frames: Number of previous frames kept besides the first, >= 0.
        radius: Search window half-side in patches (negative: whole frame).
        topk: Sources kept per target patch, >= 1 (see :func:`propagate_labels`).
        temperature: Affinity temperature, finite and > 0.
        tile: Block size of the windowed computation (speed only), >= 1; ``None``:
            :func:`~dinotrack.config.cpu_tile` of the radius.
        max_permanent: Most frames the permanent memory holds, >= 1.
        redetect: Find lost objects again (:class:`~dinotrack.tracking.redetect.Redetector`,
            watching every frame this memory propagates to).

    Raises:
        ValueError, TypeError: As :func:`propagate_labels`, for a bad setting or
            ``n_last_frames``, or features and labels on different grids.
    """

    def __init__(
        self,
        first_feats: Tensor,
        first_labels: Tensor,
        *,
        n_last_frames: int = N_LAST_FRAMES,
        radius: int = RADIUS,
        topk: int = TOPK,
        temperature: float = TEMPERATURE,
        tile: int | None = None,
        max_permanent: int = 1,
        redetect: bool = False,
    ) -> None:
        check_int("n_last_frames", n_last_frames, minimum=0)
        self.max_permanent = check_int("max_permanent", max_permanent, minimum=1)
        if tile is None:
            tile = cpu_tile(check_int("radius", radius))
        check_settings(radius, topk, temperature, tile)
        self.permanent: list[tuple[Tensor, Tensor]] = []
        self.recent: deque[tuple[Tensor, Tensor]] = deque(maxlen=n_last_frames)
        self.n_last_frames = n_last_frames
        self.kwargs = dict(radius=radius, topk=topk, temperature=temperature, tile=tile)
        self.add_permanent(first_feats, first_labels)
        self.redetector = Redetector(*self.permanent[0]) if redetect else None

    @classmethod
    def from_config(
        cls, first_feats: Tensor, first_labels: Tensor, config: TrackerConfig, tile: int
    ) -> LabelPropagator:
        """A memory with the propagation settings of ``config`` (context frames, window,
        top-k, temperature, prompt frames kept) and the block size ``tile``."""
        return cls(
            first_feats,
            first_labels,
            n_last_frames=config.n_last_frames,
            radius=config.radius,
            topk=config.topk,
            temperature=config.temperature,
            tile=tile,
            max_permanent=config.max_prompt_frames,
            redetect=config.redetect,
        )

    @property
    def first(self) -> tuple[Tensor, Tensor]:
        """Normalised features ``[C, h, w]`` and soft labels ``[K, h, w]`` of the first frame."""
        return self.permanent[0]

    def add_permanent(self, feats: Tensor, labels: Tensor, *, normalized: bool = False) -> None:
        """Keep a frame with known labels (a prompt) in the context of every later step.

        Beyond ``max_permanent`` frames the oldest after the first drops out.

        Args:
            feats: ``[C, h, w]`` features of the frame.
            labels: ``[K, h, w]`` float soft labels of the frame, on the features' grid.
            normalized: Whether ``feats`` are already L2-normalised along ``C``.

        Raises:
            ValueError: Features and labels on different grids.
        """
        if feats.shape[-2:] != labels.shape[-2:]:
            raise InputError(
                f"features {tuple(feats.shape)} and labels {tuple(labels.shape)} are on "
                "different grids"
            )
        feats = feats if normalized else F.normalize(feats.float(), dim=0)
        self.permanent.append((feats, labels.float()))
        if len(self.permanent) > self.max_permanent:
            del self.permanent[1]

    def propagate(self, feats: Tensor, *, normalized: bool = False) -> Tensor:
        """Soft labels ``[K, h, w]`` (float32) of a frame from its features ``[C, h, w]``
        (already L2-normalised along ``C`` with ``normalized``), without remembering the
        frame (see :meth:`step` and :meth:`remember`)."""
        return self._propagate(feats if normalized else F.normalize(feats.float(), dim=0))

    def _propagate(self, feats: Tensor) -> Tensor:
        context = [*self.permanent, *self.recent]
        labels = propagate_labels(
            feats,
            torch.stack([f for f, _ in context]),
            torch.stack([lab for _, lab in context]),
            normalized=True,
            **self.kwargs,
        )
        return labels if self.redetector is None else self.redetector(feats, labels)

    def step(self, feats: Tensor) -> Tensor:
        """Propagate to the next frame and remember it among the last frames.

        Args:
            feats: ``[C, h, w]`` features of the new frame.

        Returns:
            ``[K, h, w]`` float32 soft labels of the new frame.
        """
        feats = F.normalize(feats.float(), dim=0)
        labels = self._propagate(feats)
        self.remember(feats, labels, normalized=True)
        return labels

    def remember(self, feats: Tensor, labels: Tensor, *, normalized: bool = False) -> None:
        """Push a frame's features ``[C, h, w]`` and soft labels ``[K, h, w]`` into the queue
        of last frames (the oldest drops out); nothing with ``n_last_frames=0``."""
        if self.n_last_frames > 0:
            self.recent.append((feats if normalized else F.normalize(feats.float(), dim=0), labels))


def merge_group_labels(group_labels: list[Tensor], rule: str = "min") -> Tensor:
    """Merge the soft labels of object groups that share a frame into one set of channels.

    Each group (objects first prompted on the same frame) propagates its own labels,
    ``[1 + K_g, h, w]`` with channel 0 its background ("none of this group's objects"). The
    merged background is the elementwise ``min`` (or ``product``) of the groups'
    backgrounds; the object channels follow, group by group. One group is returned as it is.

    Args:
        group_labels: Non-empty list of ``[1 + K_g, h, w]`` float soft labels on one grid.
        rule: ``"min"`` or ``"product"``.

    Returns:
        ``[1 + sum K_g, h, w]`` float soft labels.
    """
    if len(group_labels) == 1:
        return group_labels[0]
    backgrounds = torch.stack([labels[0] for labels in group_labels])
    if rule == "min":
        background = backgrounds.amin(0)
    elif rule == "product":
        background = backgrounds.prod(0)
    else:
        raise InputError(f"rule must be 'min' or 'product', got {rule!r}")
    return torch.cat([background[None], *(labels[1:] for labels in group_labels)])


def apply_prompt_labels(
    labels: Tensor, prompt_channels: Tensor, covered: Tensor, prompted: Tensor
) -> Tensor:
    """A group's soft labels at a frame, corrected by a prompt (a partial annotation).

    The prompt fixes the objects it holds: the channel of each such object becomes exactly
    the prompt's pixels; at every pixel the prompt gives to some object (of this group or of
    another), the group's other object channels drop to 0; the background takes what is left,
    so each position still sums to 1. Objects of the group absent from the prompt keep their
    labels wherever the prompt holds no object.

    Args:
        labels: ``[K, h, w]`` float soft labels of the group (channel 0 its background).
        prompt_channels: ``[h, w]`` integer channel (of this group) of each pixel's object in
            the prompt, 0 where the prompt holds none of the group's objects.
        covered: ``[h, w]`` bool, the pixels the prompt gives to any object.
        prompted: ``[K]`` bool, the group's channels whose object is in the prompt (entry 0,
            the background, is ignored).

    Returns:
        ``[K, h, w]`` float32 corrected soft labels.
    """
    k = labels.shape[0]
    out = labels.float().masked_fill(covered[None], 0.0)
    exact = one_hot_labels(prompt_channels, k)
    out = torch.where(prompted.view(k, 1, 1), exact, out)
    out[0] = (1.0 - out[1:].sum(0)).clamp_min(0.0)
    return out


def propagate_sequence(
    features: Iterable[Tensor], first_labels: Tensor, **kwargs: Any
) -> Iterator[Tensor]:
    """Propagate first-frame labels through a sequence of feature maps (bring your own features).

    Args:
        features: Iterable of ``[C, h, w]`` feature maps, the first frame's first.
        first_labels: ``[h, w]`` integer (or bool) channel indices (0 = background, 1..K-1
            objects) or ``[K, h, w]`` float soft labels of the first frame; a tensor or a
            numpy array.
        **kwargs: :class:`LabelPropagator` settings (``n_last_frames``, ``radius``, ``topk``,
            ``temperature``, ``tile``).

    Yields:
        ``[K, h, w]`` float32 soft labels for every frame after the first.

    Raises:
        ValueError: Labels that are not ``[h, w]`` or ``[K, h, w]``, negative channel
            indices, or a bad setting (see :class:`LabelPropagator`).
        TypeError: ``[h, w]`` labels that are not integers.
    """
    first_labels = _first_labels(first_labels)
    frames = iter(features)
    try:
        first = next(frames)
    except StopIteration:
        return
    propagator = LabelPropagator(first, first_labels.to(first.device), **kwargs)
    for feats in frames:
        yield propagator.step(feats)


def _first_labels(labels: Tensor | np.ndarray) -> Tensor:
    """:func:`propagate_sequence`'s first labels as ``[K, h, w]`` float soft labels."""
    if isinstance(labels, np.ndarray):
        # Converted to a fresh array: torch warns about read-only ones (np.asarray of PIL).
        if labels.dtype == np.bool_ or np.issubdtype(labels.dtype, np.integer):
            labels = torch.from_numpy(labels.astype(np.int64))
        elif np.issubdtype(labels.dtype, np.floating):
            labels = torch.from_numpy(labels.astype(np.float32))
        else:
            raise TypeError(f"first_labels must hold numbers, got numpy dtype {labels.dtype}")
    elif not isinstance(labels, Tensor):
        raise TypeError(
            f"first_labels must be a tensor or numpy array, got {type(labels).__name__}"
        )
    if labels.dim() == 3:
        return labels.float()
    if labels.dim() != 2:
        raise InputError(
            "first_labels must be [h, w] channel indices or [K, h, w] soft labels, got shape "
            f"{tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise TypeError(
            f"[h, w] first_labels must hold integer channel indices, got {labels.dtype}; "
            "give [K, h, w] for soft labels"
        )
    labels = labels.long()
    if labels.numel() == 0:
        raise InputError(f"first_labels is empty (shape {tuple(labels.shape)})")
    if int(labels.min()) < 0:
        raise InputError(
            f"first_labels holds negative channel indices (min {int(labels.min())}); channel "
            "indices must be >= 0 (0 = background)"
        )
    return one_hot_labels(labels, int(labels.max()) + 1)
