"""The interactive engine: prompts on any frame, propagation, corrections, export.

In the spirit of SAM 2's video predictor: open a video, give objects masks (or clicks, or a
box) on any frames, propagate, look at the results, correct a frame and propagate again.
``dinotrack studio`` is a thin HTTP layer over :class:`InteractiveSession`; scripts can use it
directly::

    from dinotrack import InteractiveSession, Tracker

    tracker = Tracker.from_pretrained("dinotrack_vitt16_v3", device="cpu")
    session = InteractiveSession(tracker, "clip.mp4", out="clip-studio")
    car = session.add_object("car")
    session.add_clicks(0, car.id, [(320, 200)], [1])      # a positive click on frame 0
    for index, mask in session.propagate("forward"):     # [H, W] uint8 object ids
        ...
    session.set_object_mask(40, car.id, corrected)       # a correction on frame 40
    list(session.propagate("forward"))                   # recomputes frames 40.. only
    session.export(["png", "coco"])                      # clip-studio/results/

This module is one idea, the state of one interactive session behind one class, hence its
length: objects, prompts, clicks, propagation and export are that state's methods, while the
work itself lives in :mod:`dinotrack.tracking.resumable` (resumable passes),
:mod:`dinotrack.tracking.clicks`,
:mod:`dinotrack.pipeline.project` (the project file) and :mod:`dinotrack.results.writer` (the
writer).

The tracking is :class:`dinotrack.Tracker`'s (the same sessions, batches and frame reader as
``dinotrack segment``): the results for a set of prompts are byte-identical to ``segment
--prompt FRAME:MASK ...`` with the same prompts (see ``tests/test_interactive.py``).

Re-propagation keeps what a change cannot affect. A forward result depends only on the
prompts at or before its frame (a backward one on those at or after), so after a change on
frame ``k`` the results before ``k`` stand and the pass resumes near ``k``: the session is
rebuilt from a snapshot of its memory (:mod:`dinotrack.tracking.resumable`), recomputing the
features
of the few frames it holds, in the batches the first run computed them in. A cancelled
propagation resumes the same way.

Frames are decoded on demand into a small LRU cache (:class:`dinotrack.io.frame_cache.FrameCache`);
results are kept compressed (a few kB per frame), with the soft labels of each frame (``K x
h/p x w/p`` floats) that resuming needs: memory does not hold frames, whatever the video's
length. With ``out``, objects, prompts and settings are saved to a project file there as they
change (:mod:`dinotrack.pipeline.project`), the results with their snapshots during and after
each propagation, and opening the same video with the same ``out`` (and, for the results, the
same :meth:`dinotrack.Tracker.fingerprint`) restores them.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dinotrack.config import DIRECTIONS, check_int
from dinotrack.errors import BusyError, InputError, StaleResultsError
from dinotrack.io.frame_cache import FrameCache
from dinotrack.io.masks import MAX_OBJECT_ID, davis_palette
from dinotrack.pipeline.project import ProjectFile, ProjectObject, UnusableResultsError
from dinotrack.tracking.objects import check_prompt
from dinotrack.tracking.resumable import PropagationStats, ResumableTracking, plan
from dinotrack.tracking.tracker import Tracker

__all__ = [
    "BusyError",
    "InteractiveSession",
    "ObjectInfo",
    "PropagationStats",
    "StaleResultsError",
]

OVERLAY_NAME = "overlay.mp4"
"""The overlay video :meth:`InteractiveSession.export` writes into ``out``."""

RESULTS_NAME = "results"
"""The folder of ``out`` that :meth:`InteractiveSession.export` writes the results into."""

MAX_SETTINGS_BYTES = 16384
"""Largest settings object (as JSON) a session keeps."""


@dataclass(frozen=True)
class ObjectInfo:
    """An object: its id (the palette index of its masks), name and visibility."""

    id: int
    name: str
    hidden: bool = False

    @property
    def color(self) -> str:
        """Its colour in the DAVIS palette, ``"#rrggbb"``."""
        r, g, b = (int(c) for c in davis_palette()[self.id])
        return f"#{r:02x}{g:02x}{b:02x}"

    def as_dict(self) -> dict[str, Any]:
        """``{"id", "name", "color", "hidden"}`` (the studio's JSON)."""
        return {"id": self.id, "name": self.name, "color": self.color, "hidden": self.hidden}


class InteractiveSession:
    """Prompts, propagation and results of one video, interactively.

    Args:
        tracker: The tracker (backbone and settings) to track with.
        video: Video file or directory of frames.
        out: Directory for the project file and exports (None: nothing is saved, and
            :meth:`export` needs a directory); an earlier project of the same video there is
            restored.
        cache_frames: Most decoded frames held in memory.
        save_every: Seconds between saves of the results during a propagation (they are
            also saved when it ends), so that a crash loses at most that much work; longer
            when a save takes more than a twentieth of it (a long video); 0 saves after
            every frame.

    Raises:
        FileNotFoundError, ValueError: An unreadable video; a project of another video in
            ``out``.
        FileExistsError: ``out`` holds a ``studio.json`` that dinotrack did not write.
    """

    def __init__(
        self,
        tracker: Tracker,
        video: str | os.PathLike[str],
        out: str | os.PathLike[str] | None = None,
        *,
        cache_frames: int = 48,
        save_every: float = 30.0,
    ) -> None:
        self.tracker = tracker
        if isinstance(save_every, bool) or not isinstance(save_every, (int, float)):
            raise InputError(f"save_every must be a number of seconds, got {save_every!r}")
        if not save_every >= 0:  # also refuses NaN
            raise InputError(f"save_every must be a number of seconds >= 0, got {save_every}")
        self.save_every = float(save_every)
        self.frames = FrameCache(video, capacity=cache_frames)
        self.info = self.frames.info
        self.video = Path(video)
        self.frame_size = (self.info.height, self.info.width)
        self.input_size = tracker.input_size(*self.frame_size)
        self.out = None if out is None else Path(out)
        self._tracking = ResumableTracking(tracker, self.frames)
        self._range = (0, self.info.num_frames)  # the frames the last propagation tracked
        self._lock = threading.RLock()
        self._cancel = threading.Event()
        self._running = False
        self._objects: dict[int, ObjectInfo] = {}
        self._prompts: dict[int, np.ndarray] = {}
        self._clicks: dict[tuple[int, int], list[tuple[float, float, int]]] = {}
        self._boxes: dict[tuple[int, int], tuple[float, float, float, float]] = {}
        self._settings: dict[str, Any] = {}
        self._click_features: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._project = None if self.out is None else ProjectFile(self.out, self.info)
        self.notices: list[str] = []
        """What the user should know about the project as it was opened (e.g. kept results
        that are not shown, and why), one line each."""
        if self._project is not None and self._project.exists:
            saved = self._project.load()
            self._objects = {o.id: ObjectInfo(o.id, o.name, o.hidden) for o in saved.objects}
            self._prompts = {f: _frozen(m) for f, m in saved.prompts.items()}
            self._settings = saved.settings
            for ids in self._prompts.values():
                self._add_missing_objects(ids)
            for entry in saved.clicks:  # so that clicks after a restart add to them
                key = (int(entry["frame"]), int(entry["object"]))
                self._clicks[key] = [(float(x), float(y), int(v)) for x, y, v in entry["points"]]
                if entry["box"] is not None:
                    self._boxes[key] = tuple(float(v) for v in entry["box"])
            self._restore_results()

    # -- the video --------------------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        """Number of frames of the video."""
        return self.info.num_frames

    @property
    def frame_names(self) -> tuple[str, ...]:
        """The result file name of each frame (``00000.png``, or the frames' own stems)."""
        return self.info.frame_names

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as a read-only ``[H, W, 3]`` uint8 RGB array (decoded on demand).

        Raises:
            IndexError: No such frame.
        """
        return self.frames.get(index)

    # -- objects ----------------------------------------------------------------------------

    @property
    def objects(self) -> list[ObjectInfo]:
        """The objects, by id."""
        with self._lock:
            return [self._objects[i] for i in sorted(self._objects)]

    def add_object(self, name: str | None = None, object_id: int | None = None) -> ObjectInfo:
        """A new object: ``object_id``, or the smallest free id, named ``name`` (default
        ``"object N"``).

        Raises:
            ValueError: ``object_id`` taken or outside 1..255, no free id left, or a bad name.
        """
        with self._lock:
            if object_id is None:
                free = [i for i in range(1, MAX_OBJECT_ID) if i not in self._objects]
                if not free:
                    raise InputError(f"no free object id: {MAX_OBJECT_ID - 1} objects exist")
                object_id = free[0]
            object_id = check_int("object id", object_id, minimum=1)
            if object_id >= MAX_OBJECT_ID:
                raise InputError(f"object ids go from 1 to {MAX_OBJECT_ID - 1}, got {object_id}")
            if object_id in self._objects:
                raise InputError(f"object {object_id} exists already")
            info = ObjectInfo(object_id, _check_name(name, f"object {object_id}"))
            self._objects[object_id] = info
            self._save()
            return info

    def update_object(
        self, object_id: int, *, name: str | None = None, hidden: bool | None = None
    ) -> ObjectInfo:
        """Rename an object or hide it (``hidden`` is a display setting: it is still tracked).

        Raises:
            KeyError: No such object.
            ValueError: A bad name; ``hidden`` not a bool.
        """
        with self._lock:
            info = self._object(object_id)
            if name is not None:
                info = ObjectInfo(info.id, _check_name(name, info.name), info.hidden)
            if hidden is not None:
                if not isinstance(hidden, bool):
                    raise InputError(f"hidden must be true or false, got {hidden!r}")
                info = ObjectInfo(info.id, info.name, hidden)
            self._objects[object_id] = info
            self._save()
            return info

    def remove_object(self, object_id: int) -> None:
        """Delete an object and its pixels from every prompt (a prompt left empty goes); its
        results stay until the next propagation.

        Raises:
            KeyError: No such object.
        """
        with self._lock:
            self._object(object_id)
            for frame, ids in list(self._prompts.items()):
                if (ids == object_id).any():
                    kept = np.where(ids == object_id, 0, ids).astype(ids.dtype)
                    self._store_prompt(frame, kept if kept.any() else None)
            for key in [k for k in self._clicks if k[1] == object_id]:
                del self._clicks[key]
            for key in [k for k in self._boxes if k[1] == object_id]:
                del self._boxes[key]
            del self._objects[object_id]
            self._save()

    def _object(self, object_id: int) -> ObjectInfo:
        info = self._objects.get(object_id)
        if info is None:
            raise KeyError(f"object {object_id} does not exist")
        return info

    def _add_missing_objects(self, ids: np.ndarray) -> None:
        for i in np.unique(ids):
            if i != 0 and int(i) not in self._objects:
                self._objects[int(i)] = ObjectInfo(int(i), f"object {int(i)}")

    # -- prompts ----------------------------------------------------------------------------

    @property
    def prompt_frames(self) -> list[int]:
        """The frames that hold a prompt, in order."""
        with self._lock:
            return sorted(self._prompts)

    def prompt(self, index: int) -> np.ndarray | None:
        """The prompt of frame ``index`` (``[H, W]`` uint8 object ids), or None."""
        with self._lock:
            return self._prompts.get(index)

    def set_prompt(self, index: int, ids: np.ndarray) -> list[ObjectInfo]:
        """Set (or replace) the prompt of frame ``index``: ``[H, W]`` object ids, read as
        ``segment --prompt`` reads a mask (a rescale of the frame size is resized). Ids not
        yet known become objects.

        Returns:
            The objects.

        Raises:
            IndexError: No such frame.
            ValueError: A bad mask (the message ``segment`` gives), ids above 254.
        """
        self._check_frame_index(index)
        ids = check_prompt(ids, self.frame_size, index)
        if int(ids.max()) >= MAX_OBJECT_ID:
            raise InputError(
                f"the prompt of frame {index} holds id {int(ids.max())}; object ids go from 1 "
                f"to {MAX_OBJECT_ID - 1}"
            )
        with self._lock:
            self._forget_clicks(index)
            self._store_prompt(index, ids.astype(np.uint8))
            self._add_missing_objects(ids)
            self._save()
            return self.objects

    def set_object_mask(self, index: int, object_id: int, mask: np.ndarray) -> np.ndarray | None:
        """Add or replace one object's mask on frame ``index`` (SAM 2's ``add_new_mask``).

        The frame's prompt starts from its current prompt, else its current result, else
        nothing; the object's pixels there become exactly ``mask`` (taken from any other
        object). A prompt left empty is deleted.

        Args:
            index: The frame.
            object_id: The object (created if new).
            mask: ``[H, W]`` bool (or 0/1) mask of the object.

        Returns:
            The frame's new prompt, or None.

        Raises:
            IndexError: No such frame.
            ValueError: A mask of another size, or an id outside 1..254.
        """
        self._check_frame_index(index)
        mask = np.asarray(mask)
        if mask.shape != self.frame_size:
            raise InputError(
                f"the mask of object {object_id} has shape {mask.shape}; the frames are "
                f"{self.frame_size[1]}x{self.frame_size[0]}: give an [H, W] mask of that size"
            )
        with self._lock:
            self._clicks.pop((index, object_id), None)
            self._boxes.pop((index, object_id), None)
            return self._replace_object(index, object_id, mask)

    def _replace_object(self, index: int, object_id: int, mask: np.ndarray) -> np.ndarray | None:
        if object_id not in self._objects:
            self.add_object(object_id=object_id)
        base = self._base_prompt(index)
        base[base == object_id] = 0
        base[mask.astype(bool)] = object_id
        self._store_prompt(index, base if base.any() else None)
        self._save()
        return self._prompts.get(index)

    def delete_prompt(self, index: int) -> None:
        """Delete the prompt of frame ``index``.

        Raises:
            KeyError: Frame ``index`` holds no prompt.
        """
        with self._lock:
            if index not in self._prompts:
                raise KeyError(f"frame {index} holds no prompt")
            self._forget_clicks(index)
            self._store_prompt(index, None)
            self._save()

    def add_clicks(
        self,
        index: int,
        object_id: int,
        points: Sequence[Sequence[float]] = (),
        labels: Sequence[int] = (),
        box: Sequence[float] | None = None,
        *,
        clear: bool = False,
    ) -> np.ndarray:
        """Grow an object's mask on frame ``index`` from clicks and/or a box (SAM 2's
        ``add_new_points_or_box``) and make it the object's mask in the frame's prompt.

        The clicks add to the object's earlier clicks on that frame (since its mask there was
        last set otherwise), unless ``clear``; see :func:`dinotrack.tracking.clicks.click_mask` for
        how
        the mask grows.

        Args:
            index: The frame.
            object_id: The object (created if new).
            points: ``(x, y)`` pixel coordinates of the frame.
            labels: Per point, 1 (positive: the object) or 0 (negative: not the object).
            box: ``(x0, y0, x1, y1)`` pixels, or None (a new box replaces the earlier one).
            clear: Forget the object's earlier clicks and box on this frame first.

        Returns:
            ``[H, W]`` bool: the object's new mask on the frame.

        Raises:
            IndexError: No such frame.
            ValueError: A point or box outside the frame, labels that are not 0/1, or
                nothing to grow from (no positive click, box or mask of the object).
        """
        from dinotrack.tracking.clicks import check_clicks, click_mask

        self._check_frame_index(index)
        points, labels, box = check_clicks(points, labels, box, self.frame_size)
        key = (index, object_id)
        with self._lock:
            if clear:
                self._clicks.pop(key, None)
                self._boxes.pop(key, None)
            clicks = list(self._clicks.get(key, []))
            for (x, y), label in zip(points, labels, strict=True):
                if (x, y, label) not in clicks:
                    clicks.append((x, y, label))
            box = box if box is not None else self._boxes.get(key)
            base = self._base_prompt(index)
            current = base == object_id
        mask = click_mask(
            self.frame(index),
            self._features(index),
            [(x, y) for x, y, _ in clicks],
            [label for _, _, label in clicks],
            box,
            current if current.any() else None,
        )
        with self._lock:
            self._clicks[key] = clicks
            if box is not None:
                self._boxes[key] = box
            self._replace_object(index, object_id, mask)
        return mask

    def _features(self, index: int) -> torch.Tensor:
        """Patch features ``[C, h/p, w/p]`` of frame ``index`` (the last few are kept)."""
        with self._lock:
            feats = self._click_features.get(index)
        if feats is None:
            frame = self.frame(index)[None].copy()
            feats = self.tracker.extractor(frame, self.input_size)[0]
            with self._lock:
                self._click_features[index] = feats
                while len(self._click_features) > 4:
                    self._click_features.popitem(last=False)
        return feats

    def _base_prompt(self, index: int) -> np.ndarray:
        """A fresh copy of frame ``index``'s prompt, else of its result, else zeros."""
        prompt = self._prompts.get(index)
        if prompt is not None:
            return prompt.copy()
        result = self.mask(index)
        if result is not None and int(result.max()) < MAX_OBJECT_ID:
            return result.astype(np.uint8)
        return np.zeros(self.frame_size, np.uint8)

    def _store_prompt(self, index: int, ids: np.ndarray | None) -> None:
        """Keep (or, None, drop) a prompt; with a project, its PNG is written first."""
        if ids is None:
            self._prompts.pop(index, None)
            return
        if self._project is not None:
            self._project.write_prompt(index, ids)
        self._prompts[index] = _frozen(ids)

    def _forget_clicks(self, index: int) -> None:
        for store in (self._clicks, self._boxes):
            for key in [k for k in store if k[0] == index]:
                del store[key]

    def _check_frame_index(self, index: int) -> None:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < self.num_frames:
            raise IndexError(
                f"frame {index} does not exist: the video has {self.num_frames} frames "
                f"(0 to {self.num_frames - 1})"
            )

    # -- settings, reset, saving ------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """Display settings (e.g. the overlay's opacity), saved with the project."""
        with self._lock:
            return dict(self._settings)

    def update_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into the settings (JSON values; None deletes a key).

        Raises:
            ValueError: Not a JSON object, or larger than :data:`MAX_SETTINGS_BYTES`.
        """
        if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
            raise InputError("settings must be a JSON object")
        with self._lock:
            merged = {**self._settings, **values}
            merged = {k: v for k, v in merged.items() if v is not None}
            try:
                size = len(json.dumps(merged))
            except (TypeError, ValueError):
                raise InputError("settings must hold JSON values only") from None
            if size > MAX_SETTINGS_BYTES:
                raise InputError(f"settings are limited to {MAX_SETTINGS_BYTES} bytes of JSON")
            self._settings = merged
            self._save()
            return dict(merged)

    def reset(self) -> None:
        """Forget every object, prompt, click and result (SAM 2's ``reset_state``).

        Raises:
            BusyError: A propagation is running.
        """
        with self._lock:
            if self._running:
                raise BusyError("a propagation is running; cancel it first")
            self._objects, self._prompts = {}, {}
            self._tracking.clear()
            self._clicks, self._boxes = {}, {}
            self._save()
            self._save_results()

    def click_state(self) -> list[dict[str, Any]]:
        """The clicks and box each object's mask on a frame was grown from (since it was last
        set otherwise): ``[{"frame", "object", "points": [[x, y, 1 or 0], ...], "box":
        [x0, y0, x1, y1] or None}]``, by frame and object."""
        with self._lock:
            keys = sorted(set(self._clicks) | set(self._boxes))
            return [
                {
                    "frame": frame,
                    "object": object_id,
                    "points": [list(p) for p in self._clicks.get((frame, object_id), [])],
                    "box": list(b) if (b := self._boxes.get((frame, object_id))) else None,
                }
                for frame, object_id in keys
            ]

    def _save(self) -> None:
        if self._project is None:
            return
        objects = [ProjectObject(o.id, o.name, o.hidden) for o in self.objects]
        self._project.save(objects, list(self._prompts), self._settings, self.click_state())

    # -- propagation ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a propagation is running."""
        return self._running

    def cancel(self) -> None:
        """Stop the running propagation after its current frame (from any thread); what it
        computed is kept, and the next propagation resumes from there."""
        self._cancel.set()

    def propagate(
        self, direction: str = "forward", start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Track the objects of every prompt through the video, as
        :meth:`Tracker.track` ``(video, prompts=..., direction=..., start=..., stop=...)``
        does: the same frames, in the same order, with byte-identical masks.

        Frames whose results a change of prompts cannot affect are not recomputed (they are
        yielded from memory). Stop early by leaving the loop, or with :meth:`cancel`.

        Args:
            direction: ``"forward"``, ``"backward"`` or ``"both"``.
            start: First frame to consider (frames before it are left out).
            stop: One past the last frame to consider (None: the end).

        Yields:
            ``(index, mask)``: frame index and ``[H, W]`` object ids (uint8).

        Raises:
            ValueError: At the call: a bad direction or range, no prompt, a prompt outside
                ``[start, stop)``.
            BusyError: When iteration starts: another propagation is running.
        """
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        start = check_int("start", start, minimum=0)
        end = self.num_frames if stop is None else min(check_int("stop", stop), self.num_frames)
        if end <= start:
            raise InputError(f"stop must be greater than start ({start}), got {stop}")
        with self._lock:
            prompts = dict(self._prompts)
        if not prompts:
            raise InputError("there is no prompt yet: give an object a mask, clicks or a box")
        outside = [f for f in prompts if not start <= f < end]
        if outside:
            raise InputError(
                f"the prompt of frame {outside[0]} is outside the frames tracked ({start} to "
                f"{end - 1})"
            )
        return self._propagate(direction, prompts, start, end)

    def propagation_length(self, direction: str = "forward") -> int:
        """How many frames :meth:`propagate` ``(direction)`` yields with the current prompts."""
        with self._lock:
            prompts = dict(self._prompts)
        if not prompts:
            return 0
        passes = plan(direction, prompts, 0, self.num_frames)
        return sum(len(frames) - skip for _, _, frames, skip in passes)

    def _propagate(
        self, direction: str, prompts: dict[int, np.ndarray], start: int, end: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        with self._lock:
            if self._running:
                raise BusyError("a propagation is running; cancel it or wait for it to end")
            self._running = True
            self._cancel.clear()
            self._range = (start, end)
            self._settings["direction"] = direction
            self._save()
        try:
            saved, interval = time.monotonic(), self.save_every
            for result in self._tracking.run(direction, prompts, start, end, self._cancel):
                if time.monotonic() - saved >= interval:
                    began = time.monotonic()
                    self._save_results()
                    saved = time.monotonic()
                    # A long video's file takes long to write: saves stay under about 5 %
                    # of the propagation's time (0: after every frame, whatever it costs).
                    if self.save_every > 0:
                        interval = max(self.save_every, 20 * (saved - began))
                yield result
        finally:
            try:
                self._save_results()
            finally:
                self._running = False

    def _restore_results(self) -> None:
        """Take back the results a session of the same video, tracker and settings kept."""
        assert self._project is not None
        if not self._project.has_results:
            return
        try:
            kept = self._project.read_results(self.tracker.fingerprint(), self.tracker.device)
            if kept is None:
                return
            try:
                start, end = (int(v) for v in kept["range"])
                if not 0 <= start < end <= self.num_frames:
                    raise ValueError(f"frames {start} to {end - 1} of {self.num_frames}")
                self._tracking.load_state_dict(kept["passes"])
            except (KeyError, TypeError, ValueError) as error:
                raise UnusableResultsError(
                    f"the kept results are not used: {error}; propagate again"
                ) from None
        except UnusableResultsError as error:
            self.notices.append(f"warning: {error}")
            warnings.warn(str(error), stacklevel=3)
            return
        self._range = (start, end)

    def _save_results(self) -> None:
        """Keep the results (with the snapshots to resume them) in the project folder; a
        failure (a full disk) is a warning: the results are still here to look at and export."""
        if self._project is None:
            return
        passes = self._tracking.state_dict()
        kept = {"range": list(self._range), "passes": passes} if passes else None
        try:
            self._project.write_results(self.tracker.fingerprint(), kept)
        except Exception as error:  # any, also at interpreter exit: never lose the results
            message = (
                f"the results could not be kept in {self._project.results_path} "
                f"({getattr(error, 'strerror', None) or error}); they are here until the "
                "studio stops: export them"
            )
            self.notices = [f"warning: {message}"]
            warnings.warn(message, stacklevel=2)
        else:
            self.notices = []  # what they said of earlier results is past

    # -- results ----------------------------------------------------------------------------

    @property
    def stats(self) -> PropagationStats:
        """What the last propagation computed and kept."""
        return self._tracking.stats

    @property
    def direction(self) -> str:
        """The direction of the last propagation (whose results :meth:`mask` shows)."""
        with self._lock:
            return self._settings.get("direction", "forward")

    def mask(self, index: int) -> np.ndarray | None:
        """The result of frame ``index`` (``[H, W]`` uint8 object ids) from the last
        propagation, or None; it may predate later prompt changes (see :meth:`up_to_date`)."""
        return self._tracking.mask(self.direction, index)

    @property
    def result_frames(self) -> list[int]:
        """The frames that have a result, in order."""
        return self._tracking.result_frames(self.direction)

    def up_to_date(self) -> bool:
        """Whether the results cover every frame the last propagation's direction and range
        track for the current prompts, and were computed with them."""
        with self._lock:
            prompts = dict(self._prompts)
        return self._tracking.up_to_date(self.direction, prompts, *self._range)

    def export(
        self,
        formats: Sequence[str] = ("png",),
        directory: str | os.PathLike[str] | None = None,
        overlay: str | os.PathLike[str] | None = None,
    ) -> list[Path]:
        """Write the results through :class:`dinotrack.results.writer.ResultWriter`, as ``segment
        --save FORMATS`` writes them: published whole or not at all, and nothing dinotrack did
        not write is replaced.

        Args:
            formats: Of ``png``, ``coco``, ``mot``, ``objects`` (see ``segment --save``) and
                ``overlay`` (a video of the masks over the frames).
            directory: The results directory (default ``out/results``).
            overlay: The overlay video (default ``out/overlay.mp4``).

        Returns:
            The files written.

        Raises:
            StaleResultsError: The results do not cover the prompts (propagate first).
            BusyError: A propagation is running.
            ValueError: An unknown format, or no directory (no ``out``).
            FileExistsError: The directory or the overlay holds something dinotrack did not
                write.
        """
        from dinotrack.results.formats import FORMATS, format_writers
        from dinotrack.results.writer import ResultWriter

        unknown = [f for f in formats if f not in (*FORMATS, "overlay")]
        if unknown or not formats:
            raise InputError(
                f"unknown export format {unknown[0]!r}; choose from "
                f"{', '.join((*FORMATS, 'overlay'))}"
                if unknown
                else "give at least one export format"
            )
        if directory is None and self.out is None:
            raise InputError("give the export directory (the session has no out directory)")
        directory = Path(directory) if directory is not None else self.out / RESULTS_NAME
        if overlay is None and "overlay" in formats:
            overlay = (self.out or directory.parent) / OVERLAY_NAME
        with self._lock:
            if self._running:
                raise BusyError("a propagation is running; wait for it to end or cancel it")
            if not self._prompts:
                raise StaleResultsError(
                    "nothing to export yet: give an object a mask, clicks or a box, then propagate"
                )
            if not self.up_to_date():
                raise StaleResultsError(
                    "the results do not match the prompts (or are incomplete): propagate first"
                )
            passes = plan(self.direction, dict(self._prompts), *self._range)
            frames = sorted({f for _, _, indices, _ in passes for f in indices})
        results = ResultWriter(
            directory, inputs=[("the video", self.video)], masks="png" in formats
        )
        if "overlay" in formats:
            try:
                results.open_overlay(overlay, self.info.fps, self.info.width, self.info.height)
            except BaseException:
                results.abort()
                raise
        with results:
            video_name = Path(os.path.abspath(self.video)).stem
            writers = format_writers(
                [f for f in formats if f != "overlay"],
                video_name,
                scratch=results.staging / ".objects",
                source=self.video,
            )
            results.formats = writers
            names = self.frame_names
            for index in frames:
                name = names[index] if index < len(names) else f"{index:05d}.png"
                frame = self.frame(index) if "overlay" in formats else None
                results.add(index, Path(name).stem, self.mask(index), frame)
        written = sorted(p for p in results.directory.rglob("*") if p.is_file())
        written = [p for p in written if not p.name.startswith(".")]
        return written + ([Path(overlay)] if "overlay" in formats else [])


def _frozen(ids: np.ndarray) -> np.ndarray:
    """A read-only uint8 copy: prompts are replaced, never changed in place."""
    ids = np.array(ids, dtype=np.uint8)
    ids.flags.writeable = False
    return ids


def _check_name(name: str | None, default: str) -> str:
    if name is None:
        return default
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InputError("an object's name must be a non-empty string of at most 200 characters")
    return name.strip()
