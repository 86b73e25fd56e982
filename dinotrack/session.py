"""The tracker (stateless: backbone + config) and tracking sessions (per-video state)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dinotrack.attention import iter_attention, upsample_attention
from dinotrack.backbones import BackboneSpec, load_backbone
from dinotrack.config import TrackerConfig
from dinotrack.features import FeatureExtractor, network_input_size
from dinotrack.masks import resize_mask
from dinotrack.propagation import LabelPropagator, labels_to_mask, one_hot_labels
from dinotrack.video_io import FrameReader

VideoSource = str | os.PathLike | Iterable[np.ndarray]
StartMask = np.ndarray | Callable[[np.ndarray, Tensor, Tensor], np.ndarray]


@dataclass
class SessionState:
    """Everything a session remembers about one video.

    Attributes:
        object_ids: User object ids in channel order; channel ``c`` (1-based) is
            ``object_ids[c - 1]`` and channel 0 is the background.
        frame_size: ``(H, W)`` of the video's frames.
        input_size: ``(h, w)`` the frames are resized to for the backbone.
        propagator: Context memory (first frame + last frames) of the propagation.
        frame_index: Index of the last frame processed (0 = the first frame).
    """

    object_ids: tuple[int, ...]
    frame_size: tuple[int, int]
    input_size: tuple[int, int]
    propagator: LabelPropagator
    frame_index: int = 0


class TrackingSession:
    """Frame-by-frame tracking of the objects of one video.

    Created by :meth:`Tracker.start`; call :meth:`step` with each following frame.
    """

    def __init__(self, tracker: Tracker, state: SessionState) -> None:
        self.tracker = tracker
        self.state = state

    @property
    def object_ids(self) -> tuple[int, ...]:
        """The user's object ids, as given in the first mask."""
        return self.state.object_ids

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Segment the next frame.

        Args:
            frame: ``[H, W, 3]`` uint8 RGB frame of the same size as the first.

        Returns:
            ``[H, W]`` object ids (uint8 when all ids are below 256, else int32).
        """
        if tuple(frame.shape[:2]) != self.state.frame_size:
            raise ValueError(
                f"frame {self.state.frame_index + 1} is {frame.shape[1]}x{frame.shape[0]}, "
                f"but the video started at {self.state.frame_size[1]}x{self.state.frame_size[0]}"
            )
        feats = self.tracker.extractor(frame[None], self.state.input_size)[0]
        return self.step_features(feats)

    def step_features(self, feats: Tensor) -> np.ndarray:
        """Segment the next frame from its precomputed patch features ``[C, h/p, w/p]``."""
        with torch.inference_mode():
            soft = self.state.propagator.step(feats)
            channels = labels_to_mask(soft, self.tracker.spec.patch_size, self.state.frame_size)
        self.state.frame_index += 1
        return self.tracker.channels_to_ids(channels.cpu().numpy(), self.state.object_ids)


class Tracker:
    """A backbone plus the propagation settings; holds no per-video state.

    Args:
        net: A timm ``VisionTransformer`` (see :func:`dinotrack.backbones.load_backbone`).
        spec: Its registry entry.
        config: Propagation settings.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    """

    def __init__(
        self,
        net: nn.Module,
        spec: BackboneSpec,
        config: TrackerConfig | None = None,
        device: str | torch.device = "auto",
    ) -> None:
        self.config = config or TrackerConfig()
        self.spec = spec
        self.extractor = FeatureExtractor(
            net, spec, device, self.config.precision, self.config.pos_embed
        )
        self.device = self.extractor.device

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        config: TrackerConfig | None = None,
        **config_overrides: Any,
    ) -> Tracker:
        """Build a tracker from a registered backbone and/or a weights file.

        Args:
            model: Registry name (see :func:`dinotrack.list_backbones`); None takes the
                architecture recorded in ``weights`` or the default ``dino_vits8``.
            weights: Checkpoint to load instead of the official weights.
            device: Where to run.
            config: Propagation settings; ``config_overrides`` replace single fields.

        Raises:
            ValueError: Unknown model or unusable weights.
            RuntimeError: The official weights could not be downloaded.
        """
        net, spec = load_backbone(model, weights)
        config = replace(config or TrackerConfig(), **config_overrides)
        return cls(net, spec, config, device)

    @property
    def patch_size(self) -> int:
        """Patch size of the backbone in pixels."""
        return self.spec.patch_size

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size ``(h, w)`` for frames of ``height x width``."""
        cfg = self.config
        return network_input_size(height, width, cfg.short_side, self.patch_size, cfg.resize_rule)

    def attention(self, frames: Iterable[np.ndarray], upsample: str | None = None) -> Tensor:
        """Class-token attention of the last block for each frame.

        Args:
            frames: ``[T, H, W, 3]`` uint8 RGB array, or an iterable of ``[H, W, 3]`` frames
                of one size (batched through the backbone, ``config.batch_size`` at a time).
            upsample: None for patch-level maps, else ``"nearest"`` or ``"bilinear"`` to
                resize them to the frames' ``(H, W)``.

        Returns:
            ``[T, heads, h/p, w/p]`` float32 on the CPU, each head's map renormalised over
            the patches so that it sums to 1 (see :mod:`dinotrack.attention`); with
            ``upsample``, ``[T, heads, H, W]``.
        """
        maps = []
        for frame, attn in iter_attention(self, frames):
            if upsample is not None:
                attn = upsample_attention(attn, frame.shape[:2], upsample)
            maps.append(attn.cpu())
        if not maps:
            raise ValueError("no frames to compute the attention of")
        return torch.stack(maps)

    def _tile(self) -> int:
        if self.config.tile is not None:
            return self.config.tile
        return 12 if self.device.type == "cuda" else 6

    def start(
        self, frame: np.ndarray, mask: np.ndarray, feats: Tensor | None = None
    ) -> TrackingSession:
        """Start a session from the first frame and its object mask.

        Args:
            frame: ``[H, W, 3]`` uint8 RGB first frame.
            mask: ``[H', W']`` integer object ids (0 = background). A mask of another size
                with the same aspect ratio is resized (nearest) with a warning.
            feats: The first frame's features ``[C, h/p, w/p]`` if already computed.

        Returns:
            A session whose :meth:`TrackingSession.step` segments the following frames.

        Raises:
            ValueError: Empty mask, negative ids, or a mask whose aspect ratio differs from
                the frame's.
        """
        frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        return self._start_checked(frame, check_first_mask(mask, frame_size), feats)

    def _start_checked(
        self, frame: np.ndarray, mask: np.ndarray, feats: Tensor | None
    ) -> TrackingSession:
        """:meth:`start` with a mask already passed through :func:`check_first_mask`."""
        frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        object_ids = tuple(int(i) for i in np.unique(mask) if i != 0)
        input_size = self.input_size(*frame_size)
        if feats is None:
            feats = self.extractor(frame[None], input_size)[0]
        grid = (input_size[0] // self.patch_size, input_size[1] // self.patch_size)
        channels = self.ids_to_channels(resize_mask(mask, *grid), object_ids)
        labels = one_hot_labels(torch.from_numpy(channels).to(feats.device), len(object_ids) + 1)
        cfg = self.config
        propagator = LabelPropagator(
            feats,
            labels,
            n_last_frames=cfg.n_last_frames,
            radius=cfg.radius,
            topk=cfg.topk,
            temperature=cfg.temperature,
            tile=self._tile(),
        )
        state = SessionState(object_ids, frame_size, input_size, propagator)
        return TrackingSession(self, state)

    @staticmethod
    def ids_to_channels(ids: np.ndarray, object_ids: tuple[int, ...]) -> np.ndarray:
        """Map user object ids to channel indices (0 = background, ids in ``object_ids``
        order from 1); ids not in ``object_ids`` become background."""
        lut = np.zeros(max(object_ids, default=0) + 1, dtype=np.int64)
        lut[list(object_ids)] = np.arange(1, len(object_ids) + 1)
        ids = np.asarray(ids)
        return np.where(ids < len(lut), lut[np.minimum(ids, len(lut) - 1)], 0)

    @staticmethod
    def channels_to_ids(channels: np.ndarray, object_ids: tuple[int, ...]) -> np.ndarray:
        """Map channel indices back to user object ids (uint8 if all < 256, else int32)."""
        table = np.array((0, *object_ids), dtype=_ids_dtype(object_ids))
        return table[channels]

    def track(
        self,
        video: VideoSource,
        first_mask: StartMask,
        *,
        with_frames: bool = False,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[tuple[int, np.ndarray]] | Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Segment a whole video, streaming: frames are decoded in a background thread and
        batched through the backbone; memory does not grow with the video's length.

        Args:
            video: Video file, directory of frames, or an iterable of ``[H, W, 3]`` uint8
                RGB frames.
            first_mask: ``[H, W]`` integer object ids of the first frame, or a function
                ``(frame, feats [C, h/p, w/p], attn [heads, h/p, w/p]) -> ids`` that derives
                them from the first frame's features and class-token attention, both from
                one forward pass (e.g. :class:`dinotrack.attention.AutoStart`).
            with_frames: Also yield each RGB frame (e.g. to draw overlays).
            start: Index of the frame the mask belongs to (frames before it are skipped).
            stop: Index one past the last frame to process.

        Yields:
            ``(index, mask)`` or ``(index, mask, frame)`` for every frame from ``start``;
            ``mask`` is ``[H, W]`` object ids with the user's ids (the first frame's mask is
            the one given).
        """
        if isinstance(video, (str, os.PathLike)):
            frames: Iterable[np.ndarray] = FrameReader(Path(video), start=start, stop=stop)
        else:
            frames = islice(video, start, stop)
        session: TrackingSession | None = None
        index = start
        for batch in _batches(iter(frames), self.config.batch_size):
            if session is None:
                input_size = self.input_size(*batch[0].shape[:2])
            _check_sizes(batch, batch[0].shape if session is None else session.state.frame_size)
            images = self.extractor.preprocess(np.stack(batch), input_size)
            auto = session is None and callable(first_mask)
            feats, attn = self.extractor.forward(images, attention=auto)
            for frame, frame_feats in zip(batch, feats, strict=True):
                if session is None:
                    mask = first_mask(frame, frame_feats, attn[0]) if auto else first_mask
                    mask = check_first_mask(mask, frame.shape[:2])
                    session = self._start_checked(frame, mask, frame_feats)
                    mask = mask.astype(_ids_dtype(session.object_ids))
                else:
                    mask = session.step_features(frame_feats)
                yield (index, mask, frame) if with_frames else (index, mask)
                index += 1
        if session is None:
            raise ValueError(f"no frames to track in {video}")


def check_first_mask(mask: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """The first-frame mask, checked against the frames' ``(H, W)`` and resized (nearest,
    with a warning) when its size differs but its aspect ratio does not.

    Raises:
        ValueError: Not a 2-D integer array, negative ids, no object, or another aspect ratio.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(
            f"the first mask must be a 2-D array of integer object ids, got {mask.dtype} "
            f"of shape {mask.shape}"
        )
    if (mask < 0).any():
        raise ValueError("the first mask has negative ids; ids must be >= 0 (0 = background)")
    if not mask.any():
        raise ValueError("the first mask is empty: it holds no object (all pixels are 0)")
    (fh, fw), (mh, mw) = frame_size, mask.shape
    if (mh, mw) != (fh, fw):
        if abs(mh * fw - mw * fh) > max(fh, fw):  # aspect ratios differ by more than a pixel
            raise ValueError(
                f"the mask is {mw}x{mh} but the frames are {fw}x{fh} (another aspect "
                "ratio); give a mask of the first frame's size"
            )
        warnings.warn(
            f"the mask is {mw}x{mh} but the frames are {fw}x{fh}; resizing the mask "
            "(nearest neighbour)",
            stacklevel=3,
        )
        mask = resize_mask(mask, fh, fw)
    return mask


def _ids_dtype(object_ids: tuple[int, ...]) -> type[np.integer]:
    """Output mask dtype: uint8 when every id fits (palette PNGs), else int32."""
    return np.uint8 if max(object_ids, default=0) < 256 else np.int32


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    while batch := list(islice(frames, size)):
        yield batch


def _check_sizes(batch: list[np.ndarray], size: tuple[int, ...]) -> None:
    for frame in batch:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be [H, W, 3] uint8 RGB, got {frame.dtype} {frame.shape}")
        if tuple(frame.shape[:2]) != tuple(size[:2]):
            raise ValueError(
                f"frame of size {frame.shape[1]}x{frame.shape[0]} in a video of "
                f"{size[1]}x{size[0]}: all frames must have the same size"
            )
