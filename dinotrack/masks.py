"""Kept so that ``from dinotrack.io.masks import read_mask`` (the README's example since 0.1) still
works: mask files now live in :mod:`dinotrack.io.masks`."""

from dinotrack.io.masks import LoadedMask, davis_palette, read_mask, resize_mask, write_mask

__all__ = ["LoadedMask", "davis_palette", "read_mask", "resize_mask", "write_mask"]
