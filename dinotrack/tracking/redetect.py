"""Finding an object again after label propagation lost it (``TrackerConfig.redetect``).

Propagation matches each patch only within a window around its place in the context frames,
so an object that is hidden for a few frames (behind a look-alike, out of the window, motion
blur) loses its labels and never gets them back. :class:`Redetector` watches each object of a
memory and, once it is lost, looks for it in the whole frame:

- **lost**: its area on the patch grid falls below ``lost_share`` of its median over the
  last frames where it was followed;
- **candidates**: patches that look like the object (closer, mean of their 5 nearest, to the
  object's patches of the memory's first prompt than to that frame's other patches), minus
  the background that did not change (a patch as similar as ``static_similarity`` to the same
  place, give or take one patch, in the last frame where the object was followed, and
  background there), in connected regions of ``size_range`` times the object's area before it
  was lost;
- **motion**: of those, the one nearest to where the object's motion before it was lost
  (constant velocity of its centre) puts it, and no farther than ``gate`` times the object's
  side; look-alikes that stayed where they were are not candidates, so a moved object is
  told from them.

A found object takes the region's labels (a hard label, as a prompt would give) in that frame,
and propagation goes on from there. Off by default: the DINO protocol is unchanged.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

__all__ = ["Redetector"]

HISTORY = 10
"""Frames of an object's area and centre kept to tell when it is lost and where it goes."""

LONG_LOST, LONG_LOST_EVERY = 24, 4
"""Lost for more than ``LONG_LOST`` frames, an object is looked for on every
``LONG_LOST_EVERY``-th frame only (the search costs a nearest-neighbour pass over the frame)."""

MAX_REST = 1024
"""Most patches of the first prompt's frame outside the object that candidates are compared
with."""

NEIGHBOURS = 5
"""Nearest patches whose mean similarity scores a candidate patch (against object and rest)."""


@dataclass
class _Followed:
    """What is known of one object: its recent areas and centres, and, once lost, where it was
    and how it moved."""

    areas: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    centres: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    good: tuple[Tensor, Tensor] | None = None  # (unit feats, labels) of its last followed frame
    lost_for: int = 0  # frames since it was lost (0: followed)
    area: float = 0.0  # its area before it was lost
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))


