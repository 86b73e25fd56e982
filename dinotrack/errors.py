"""The errors dinotrack raises for what its user gave it, as opposed to its own bugs.

Every error that is the user's to fix derives from :class:`DinotrackError` and says what was
wrong and how to fix it, in the words of the Python API (parameters). The command line turns
these, and only these (plus the operating system's own file errors), into one line and exit
status 2, naming the flag that set the parameter (:attr:`DinotrackError.parameter`); any other
exception is a bug and shows its traceback.

Each class also derives from the built-in exception that code catching errors by kind would
expect (a bad value is a ``ValueError``, a missing file a ``FileNotFoundError``).
"""

from __future__ import annotations

__all__ = [
    "BusyError",
    "DinotrackError",
    "InputError",
    "MissingFileError",
    "ModelUnavailableError",
    "ProjectInUseError",
    "StaleResultsError",
    "UnavailableError",
]


class DinotrackError(Exception):
    """Something the user gave is wrong or unavailable: not a bug of dinotrack.

    Args:
        message: What was wrong and how to fix it, in one sentence or two.
        parameter: The API parameter at fault (e.g. ``"short_side"``), if one is; the CLI
            names the flag that sets it (``--short-side``) in its place.
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class InputError(DinotrackError, ValueError):
    """A bad value, file content or combination of settings (a mask of the wrong size, an
    unreadable video, a setting out of range, an unknown model name)."""


class MissingFileError(DinotrackError, FileNotFoundError):
    """A file or folder that was named does not exist."""


class UnavailableError(DinotrackError, RuntimeError):
    """Something asked for is not available here (CUDA, a distributed environment)."""


class ModelUnavailableError(UnavailableError):
    """A backbone's weights cannot be had (no network, no cached file)."""


class BusyError(DinotrackError, RuntimeError):
    """An interactive session is propagating: cancel it or wait (the studio answers 409)."""


class ProjectInUseError(DinotrackError, RuntimeError):
    """Another process has the studio project open: two writers would drop each other's
    changes."""


class StaleResultsError(DinotrackError, RuntimeError):
    """The results no longer match the prompts: propagate first (the studio answers 409)."""
