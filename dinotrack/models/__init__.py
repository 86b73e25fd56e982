"""Backbones: the registry of named ViTs, their weights (download, cache, checkpoints),
building them, and reading patch features and attention from them."""