class Redetector:
    """Finds an object of a memory again after it was lost (see the module docstring).

    Args:
        first_feats: ``[C, h, w]`` L2-normalised features of the memory's first prompt.
        first_labels: ``[K, h, w]`` its soft labels (channel 0 the background).
        lost_share: An object is lost when its area falls below this share of its median.
        size_range: The candidate regions' area, as a share of the object's before it was lost.
        static_similarity: Cosine similarity above which a patch is unchanged background.
        gate: Farthest a candidate may be from the predicted centre, in object sides.
    """

    def __init__(
        self,
        first_feats: Tensor,
        first_labels: Tensor,
        *,
        lost_share: float = 0.25,
        size_range: tuple[float, float] = (0.5, 2.0),
        static_similarity: float = 0.85,
        gate: float = 2.0,
    ) -> None:
        self.lost_share = lost_share
        self.size_range = size_range
        self.static_similarity = static_similarity
        self.gate = gate
        channels = first_feats.shape[0]
        self.reference = first_feats.reshape(channels, -1)
        self.reference_labels = first_labels.argmax(0).reshape(-1)
        # The rest of the first prompt's frame, evenly thinned to at most MAX_REST patches:
        # enough to tell what looks like the object from what does not, at a bounded cost.
        self.rest_every = max(1, -(-self.reference.shape[1] // MAX_REST))
        self.objects: dict[int, _Followed] = {}

    def __call__(self, unit: Tensor, labels: Tensor) -> Tensor:
        """The labels ``[K, h, w]`` of a frame (L2-normalised features ``unit``), with any
        lost object found again; the same tensor when nothing changed."""
        winners = labels.argmax(0)
        for channel in range(1, labels.shape[0]):
            followed = self.objects.setdefault(channel, _Followed())
            mask = (winners == channel).cpu().numpy()
            area = float(mask.sum())
            if not followed.lost_for and followed.areas:
                if area < self.lost_share * float(np.median(followed.areas)):
                    self._lose(followed)
            if followed.lost_for:
                # An object lost for long (gone from the scene) is looked for less often.
                if followed.lost_for > LONG_LOST and followed.lost_for % LONG_LOST_EVERY:
                    followed.lost_for += 1
                    continue
                found = self._search(unit, channel, followed)
                if found is None:
                    followed.lost_for += 1
                    continue
                labels = _take(labels, channel, torch.from_numpy(found).to(labels.device))
                mask, area, followed.lost_for = found, float(found.sum()), 0
                followed.areas.clear()
                followed.centres.clear()
            if area > 0:
                followed.areas.append(area)
                followed.centres.append(_centre(mask))
                followed.good = (unit, labels)
        return labels

    def state(self) -> list[tuple]:
        """What it knows, as plain values and tensors (for snapshots), one tuple per object
        channel: ``(channel, good_labels, areas, centres, lost_for, area, velocity)``, where
        ``good_labels`` are the labels of the object's last followed frame (None before one)
        and the features of that frame are left out (see :meth:`restore`)."""
        return [
            (
                channel,
                None if o.good is None else o.good[1],
                tuple(o.areas),
                tuple(tuple(float(v) for v in c) for c in o.centres),
                o.lost_for,
                o.area,
                tuple(float(v) for v in o.velocity),
            )
            for channel, o in self.objects.items()
        ]

    def restore(self, state: list[tuple], good_units: list[Tensor | None]) -> None:
        """Take back a :meth:`state`, with the L2-normalised features of each object's last
        followed frame (``good_units``, in the same order; None where it had none)."""
        self.objects = {}
        for (channel, labels, areas, centres, lost_for, area, velocity), unit in zip(
            state, good_units, strict=True
        ):
            self.objects[int(channel)] = _Followed(
                deque((float(a) for a in areas), maxlen=HISTORY),
                deque((np.array(c, dtype=float) for c in centres), maxlen=HISTORY),
                None if labels is None else (unit, labels),
                int(lost_for),
                float(area),
                np.array(velocity, dtype=float),
            )

    def _lose(self, followed: _Followed) -> None:
        centres = list(followed.centres)
        steps = min(3, len(centres) - 1)
        if steps > 0:
            followed.velocity = (centres[-1] - centres[-1 - steps]) / steps
        followed.area = float(np.median(followed.areas))
        followed.lost_for = 1

    def _search(self, unit: Tensor, channel: int, followed: _Followed) -> np.ndarray | None:
        """The region where the lost object is now, or None."""
        if followed.good is None:
            return None
        height, width = unit.shape[-2:]
        inside = self.reference_labels == channel
        if not inside.any() or inside.all():
            return None
        good_unit, good_labels = followed.good
        unchanged = (_similarity_nearby(unit, good_unit) > self.static_similarity) & (
            good_labels.argmax(0) != channel
        )
        # Only the patches that changed can hold the moved object (and they are few: the
        # nearest-neighbour scores below are the costly part).
        changed = torch.nonzero(~unchanged.reshape(-1)).squeeze(1)
        if len(changed) == 0:
            return None
        patches = unit.reshape(unit.shape[0], -1)[:, changed]
        like_object = _nearest_mean(self.reference[:, inside], patches)
        rest = self.reference[:, ~inside][:, :: self.rest_every]
        like_rest = _nearest_mean(rest, patches)
        candidates = torch.zeros(height * width, dtype=torch.bool, device=unit.device)
        candidates[changed] = like_object > like_rest
        candidates = candidates.reshape(height, width).cpu().numpy()
        regions, count = ndimage.label(candidates)
        predicted = followed.centres[-1] + followed.velocity * followed.lost_for
        low, high = self.size_range
        best, best_distance = None, self.gate * np.sqrt(followed.area)
        for region in range(1, count + 1):
            mask = regions == region
            if not low * followed.area <= mask.sum() <= high * followed.area:
                continue
            distance = float(np.linalg.norm(_centre(mask) - predicted))
            if distance <= best_distance:
                best, best_distance = mask, distance
        return best


def _nearest_mean(sources: Tensor, targets: Tensor) -> Tensor:
    """Per target patch, the mean cosine similarity of its nearest sources."""
    similarity = sources.T @ targets
    return similarity.topk(min(NEIGHBOURS, sources.shape[1]), dim=0).values.mean(0)


def _similarity_nearby(unit: Tensor, before: Tensor) -> Tensor:
    """Per patch of ``unit`` ``[C, h, w]``, its highest cosine similarity to the patches of
    ``before`` at the same place or one patch away."""
    channels, height, width = before.shape
    nearby = F.unfold(before[None], 3, padding=1).reshape(channels, 9, height, width)
    return (nearby * unit[:, None]).sum(0).amax(0)


def _centre(mask: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero(mask)
    return np.array([rows.mean(), columns.mean()])


def _take(labels: Tensor, channel: int, region: Tensor) -> Tensor:
    """``labels`` with ``channel`` exactly ``region`` (a hard label there, its mass elsewhere
    moved to the background)."""
    out = labels.clone()
    elsewhere = out[channel] * ~region
    out[0] += elsewhere
    out[channel] = 0
    out[:, region] = 0
    out[channel, region] = 1
    return out
