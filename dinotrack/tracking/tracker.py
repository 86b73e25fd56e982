"""The tracker: a backbone plus the propagation settings, holding no per-video state.

:class:`Tracker` turns frames into patch features (batched, at the network's input size),
starts :class:`~dinotrack.tracking.session.TrackingSession` objects, and runs whole videos
through them in one or two passes (:meth:`Tracker.track`), streaming frames from files.

At about 490 lines this module is still one idea, the one class users hold; its frame-by-frame
state lives in :mod:`dinotrack.tracking.session`, object ids in
:mod:`dinotrack.tracking.objects`, the memory in :mod:`dinotrack.tracking.memory`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dinotrack import __version__
from dinotrack.config import (
    CUDA_TILE,
    DIRECTIONS,
    TrackerConfig,
    check_int,
    cpu_tile,
    preset_config,
)
from dinotrack.errors import InputError
from dinotrack.io.masks import resize_mask
from dinotrack.io.video import FrameReader, probe_video
from dinotrack.models.attention import normalize_attention, upsample_attention
from dinotrack.models.build import load_backbone
from dinotrack.models.features import FeatureExtractor, network_input_size
from dinotrack.models.registry import BackboneSpec
from dinotrack.tracking.memory import LabelPropagator
from dinotrack.tracking.objects import (
    check_first_mask,
    check_prompt,
    ids_dtype,
    object_labels,
    warn_small_objects,
)
from dinotrack.tracking.session import (
    ObjectGroup,
    SessionState,
    TrackingSession,
    as_batch,
    batches,
    check_frame,
    check_sizes,
)

VideoSource = str | os.PathLike | Iterable[np.ndarray]
StartMask = np.ndarray | Callable[[np.ndarray, Tensor, Tensor], np.ndarray]

MAX_INPUT_PIXELS = 8192 * 8192
"""Largest network input (pixels per frame) a tracker accepts: 8K video at full size fits."""


class Tracker:
    """A backbone plus the propagation settings; holds no per-video state.

    Args:
        net: A timm ``VisionTransformer`` (see :func:`dinotrack.models.build.load_backbone`).
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
            net, spec, device, self.config.precision, self.config.pos_embed, self.config.compile
        )
        self.device = self.extractor.device
        self._weights_digest: str | None = None

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
            config: Propagation settings (default: the backbone's preset, see
                :data:`dinotrack.config.PRESETS`); ``config_overrides`` replace single fields.

        Raises:
            ValueError: Unknown model or unusable weights.
            RuntimeError: The official weights could not be downloaded.
        """
        net, spec = load_backbone(model, weights)
        config = replace(config or preset_config(spec.preset), **config_overrides)
        return cls(net, spec, config, device)

    @property
    def patch_size(self) -> int:
        """Patch size of the backbone in pixels."""
        return self.spec.patch_size

    @property
    def num_heads(self) -> int:
        """Attention heads of the backbone's last block (the maps :meth:`attention` gives)."""
        return int(self.extractor.net.blocks[-1].attn.num_heads)

    def fingerprint(self) -> str:
        """A SHA-256 of what makes this tracker's results: the backbone's name and parameters,
        the settings, the device type, the feature precision, and the dinotrack and torch
        versions. Results kept under one fingerprint (e.g. a studio project's) are reused
        only under the same; they are byte-identical to a new run on the same machine (other
        hardware may round differently)."""
        if self._weights_digest is None:  # the parameters are hashed once
            digest = hashlib.sha256()
            for name, tensor in self.extractor.net.state_dict().items():
                digest.update(name.encode())
                digest.update(
                    tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy()
                )
            self._weights_digest = digest.hexdigest()
        setup = [
            self.spec.name,
            self._weights_digest,
            asdict(self.config),
            self.device.type,
            str(self.extractor.dtype),
            __version__,
            torch.__version__,
        ]
        return hashlib.sha256(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size ``(h, w)`` for frames of ``height x width``.

        Raises:
            ValueError: The input would exceed :data:`MAX_INPUT_PIXELS` (the message says how
                large it would be), instead of an allocator error.
        """
        cfg = self.config
        size = network_input_size(height, width, cfg.short_side, self.patch_size, cfg.resize_rule)
        if size[0] * size[1] > MAX_INPUT_PIXELS:
            tokens = (size[0] // self.patch_size) * (size[1] // self.patch_size)
            raise InputError(
                f"short_side={cfg.short_side} would feed the network "
                f"{size[1]}x{size[0]} pixels per frame of this {width}x{height} video "
                f"({size[0] * size[1] * 12 / 1e9:.1f} GB of float32 input alone, {tokens} "
                f"patches); at most {MAX_INPUT_PIXELS} pixels are allowed: lower short_side",
                parameter="short_side",
            )
        return size

    def attention(self, frames: Iterable[np.ndarray], upsample: str | None = None) -> Tensor:
        """Class-token attention of the last block for each frame.

        Args:
            frames: ``[T, H, W, 3]`` uint8 RGB array, or an iterable of ``[H, W, 3]`` frames
                of one size (batched through the backbone, ``config.batch_size`` at a time).
            upsample: None for patch-level maps, else ``"nearest"`` or ``"bilinear"`` to
                resize them to the frames' ``(H, W)``.

        Returns:
            ``[T, heads, h/p, w/p]`` float32 on the CPU, each head's map renormalised over
            the patches so that it sums to 1 (see :mod:`dinotrack.models.attention`); with
            ``upsample``, ``[T, heads, H, W]``.
        """
        maps = []
        for frame, attn in self.iter_attention(frames):
            if upsample is not None:
                attn = upsample_attention(attn, frame.shape[:2], upsample)
            maps.append(attn.cpu())
        if not maps:
            raise InputError("no frames to compute the attention of")
        return torch.stack(maps)

    def iter_attention(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, Tensor]]:
        """Streams the renormalised class-token attention of each frame.

        Frames go through the backbone in batches of ``config.batch_size`` at the tracker's
        input size, as in :meth:`track`; memory does not grow with the number of frames.

        Args:
            frames: ``[H, W, 3]`` uint8 RGB frames, all of one size.

        Yields:
            ``(frame, attn)``: the frame as given and its attention ``[heads, h/p, w/p]``
            float32 on the tracker's device, each head summing to 1 over the patches (see
            :func:`dinotrack.models.attention.normalize_attention`).

        Raises:
            TypeError: A frame is not a numpy array.
            ValueError: A frame is not ``[H, W, 3]`` uint8 or differs in size from the first.
        """
        for batch, input_size in self._frame_batches(frames):
            images = self.extractor.preprocess(np.stack(batch), input_size)
            _, attn = self.extractor.forward(images, attention=True)
            yield from zip(batch, normalize_attention(attn), strict=True)

    def _frame_batches(
        self, frames: Iterable[np.ndarray]
    ) -> Iterator[tuple[list[np.ndarray], tuple[int, int]]]:
        """The one batching loop of :meth:`track` and :meth:`iter_attention`: lists of
        ``config.batch_size`` frames (fewer at the end), each checked to be ``[H, W, 3]``
        uint8 of the first frame's size, with the network input size of that size."""
        input_size = None
        for batch in batches(iter(frames), self.config.batch_size):
            if input_size is None:
                check_frame(batch[0])
                frame_size = batch[0].shape
                input_size = self.input_size(*frame_size[:2])
            check_sizes(batch, frame_size)
            yield batch, input_size

    def _tile(self) -> int:
        if self.config.tile is not None:
            return self.config.tile
        return CUDA_TILE if self.device.type == "cuda" else cpu_tile(self.config.radius)

    def start(
        self, frame: np.ndarray, mask: np.ndarray, feats: Tensor | None = None
    ) -> TrackingSession:
        """Start a session from the first frame and its object mask.

        Args:
            frame: ``[H, W, 3]`` uint8 RGB first frame.
            mask: ``[H', W']`` integer (or bool) object ids (0 = background). A mask of
                another size that is a rescale of the frame's is resized (nearest) with a
                warning (see :func:`check_first_mask`).
            feats: The first frame's features ``[C, h/p, w/p]`` if already computed.

        Returns:
            A session whose :meth:`TrackingSession.step` segments the following frames.

        Warns:
            UserWarning: The mask was resized, or an object covers less than one patch at the
                network input (it may be lost after the first frame).

        Raises:
            TypeError: ``frame`` is not a numpy array.
            ValueError: ``frame`` is not ``[H, W, 3]`` uint8; empty mask, negative ids, a mask
                of another aspect ratio or too small.
        """
        check_frame(frame)
        frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        return self._start_checked(frame, check_first_mask(mask, frame_size), feats)

    def _start_checked(
        self, frame: np.ndarray, mask: np.ndarray, feats: Tensor | None
    ) -> TrackingSession:
        """:meth:`start` with a mask already passed through :func:`check_first_mask`."""
        frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        object_ids = tuple(int(i) for i in np.unique(mask) if i != 0)
        input_size = self.input_size(*frame_size)
        warn_small_objects(mask, input_size, self.patch_size)
        if feats is None:
            feats = self.extractor(as_batch(frame), input_size)[0]
        labels = object_labels(resize_mask(mask, *self.grid_size(input_size)), object_ids)
        group = ObjectGroup(object_ids, 0, self.new_propagator(feats, labels.to(feats.device)))
        return self.resume(SessionState(object_ids, frame_size, input_size, [group]))

    def resume(self, state: SessionState) -> TrackingSession:
        """A session that goes on from ``state`` (e.g. a state rebuilt from cached features
        and labels, see :mod:`dinotrack.tracking.resumable`), with this tracker's settings."""
        return TrackingSession(state, self.extractor, self.new_propagator, self.config.group_merge)

    def grid_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Patch grid ``(h/p, w/p)`` of a network input of ``input_size`` ``(h, w)``."""
        return self.extractor.grid_size(input_size)

    def new_propagator(self, feats: Tensor, labels: Tensor) -> LabelPropagator:
        """The context memory of an object group prompted with ``labels`` ``[K, h, w]`` on
        the frame of ``feats`` ``[C, h, w]``, with this tracker's settings."""
        return LabelPropagator.from_config(feats, labels, self.config, self._tile())

    def track(
        self,
        video: VideoSource,
        first_mask: StartMask | None = None,
        *,
        prompts: Mapping[int, np.ndarray] | None = None,
        direction: str = "forward",
        with_frames: bool = False,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[tuple[int, np.ndarray]] | Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Segment a whole video, streaming: frames are decoded in a background thread and
        batched through the backbone; memory does not grow with the video's length.

        Objects are given either as ``first_mask`` (the mask of frame ``start``) or as
        ``prompts``, masks on any frames. A prompt defines the objects it holds at its frame:
        an id not seen before is a new object from that frame on, an id already tracked is
        corrected there, objects absent from it go on being tracked (see
        :meth:`TrackingSession.step`). Objects first prompted on the same frame form a group
        with its own memory, so that frames before an object's first prompt never vote it
        background; the groups' labels are merged per frame (``config.group_merge``).

        Args:
            video: Video file, directory of frames, or an iterable of ``[H, W, 3]`` uint8
                RGB frames (held in memory for a backward pass: give a path to stream).
            first_mask: ``[H, W]`` integer object ids of frame ``start``, or a function
                ``(frame, feats [C, h/p, w/p], attn [heads, h/p, w/p]) -> ids`` that derives
                them from the first frame's features and class-token attention, both from
                one forward pass (e.g. :class:`dinotrack.tracking.autostart.AutoStart`).
            prompts: Instead of ``first_mask``: ``{frame index: [H, W] object ids}``, frame
                indices counted from 0 in the video, within ``[start, stop)``.
            direction: ``"forward"`` (from the earliest prompt to the end), ``"backward"``
                (from the latest prompt down to ``start``) or ``"both"`` (forward from the
                earliest prompt, and the frames before it by a backward pass from it).
            with_frames: Also yield each RGB frame (e.g. to draw overlays).
            start: Index of the first frame of the video to consider (frames before it are
                skipped); the frame ``first_mask`` belongs to. With ``first_mask`` and a
                ``"backward"`` or ``"both"`` direction, frame ``start`` is where the backward
                pass begins, and it tracks down to frame 0.
            stop: Index one past the last frame to process.

        Yields:
            ``(index, mask)`` or ``(index, mask, frame)``, one per frame tracked, ``index``
            counted from 0 in the video; ``mask`` is ``[H, W]`` object ids with the user's
            ids (on a prompted frame, the tracked mask with the prompt's objects replaced
            by the prompt's; the first prompt's frame shows the prompt). Order: forward,
            increasing indices from the earliest prompt; backward, decreasing indices from
            the latest prompt down to ``start``; both, the forward frames and then the
            backward ones (earliest prompt - 1 down to ``start``).

        Warns:
            UserWarning: As :meth:`start`.

        Raises:
            TypeError, ValueError: At the call, ``start``, ``stop``, ``direction`` or a prompt
                index out of range, both or neither of ``first_mask`` and ``prompts``, a mask
                function with a backward direction; while iterating, frames that are not
                ``[H, W, 3]`` uint8 of one size, a bad mask (see :func:`check_first_mask`), a
                prompt past the end of the video, or no frame between ``start`` and ``stop``.
        """
        start = check_int("start", start, minimum=0)
        if stop is not None and check_int("stop", stop) <= start:
            raise InputError(f"stop must be greater than start ({start}), got {stop}")
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if (first_mask is None) == (prompts is None):
            raise InputError("give the objects either as first_mask or as prompts (not both)")
        if prompts is None:
            if callable(first_mask) and direction != "forward":
                raise InputError(f"a start-mask function can only track forward, not {direction!r}")
            prompts = {start: first_mask}
            if direction != "forward":  # the backward pass goes from frame start to frame 0
                start = 0
        else:
            prompts = _check_prompt_indices(prompts, start, stop)
        return self._track(video, prompts, direction, with_frames, start, stop)

    def _track(
        self,
        video: VideoSource,
        prompts: dict[int, StartMask],
        direction: str,
        with_frames: bool,
        start: int,
        stop: int | None,
    ) -> Iterator[tuple[int, np.ndarray]] | Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """:meth:`track` once its arguments are checked."""
        first, last = min(prompts), max(prompts)
        end = stop  # one past the last frame there is to read, where known
        if isinstance(video, (str, os.PathLike)):
            num_frames = probe_video(video).num_frames
            end = num_frames if stop is None else min(stop, num_frames)
            source: str = str(video)

            def frames(a: int, b: int, reverse: bool) -> Iterator[tuple[int, np.ndarray]]:
                # A generator: the reader opens (and decodes) only when the pass begins.
                with FrameReader(Path(video), start=a, stop=b, reverse=reverse) as reader:
                    indices = range(b - 1, a - 1, -1) if reverse else itertools.count(a)
                    yield from zip(indices, reader, strict=False)  # a cut-off video ends early
        else:
            source = "the given frames"  # an iterable's repr may hold whole frame arrays
            held = None if direction == "forward" else list(islice(video, start, stop))
            if held is not None:
                end = start + len(held)

            def frames(a: int, b: int, reverse: bool) -> Iterator[tuple[int, np.ndarray]]:
                if held is None:
                    yield from zip(itertools.count(a), islice(video, a, b), strict=False)
                    return
                span = range(b - 1, a - 1, -1) if reverse else range(a, b)
                yield from ((i, held[i - start]) for i in span if i - start < len(held))

        if end is not None and first < end <= last:
            raise InputError(_past_end_message(last, source, end))
        passes = []
        if direction in ("forward", "both"):
            passes.append((frames(first, end, False), prompts, 0))
        if direction == "backward":
            passes.append((frames(start, last + 1, True), prompts, 0))
        elif direction == "both" and first > start:
            # The earliest prompt's frame is the backward pass's first; the forward pass
            # yields it.
            backward = frames(start, first + 1, True)
            passes.append((backward, {first: prompts[first]}, 1))
        seen = 0
        for indexed, pass_prompts, skip in passes:
            results = self._track_pass(indexed, pass_prompts, with_frames)
            for item in islice(results, skip, None):
                seen += 1
                yield item
        if seen == 0:
            span = "" if start == 0 and stop is None else f" from index {start}"
            span += "" if stop is None else f" to {stop}"
            raise InputError(f"no frames to track in {source}{span}")

    def _track_pass(
        self,
        indexed: Iterator[tuple[int, np.ndarray]],
        prompts: dict[int, StartMask],
        with_frames: bool,
    ) -> Iterator[tuple[int, np.ndarray]] | Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """One pass over ``(index, frame)`` pairs whose first is a prompted frame."""
        session: TrackingSession | None = None
        unused = set(prompts)
        indices: list[int] = []  # of the frames the batching loop has taken so far

        def frames() -> Iterator[np.ndarray]:
            for index, frame in indexed:
                indices.append(index)
                yield frame

        for batch, input_size in self._frame_batches(frames()):
            batch_indices, indices[:] = indices[: len(batch)], indices[len(batch) :]
            images = self.extractor.preprocess(np.stack(batch), input_size)
            auto = session is None and callable(prompts[batch_indices[0]])
            feats, attn = self.extractor.forward(images, attention=auto)
            for index, frame, frame_feats in zip(batch_indices, batch, feats, strict=True):
                prompt = prompts.get(index)
                unused.discard(index)
                if session is None:
                    mask = prompt(frame, frame_feats, attn[0]) if auto else prompt
                    mask = check_first_mask(mask, frame.shape[:2])
                    session = self._start_checked(frame, mask, frame_feats)
                    mask = mask.astype(ids_dtype(session.object_ids))
                else:
                    if prompt is not None:
                        prompt = check_prompt(prompt, session.state.frame_size, index)
                    mask = session.step_features(frame_feats, prompt)
                yield (index, mask, frame) if with_frames else (index, mask)
        if unused and session is not None:
            raise InputError(_past_end_message(max(unused), "the given frames", None))


def _check_prompt_indices(
    prompts: Mapping[int, np.ndarray], start: int, stop: int | None
) -> dict[int, np.ndarray]:
    """``prompts`` as a dict, its keys checked to be frame indices in ``[start, stop)``."""
    if not isinstance(prompts, Mapping):
        raise TypeError(
            f"prompts must be a mapping {{frame index: mask}}, got {type(prompts).__name__}"
        )
    if not prompts:
        raise InputError("prompts is empty: give at least one {frame index: mask}")
    checked = {}
    for index, mask in prompts.items():
        index = check_int("a prompt's frame index", index, minimum=0)
        if index < start or (stop is not None and index >= stop):
            end = "" if stop is None else f" to {stop - 1}"
            raise InputError(
                f"prompt for frame {index} is outside the frames tracked ({start}{end})"
            )
        if callable(mask):
            raise TypeError(f"the prompt of frame {index} must be a mask array, not a function")
        checked[index] = mask
    return dict(sorted(checked.items()))


def _past_end_message(index: int, source: str, stop: int | None) -> str:
    frames = "" if stop is None else f": it has {stop} frames (0 to {stop - 1})"
    return f"prompt for frame {index} is past the end of {source}{frames}"
