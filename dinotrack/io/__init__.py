"""Reading and writing files: videos and frame folders, images, masks, and atomic outputs.

The lowest layer of dinotrack: it imports no other part of the package but ``config`` and
``errors``.
"""
