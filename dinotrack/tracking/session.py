"""Tracking sessions: everything one video's tracking remembers, stepped frame by frame.

A :class:`TrackingSession` holds tensors and object ids only; its collaborators are the
feature extractor (frames to patch features), the factory of context memories
(:class:`~dinotrack.tracking.propagation.LabelPropagator` with the tracker's settings) and
:mod:`dinotrack.tracking.objects` (ids to channels). :class:`dinotrack.Tracker` starts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinotrack.errors import InputError
from dinotrack.io.masks import resize_mask
from dinotrack.models.features import FeatureExtractor
from dinotrack.tracking.memory import LabelPropagator, apply_prompt_labels, merge_group_labels
from dinotrack.tracking.objects import (
    channels_to_ids,
    check_prompt,
    ids_dtype,
    ids_to_channels,
    merge_prompt,
    object_labels,
    warn_small_objects,
)
from dinotrack.tracking.propagation import labels_to_mask

NewMemory = Callable[[Tensor, Tensor], LabelPropagator]
"""``(feats [C, h, w], labels [K, h, w]) -> LabelPropagator``: a group's context memory,
started on its first prompt's frame, with the tracker's propagation settings."""


@dataclass
class ObjectGroup:
    """Objects first prompted on the same frame, with their own context memory.

    A group's labels come only from frames at or after its first prompt: frames before it
    (where its objects may be visible but unannotated) never vote them background.

    Attributes:
        object_ids: The group's user object ids, in its channel order (channel ``c`` of its
            labels is ``object_ids[c - 1]``, channel 0 its background).
        first_frame: Session frame index of the group's first prompt.
        propagator: Its memory: prompted frames (permanent) and the last frames.
    """

    object_ids: tuple[int, ...]
    first_frame: int
    propagator: LabelPropagator


@dataclass
class SessionState:
    """Everything a session remembers about one video.

    Attributes:
        object_ids: User object ids in channel order: the groups' ids, group after group;
            channel ``c`` (1-based) is ``object_ids[c - 1]`` and channel 0 is the background.
        frame_size: ``(H, W)`` of the video's frames.
        input_size: ``(h, w)`` the frames are resized to for the backbone.
        groups: Object groups, in the order their first prompts came.
        frame_index: Index of the last frame processed (0 = the first frame).
    """

    object_ids: tuple[int, ...]
    frame_size: tuple[int, int]
    input_size: tuple[int, int]
    groups: list[ObjectGroup]
    frame_index: int = 0

    @property
    def propagator(self) -> LabelPropagator:
        """The first group's memory (the only one of a session with one prompt)."""
        return self.groups[0].propagator


