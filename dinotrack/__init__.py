"""dinotrack: video object segmentation by label propagation through DINO ViT features.

Typical use::

    from dinotrack import Tracker
    tracker = Tracker.from_pretrained("dino_vits8", device="cuda")
    for index, mask in tracker.track("video.mp4", first_mask):
        ...
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names and the modules that define them. They are imported on first use, so that
# `dinotrack --help` and `dinotrack eval score` start without importing torch.
_EXPORTS = {
    "AutoStart": "dinotrack.tracking.autostart",
    "auto_start_mask": "dinotrack.tracking.autostart",
    "mass_threshold": "dinotrack.models.attention",
    "BackboneSpec": "dinotrack.models.registry",
    "get_backbone_spec": "dinotrack.models.registry",
    "list_backbones": "dinotrack.models.registry",
    "load_backbone": "dinotrack.models.build",
    "TrackerConfig": "dinotrack.config",
    "InteractiveSession": "dinotrack.pipeline.interactive",
    "LabelPropagator": "dinotrack.tracking.memory",
    "propagate_labels": "dinotrack.tracking.propagation",
    "propagate_sequence": "dinotrack.tracking.memory",
    "Tracker": "dinotrack.tracking.tracker",
    "TrackingSession": "dinotrack.tracking.session",
}

__all__ = [
    "AutoStart",
    "BackboneSpec",
    "InteractiveSession",
    "LabelPropagator",
    "Tracker",
    "TrackerConfig",
    "TrackingSession",
    "auto_start_mask",
    "get_backbone_spec",
    "list_backbones",
    "load_backbone",
    "mass_threshold",
    "propagate_labels",
    "propagate_sequence",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dinotrack' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:
    from dinotrack.config import TrackerConfig
    from dinotrack.models.attention import mass_threshold
    from dinotrack.models.build import load_backbone
    from dinotrack.models.registry import BackboneSpec, get_backbone_spec, list_backbones
    from dinotrack.pipeline.interactive import InteractiveSession
    from dinotrack.tracking.autostart import AutoStart, auto_start_mask
    from dinotrack.tracking.memory import LabelPropagator, propagate_sequence
    from dinotrack.tracking.propagation import propagate_labels
    from dinotrack.tracking.session import TrackingSession
    from dinotrack.tracking.tracker import Tracker
