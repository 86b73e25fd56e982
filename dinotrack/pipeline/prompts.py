"""Prompt files: which mask file belongs to which frame, read and checked before any work."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dinotrack.errors import InputError, MissingFileError


def load_prompts(
    sources: Mapping[int, str | os.PathLike[str]],
    frame_size: tuple[int, int],
    mask_frame: int | None = None,
) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Reads prompt mask files and checks them against the video's frames.

    Args:
        sources: ``{frame index: mask file}`` (palette, grayscale or RGB PNG, read as
            :func:`dinotrack.io.masks.read_mask` reads them). The colours of RGB prompts are
            numbered once for the whole run (:class:`dinotrack.io.masks.ColourIds`): a
            colour is the same object in every prompt, and a colour first seen in a later
            prompt is a new object.
        frame_size: ``(H, W)`` of the frames; a mask that is a rescale of it is resized with
            a warning.
        mask_frame: The frame whose source is the objects' mask (``--mask``) rather than a
            prompt: its messages do not call it a prompt.

    Returns:
        ``({frame index: [H, W] object ids}, palette)``: the palette of the first palette PNG
        among them (by frame), or None.

    Raises:
        InputError: An unreadable mask, or one that does not fit the frames (the message
            names the file).
        MissingFileError: A missing mask file.
    """
    from dinotrack.io.masks import ColourIds, read_mask
    from dinotrack.tracking.objects import check_first_mask, check_prompt

    prompts, palette, colours = {}, None, ColourIds()
    for index in sorted(sources):
        loaded = read_mask(sources[index], colours, frame_size)
        if palette is None:
            palette = loaded.palette
        try:
            if index == mask_frame:
                prompts[index] = check_first_mask(loaded.ids, frame_size)
            else:
                prompts[index] = check_prompt(loaded.ids, frame_size, index)
        except ValueError as error:
            raise InputError(f"{sources[index]}: {error}") from None
    return prompts, palette


def prompt_files(
    directory: str | os.PathLike[str], frame_names: Sequence[str]
) -> list[tuple[int, Path]]:
    """``(frame index, path)`` of the PNG prompts in ``directory``, each named like a frame:
    its name in ``frame_names`` (the names of the masks written for the frames), or its
    frame index, zero-padded or not (``00120.png``).

    Raises:
        MissingFileError: ``directory`` does not exist.
        InputError: It is not a directory, holds no PNG, or a PNG named like no frame.
    """
    directory = Path(directory)
    if not directory.exists():
        raise MissingFileError(f"prompts folder {directory} does not exist")
    if not directory.is_dir():
        raise InputError(f"prompts folder {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise InputError(f"prompts folder {directory} holds no PNG masks")
    by_name = {name: i for i, name in enumerate(frame_names)}
    found = []
    for path in files:
        index = by_name.get(path.name)
        if index is None and path.stem.isdigit():
            index = int(path.stem)
        if index is None:
            raise InputError(
                f"prompt {path.name} in {directory} is named like no frame; name prompts like "
                f"the frames (e.g. {frame_names[0]}) or by frame index (00120.png)"
            )
        found.append((index, path))
    return found