class TrackingSession:
    """Frame-by-frame tracking of the objects of one video.

    Created by :meth:`Tracker.start`; call :meth:`step` with each following frame, with a
    ``prompt`` mask on the frames that carry one.
    """

    def __init__(
        self,
        state: SessionState,
        extractor: FeatureExtractor,
        new_memory: NewMemory,
        group_merge: str,
    ) -> None:
        self.state = state
        self.extractor = extractor
        self.new_memory = new_memory
        self.group_merge = group_merge

    @property
    def object_ids(self) -> tuple[int, ...]:
        """The user's object ids, in the order their first prompts gave them."""
        return self.state.object_ids

    def step(self, frame: np.ndarray, prompt: np.ndarray | None = None) -> np.ndarray:
        """Segment the next frame, optionally with a prompt for it.

        A prompt defines the objects it holds at this frame: an id not seen before is a new
        object from this frame on; an id already tracked is corrected (its pixels here are
        exactly the prompt's); objects absent from the prompt go on being tracked.

        Args:
            frame: ``[H, W, 3]`` uint8 RGB frame of the same size as the first.
            prompt: None, or ``[H', W']`` integer object ids of this frame (0 = no object),
                checked as :func:`check_first_mask` checks a first mask.

        Returns:
            ``[H, W]`` object ids (uint8 when all ids are below 256, else int32); with a
            prompt, the tracked mask with the prompt's objects replaced by the prompt's.

        Raises:
            TypeError: ``frame`` is not a numpy array.
            ValueError: ``frame`` is not ``[H, W, 3]`` uint8, or not of the first frame's size;
                a bad prompt.
        """
        check_frame(frame)
        if tuple(frame.shape[:2]) != self.state.frame_size:
            raise InputError(
                f"frame {self.state.frame_index + 1} is {frame.shape[1]}x{frame.shape[0]}, "
                f"but the video started at {self.state.frame_size[1]}x{self.state.frame_size[0]}"
            )
        if prompt is not None:
            prompt = check_prompt(prompt, self.state.frame_size, self.state.frame_index + 1)
        feats = self.extractor(as_batch(frame), self.state.input_size)[0]
        return self.step_features(feats, prompt)

    def step_features(self, feats: Tensor, prompt: np.ndarray | None = None) -> np.ndarray:
        """Segment the next frame from its precomputed patch features ``[C, h/p, w/p]``; a
        ``prompt`` must already be of the frame's size (see :func:`check_prompt`)."""
        state = self.state
        with torch.inference_mode():
            if prompt is None and len(state.groups) == 1:
                soft = state.propagator.step(feats)  # the DINO protocol, unchanged
            else:
                unit = F.normalize(feats.float(), dim=0)
                softs = [g.propagator.propagate(unit, normalized=True) for g in state.groups]
                if prompt is None:
                    for group, labels in zip(state.groups, softs, strict=True):
                        group.propagator.remember(unit, labels, normalized=True)
                soft = merge_group_labels(softs, self.group_merge)
            tracked = self._to_ids(soft)
            if prompt is not None:
                self._apply_prompt(feats, unit, softs, prompt)
        state.frame_index += 1
        if prompt is None:
            return tracked
        return merge_prompt(tracked, prompt, ids_dtype(state.object_ids))

    def _to_ids(self, soft: Tensor) -> np.ndarray:
        channels = labels_to_mask(soft, self.extractor.patch_size, self.state.frame_size)
        if channels.device.type != "cpu" and len(self.state.object_ids) < 256:
            channels = channels.to(torch.uint8)  # an 8th of the bytes to copy to the host
        return channels_to_ids(channels.cpu().numpy(), self.state.object_ids)

    def _apply_prompt(
        self, feats: Tensor, unit: Tensor, softs: list[Tensor], prompt: np.ndarray
    ) -> None:
        """Correct each group's labels of this frame (features ``feats``, L2-normalised
        ``unit``, propagated labels ``softs``) by ``prompt``, and start a group for its new
        objects."""
        state = self.state
        grid = self.extractor.grid_size(state.input_size)
        ids = resize_mask(prompt, *grid)
        present = {int(i) for i in np.unique(ids) if i != 0}
        present |= {int(i) for i in np.unique(prompt) if i != 0}  # also those below a patch
        covered = torch.from_numpy(ids != 0).to(feats.device)
        for group, labels in zip(state.groups, softs, strict=True):
            channels = torch.from_numpy(ids_to_channels(ids, group.object_ids))
            prompted = torch.tensor([False] + [i in present for i in group.object_ids])
            corrected = apply_prompt_labels(
                labels, channels.to(feats.device), covered, prompted.to(feats.device)
            )
            if prompted.any():  # a correction joins the permanent memory of its group
                group.propagator.add_permanent(unit, corrected, normalized=True)
            else:
                group.propagator.remember(unit, corrected, normalized=True)
        new_ids = tuple(sorted(present - set(state.object_ids)))
        if new_ids:
            warn_small_objects(prompt, state.input_size, self.extractor.patch_size, new_ids)
            labels = object_labels(ids, new_ids, feats.device)
            group = ObjectGroup(new_ids, state.frame_index + 1, self.new_memory(feats, labels))
            state.groups.append(group)
            state.object_ids = state.object_ids + new_ids


def batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    while batch := list(islice(frames, size)):
        yield batch


def check_frame(frame: np.ndarray) -> None:
    """Frames are ``[H, W, 3]`` uint8 RGB numpy arrays (one message for every entry point)."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(
            f"frames must be [H, W, 3] uint8 RGB numpy arrays, got {type(frame).__name__}"
        )
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"frames must be [H, W, 3] uint8 RGB, got {frame.dtype} {frame.shape}")


def as_batch(frame: np.ndarray) -> np.ndarray:
    """``[1, H, W, 3]`` view of a frame; a copy when it is read-only (``np.asarray`` of a PIL
    image), which torch would otherwise warn about."""
    return frame[None] if frame.flags.writeable else frame[None].copy()


def check_sizes(batch: list[np.ndarray], size: tuple[int, ...]) -> None:
    for frame in batch:
        check_frame(frame)
        if tuple(frame.shape[:2]) != tuple(size[:2]):
            raise InputError(
                f"frame of size {frame.shape[1]}x{frame.shape[0]} in a video of "
                f"{size[1]}x{size[0]}: all frames must have the same size"
            )
