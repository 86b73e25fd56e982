"""dinotrack: video object segmentation by label propagation through DINO ViT features."""

__version__ = "0.1.0"
