"""Results: the owned, all-or-nothing result writer, its formats (COCO, MOT, per-object
masks), the overlay video and the attention colour map."""

from dinotrack.results.writer import (
    RECORD_NAME,
    START_MASK_NAME,
    FormatWriter,
    ResultWriter,
    check_output_directory,
    owned_files,
)

__all__ = [
    "RECORD_NAME",
    "START_MASK_NAME",
    "FormatWriter",
    "ResultWriter",
    "check_output_directory",
    "owned_files",
]
