"""What the interactive engine remembers of a tracking pass, to resume it after a correction.

A pass (see :meth:`dinotrack.Tracker.track`) goes frame by frame from its first prompt; the
result of a frame depends only on the frames and prompts before it in the pass. So when a
prompt changes on frame ``k``, the results before ``k`` stand, and the pass can go on from
``k`` if the tracking session is brought back to the state it had there.

A session's state is its groups' memories: per group a few prompted frames and the last
frames, each a pair (L2-normalised features ``[C, h, w]``, soft labels ``[K, h, w]``). Features
are large (megabytes per frame) and labels small, so a :class:`Snapshot`, taken after every
frame, keeps the labels (the very tensors the session holds, shared between snapshots) and
only the *frame index* of each feature map. :func:`rebuild_session` recomputes the few feature
maps a snapshot names and rebuilds the session; the features are computed in the same batches
as the pass computed them (:func:`batch_of`), so even a backbone whose output depends on the
batch gives the very same features, and the resumed pass is byte-identical to a full one.

The same memory outlives the process: :meth:`ResumableTracking.state_dict` gives the passes'
results and snapshots as plain values and tensors, and :meth:`~ResumableTracking.load_state_dict`
takes them back (the studio keeps them in its project folder). At about 490 lines the module is
still one idea, what a pass remembers so that it can go on later: the records, the snapshots,
the resumed runs and their saved form.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinotrack.errors import InputError
from dinotrack.io.frame_cache import FrameCache
from dinotrack.io.video import FrameReader
from dinotrack.tracking.objects import check_first_mask, check_prompt, ids_dtype
from dinotrack.tracking.session import ObjectGroup, SessionState, TrackingSession
from dinotrack.tracking.tracker import Tracker

__all__ = [
    "GroupMemory",
    "PropagationStats",
    "ResumableTracking",
    "PassRecord",
    "Snapshot",
    "batch_of",
    "pack_mask",
    "rebuild_session",
    "snapshot",
    "unpack_mask",
]

Entry = tuple[int, Tensor]
"""A memory entry as a snapshot keeps it: (frame index in the video, soft labels [K, h, w])."""


@dataclass(frozen=True)
class GroupMemory:
    """One object group's memory after a frame: its prompted and its last frames, and with
    ``redetect`` what its :class:`~dinotrack.tracking.redetect.Redetector` knows (per object:
    the frame of its last followed frame, then :meth:`Redetector.state`'s tuple)."""

    object_ids: tuple[int, ...]
    first_frame: int
    permanent: tuple[Entry, ...]
    recent: tuple[Entry, ...]
    redetect: tuple[tuple, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """A tracking session's state after a frame, features replaced by frame indices."""

    object_ids: tuple[int, ...]
    frame_index: int
    groups: tuple[GroupMemory, ...]

    def frames(self) -> set[int]:
        """The frames whose features the memory holds."""
        frames = {f for g in self.groups for f, _ in (*g.permanent, *g.recent)}
        return frames | {e[0] for g in self.groups for e in g.redetect if e[0] is not None}


def snapshot(session: TrackingSession, frame: int, previous: Snapshot | None) -> Snapshot:
    """The state of ``session`` after it processed video frame ``frame``.

    Entries already in ``previous`` (the snapshot of the frame before) are recognised by the
    identity of their labels tensor and keep their frame; the others are ``frame``'s.
    """
    known = {}
    if previous is not None:
        known = {id(labels): f for g in previous.groups for f, labels in (*g.permanent, *g.recent)}
        known |= {id(e[2]): e[0] for g in previous.groups for e in g.redetect if e[0] is not None}

    def entries(pairs) -> tuple[Entry, ...]:
        return tuple((known.get(id(labels), frame), labels) for _, labels in pairs)

    def redetect(propagator) -> tuple[tuple, ...]:
        if propagator.redetector is None:
            return ()
        return tuple(
            (None if e[1] is None else known.get(id(e[1]), frame), *e)
            for e in propagator.redetector.state()
        )

    groups = tuple(
        GroupMemory(
            g.object_ids,
            g.first_frame,
            entries(g.propagator.permanent),
            entries(g.propagator.recent),
            redetect(g.propagator),
        )
        for g in session.state.groups
    )
    return Snapshot(session.state.object_ids, session.state.frame_index, groups)


def rebuild_session(
    tracker: Tracker,
    state: Snapshot,
    features: Mapping[int, Tensor],
    frame_size: tuple[int, int],
    input_size: tuple[int, int],
) -> TrackingSession:
    """A tracking session in the state ``state`` records.

    Args:
        tracker: The tracker of the pass.
        state: The snapshot to bring back.
        features: Raw patch features ``[C, h, w]`` of every frame in ``state.frames()``.
        frame_size: ``(H, W)`` of the video.
        input_size: ``(h, w)`` of the network input.
    """
    units = {f: F.normalize(feats.float(), dim=0) for f, feats in features.items()}
    groups = []
    with torch.inference_mode():
        for memory in state.groups:
            (first, labels), *more = memory.permanent
            propagator = tracker.new_propagator(features[first], labels)
            for f, labels in more:
                propagator.add_permanent(units[f], labels, normalized=True)
            for f, labels in memory.recent:
                propagator.remember(units[f], labels, normalized=True)
            if propagator.redetector is not None and memory.redetect:
                propagator.redetector.restore(
                    [e[1:] for e in memory.redetect],
                    [None if e[0] is None else units[e[0]] for e in memory.redetect],
                )
            groups.append(ObjectGroup(memory.object_ids, memory.first_frame, propagator))
    session_state = SessionState(
        state.object_ids, frame_size, input_size, groups, frame_index=state.frame_index
    )
    return tracker.resume(session_state)


def batch_of(position: int, batch_size: int, length: int) -> range:
    """Positions (in pass order) of the batch that holds ``position`` in a pass of ``length``
    frames batched ``batch_size`` at a time from its first frame."""
    start = position - position % batch_size
    return range(start, min(start + batch_size, length))


@dataclass
class PassRecord:
    """One pass's results so far: in pass order from its first frame, without a gap.

    Attributes:
        kind: ``"forward"``, ``"backward"`` (from the latest prompt, all prompts) or
            ``"first"`` (the backward half of ``both``: from the earliest prompt, that prompt
            only).
        prompts: The prompts the results were computed with.
        frames: The frames computed, in pass order.
        masks: Per frame, its result (see :func:`pack_mask`).
        snapshots: Per frame, the session's state after it.
    """

    kind: str
    prompts: dict[int, np.ndarray]
    frames: list[int] = field(default_factory=list)
    masks: dict[int, tuple] = field(default_factory=dict)
    snapshots: dict[int, Snapshot] = field(default_factory=dict)

    @property
    def origin(self) -> int:
        """The pass's first frame (its first prompt in pass order)."""
        return min(self.prompts) if self.kind == "forward" else max(self.prompts)

    def valid_prefix(self, prompts: dict[int, np.ndarray], same: Callable) -> int:
        """How many of the computed frames still hold for ``prompts``: those before the
        first frame (in pass order) whose prompt differs (``same(a, b)`` compares two masks
        or Nones)."""
        if not prompts or not self.prompts:
            return 0
        new_origin = min(prompts) if self.kind == "forward" else max(prompts)
        if new_origin != self.origin:
            return 0
        for position, frame in enumerate(self.frames):
            if not same(self.prompts.get(frame), prompts.get(frame)):
                return position
        return len(self.frames)

    def truncate(self, length: int) -> None:
        """Forget the computed frames from position ``length`` on."""
        for frame in self.frames[length:]:
            self.masks.pop(frame, None)
            self.snapshots.pop(frame, None)
        del self.frames[length:]


def pack_mask(mask: np.ndarray) -> tuple[tuple[int, ...], str, bytes]:
    """A result mask ``[H, W]`` compressed for keeping (a few kB instead of ``H * W``)."""
    return mask.shape, mask.dtype.str, zlib.compress(np.ascontiguousarray(mask).tobytes(), 1)


def unpack_mask(packed: tuple[tuple[int, ...], str, bytes]) -> np.ndarray:
    """The mask :func:`pack_mask` packed."""
    shape, dtype, data = packed
    return np.frombuffer(zlib.decompress(data), dtype=np.dtype(dtype)).reshape(shape).copy()


PASS_KINDS = {"forward": ("forward",), "backward": ("backward",), "both": ("forward", "first")}
"""The passes of each direction: ``first`` is the backward half of ``both`` (from the earliest
prompt, with that prompt only)."""


@dataclass
class PropagationStats:
    """What a propagation did: frames computed, and frames whose results were kept."""

    computed: int = 0
    reused: int = 0


class ResumableTracking:
    """:meth:`Tracker.track`'s passes over a video, remembered so that they can resume.

    Holds one :class:`PassRecord` per kind of pass; thread-safe for readers while one thread
    runs :meth:`run`.

    Args:
        tracker: The tracker.
        frames: The video's frames (for rebuilding sessions; passes stream their frames with
            :class:`dinotrack.io.video.FrameReader`, as ``segment`` does).
    """

    def __init__(self, tracker: Tracker, frames: FrameCache) -> None:
        self.tracker = tracker
        self.frames = frames
        self.video = frames.info.path
        self.frame_size = (frames.info.height, frames.info.width)
        self.input_size = tracker.input_size(*self.frame_size)
        self.stats = PropagationStats()
        self._records: dict[str, PassRecord] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every result."""
        with self._lock:
            self._records = {}

    def run(
        self,
        direction: str,
        prompts: dict[int, np.ndarray],
        start: int,
        end: int,
        cancel: threading.Event,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Track as :meth:`Tracker.track` ``(video, prompts=prompts, direction=direction,
        start=start, stop=end)`` does (checked arguments), keeping the results that still
        hold; stops after the current frame once ``cancel`` is set.

        Yields:
            ``(index, mask)`` as :meth:`Tracker.track`.
        """
        self.stats = PropagationStats()
        for kind, pass_prompts, indices, skip in plan(direction, prompts, start, end):
            with self._lock:
                record = self._records.get(kind)
                valid = 0 if record is None else record.valid_prefix(pass_prompts, same_mask)
                if record is None or valid == 0:
                    record = PassRecord(kind, pass_prompts)
                    self._records[kind] = record
                record.truncate(valid)
                record.prompts = pass_prompts
            batch = self.tracker.config.batch_size
            # A resumed pass starts on a batch boundary: its batches are a full run's.
            resume = valid if valid >= len(indices) else valid - valid % batch
            for position in range(skip, resume):
                self.stats.reused += 1
                yield indices[position], unpack_mask(record.masks[indices[position]])
            if resume < len(indices):
                with self._lock:
                    record.truncate(resume)
                yield from self._compute(record, indices, resume, skip, cancel)
            if cancel.is_set():
                return

    def _compute(
        self,
        record: PassRecord,
        indices: list[int],
        resume: int,
        skip: int,
        cancel: threading.Event,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Run a pass from position ``resume`` (in pass order) to its end, recording it: the
        loop of :meth:`Tracker.track`'s passes, with a snapshot after each frame."""
        tracker, batch_size = self.tracker, self.tracker.config.batch_size
        previous: Snapshot | None = None
        session: TrackingSession | None = None
        if resume > 0:
            previous = record.snapshots[indices[resume - 1]]
            session = self._rebuild(previous, indices, resume)
        todo = indices[resume:]
        reverse = record.kind != "forward"
        low, high = min(todo[0], todo[-1]), max(todo[0], todo[-1]) + 1
        with FrameReader(self.video, start=low, stop=high, reverse=reverse) as reader:
            pairs = zip(todo, reader, strict=False)
            while batch := [pair for _, pair in zip(range(batch_size), pairs, strict=False)]:
                images = np.stack([frame for _, frame in batch])
                feats = tracker.extractor(images, self.input_size)
                for (index, frame), frame_feats in zip(batch, feats, strict=True):
                    prompt = record.prompts.get(index)
                    if session is None:
                        session = tracker.start(frame, prompt, frame_feats)
                        mask = check_first_mask(prompt, self.frame_size)
                        mask = mask.astype(ids_dtype(session.object_ids))
                    else:
                        if prompt is not None:
                            prompt = check_prompt(prompt, self.frame_size, index)
                        mask = session.step_features(frame_feats, prompt)
                    previous = snapshot(session, index, previous)
                    with self._lock:
                        record.snapshots[index] = previous
                        record.masks[index] = pack_mask(mask)
                        record.frames.append(index)
                    self.stats.computed += 1
                    if len(record.frames) > skip:
                        yield index, mask
                    if cancel.is_set():
                        return
                del images, feats
                return_freed_memory()

    def _rebuild(self, state: Snapshot, indices: list[int], resume: int) -> TrackingSession:
        """The session of a pass over ``indices`` after position ``resume - 1``: the features
        of the frames ``state`` holds are recomputed in the batches the pass made."""
        batch_size = self.tracker.config.batch_size
        position = {frame: p for p, frame in enumerate(indices[:resume])}
        batches = {batch_of(position[f], batch_size, resume) for f in state.frames()}
        features = {}
        for batch in sorted(batches, key=lambda r: r.start):
            frames = np.stack([self.frames.get(indices[p]) for p in batch])
            computed = self.tracker.extractor(frames, self.input_size)
            for p, feats in zip(batch, computed, strict=True):
                features[indices[p]] = feats
        needed = {f: features[f] for f in state.frames()}
        return rebuild_session(self.tracker, state, needed, self.frame_size, self.input_size)

    def state_dict(self) -> dict[str, Any]:
        """Every pass's results and snapshots as plain values and tensors, for
        :func:`torch.save` (a soft-labels tensor that many snapshots share is one object in
        it, saved once); :meth:`load_state_dict` takes it back."""
        with self._lock:
            return {kind: _record_to_dict(record) for kind, record in self._records.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the results by those of :meth:`state_dict` (as :func:`torch.load` reads
        them back, ``weights_only=True`` is enough).

        Raises:
            ValueError: ``state`` is not what :meth:`state_dict` gives (nothing is replaced).
        """
        try:
            records = {str(kind): _record_from_dict(str(kind), d) for kind, d in state.items()}
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise InputError(f"not the saved results of a tracking pass ({error})") from None
        if not set(records) <= {kind for kinds in PASS_KINDS.values() for kind in kinds}:
            raise InputError(f"unknown kinds of pass among {sorted(records)}")
        with self._lock:
            self._records = records

    def mask(self, direction: str, index: int) -> np.ndarray | None:
        """The result of frame ``index`` among the passes of ``direction``, or None."""
        with self._lock:
            for kind in PASS_KINDS[direction]:
                record = self._records.get(kind)
                packed = None if record is None else record.masks.get(index)
                if packed is not None:
                    return unpack_mask(packed)
        return None

    def result_frames(self, direction: str) -> list[int]:
        """The frames with a result among the passes of ``direction``, in order."""
        frames: set[int] = set()
        with self._lock:
            for kind in PASS_KINDS[direction]:
                record = self._records.get(kind)
                if record is not None:
                    frames.update(record.masks)
        return sorted(frames)

    def up_to_date(
        self, direction: str, prompts: dict[int, np.ndarray], start: int, end: int
    ) -> bool:
        """Whether every frame :meth:`run` would yield has a result computed with ``prompts``."""
        if not prompts:
            return False
        with self._lock:
            for kind, pass_prompts, indices, _ in plan(direction, prompts, start, end):
                record = self._records.get(kind)
                if record is None or record.valid_prefix(pass_prompts, same_mask) < len(indices):
                    return False
        return True


def _record_to_dict(record: PassRecord) -> dict[str, Any]:
    return {
        "prompts": {f: torch.from_numpy(np.array(m)) for f, m in record.prompts.items()},
        "frames": list(record.frames),
        "masks": dict(record.masks),
        "snapshots": {
            f: (s.object_ids, s.frame_index, [_group_to_tuple(g) for g in s.groups])
            for f, s in record.snapshots.items()
        },
    }


def _group_to_tuple(group: GroupMemory) -> tuple:
    return (group.object_ids, group.first_frame, group.permanent, group.recent, group.redetect)


def _record_from_dict(kind: str, data: Mapping[str, Any]) -> PassRecord:
    """The :class:`PassRecord` of :func:`_record_to_dict`, its parts checked for consistency."""
    prompts = {int(f): m.numpy() for f, m in data["prompts"].items()}
    frames = [int(f) for f in data["frames"]]
    masks = {
        int(f): (tuple(shape), str(dtype), bytes(blob))
        for f, (shape, dtype, blob) in data["masks"].items()
    }
    snapshots = {}
    for f, (object_ids, frame_index, groups) in data["snapshots"].items():
        snapshots[int(f)] = Snapshot(
            tuple(int(i) for i in object_ids),
            int(frame_index),
            tuple(
                GroupMemory(
                    tuple(int(i) for i in ids),
                    int(first),
                    _entries(perm),
                    _entries(rec),
                    tuple(tuple(e) for e in redetect),
                )
                for ids, first, perm, rec, redetect in groups
            ),
        )
    if not prompts or set(frames) != set(masks) or set(frames) != set(snapshots):
        raise ValueError("its frames, masks and snapshots do not match")
    return PassRecord(kind, prompts, frames, masks, snapshots)


def _entries(pairs: Iterable[tuple[int, Tensor]]) -> tuple[Entry, ...]:
    entries = tuple((int(f), labels) for f, labels in pairs)
    if not all(isinstance(labels, Tensor) for _, labels in entries):
        raise ValueError("a memory entry without its labels")
    return entries


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on another C library."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Give the memory freed since the last call back to the system (glibc only).

    A pass keeps a little per frame (the packed mask, the soft labels of its snapshot) while
    it allocates and frees megabytes per batch (frames, features). With glibc, the small
    long-lived blocks end up between the freed large ones and keep their pages resident:
    without this, a 400-frame pass grew the process by 0.4 MB a frame (docs/benchmarks.md,
    Studio); with it, memory stays flat. Elsewhere (macOS, musl) it does nothing.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def plan(
    direction: str, prompts: dict[int, np.ndarray], start: int, end: int
) -> list[tuple[str, dict[int, np.ndarray], list[int], int]]:
    """The passes :meth:`Tracker.track` makes for these prompts over frames ``[start, end)``:
    ``(kind, the prompts it uses, its frames in pass order, how many of them it does not
    yield)``."""
    first, last = min(prompts), max(prompts)
    passes = []
    if direction in ("forward", "both"):
        passes.append(("forward", prompts, list(range(first, end)), 0))
    if direction == "backward":
        passes.append(("backward", prompts, list(range(last, start - 1, -1)), 0))
    elif direction == "both" and first > start:
        # The earliest prompt's frame starts the backward pass; the forward one yields it.
        passes.append(("first", {first: prompts[first]}, list(range(first, start - 1, -1)), 1))
    return passes


def same_mask(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two prompts (or Nones) are equal."""
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and bool(np.array_equal(a, b)))
