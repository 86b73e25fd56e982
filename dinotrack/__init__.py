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
    "AutoStart": "dinotrack.autostart",
    "auto_start_mask": "dinotrack.autostart",
    "mass_threshold": "dinotrack.attention",
    "BackboneSpec": "dinotrack.backbones",
    "get_backbone_spec": "dinotrack.backbones",
    "list_backbones": "dinotrack.backbones",
    "load_backbone": "dinotrack.backbones",
    "TrackerConfig": "dinotrack.config",
    "InteractiveSession": "dinotrack.interactive",
    "LabelPropagator": "dinotrack.propagation",
    "propagate_labels": "dinotrack.propagation",
    "propagate_sequence": "dinotrack.propagation",
    "Tracker": "dinotrack.session",
    "TrackingSession": "dinotrack.session",
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
    from dinotrack.attention import mass_threshold
    from dinotrack.autostart import AutoStart, auto_start_mask
    from dinotrack.backbones import BackboneSpec, get_backbone_spec, list_backbones, load_backbone
    from dinotrack.config import TrackerConfig
    from dinotrack.interactive import InteractiveSession
    from dinotrack.propagation import LabelPropagator, propagate_labels, propagate_sequence
    from dinotrack.session import Tracker, TrackingSession
