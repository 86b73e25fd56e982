"""dinotrack: video object segmentation by label propagation through DINO ViT features.

Typical use::

    from dinotrack import Tracker
    tracker = Tracker.from_pretrained("dino_vits8", device="cuda")
    for index, mask in tracker.track("video.mp4", first_mask):
        ...
"""

from dinotrack.attention import AutoStart, auto_start_mask, mass_threshold
from dinotrack.backbones import BackboneSpec, get_backbone_spec, list_backbones, load_backbone
from dinotrack.config import TrackerConfig
from dinotrack.propagation import LabelPropagator, propagate_labels, propagate_sequence
from dinotrack.session import Tracker, TrackingSession

__version__ = "0.1.0"

__all__ = [
    "AutoStart",
    "BackboneSpec",
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
