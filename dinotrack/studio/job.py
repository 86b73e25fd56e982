"""The studio's propagation job: one at a time, in a worker thread, with its progress.

The thread iterates :meth:`dinotrack.InteractiveSession.propagate`; a client that goes away
does not stop it, :meth:`Job.cancel` does (after the current frame), and :meth:`Job.stop`
waits for it when the server shuts down.
"""

from __future__ import annotations

import threading
from typing import Any

from dinotrack.cli.common import error_line
from dinotrack.pipeline.interactive import BusyError, InteractiveSession

__all__ = ["Job"]


class Job:
    """The propagation job: one at a time, in a worker thread, with its progress.

    Attributes:
        state: ``"idle"``, ``"running"``, ``"done"``, ``"cancelled"`` or ``"failed"``.
        done: Frames yielded so far. total: Frames the job yields in all.
        frames: The frames yielded, in order (for the event stream).
        results_version: Grows with every frame computed (and every prompt change).
    """

    def __init__(self, session: InteractiveSession) -> None:
        self.session = session
        self.state = "idle"
        self.done = 0
        self.total = 0
        self.direction: str | None = None
        self.error: str | None = None
        self.frames: list[int] = []
        self.results_version = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def progress(self) -> dict[str, Any]:
        """The job's progress as the API reports it."""
        return {
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "direction": self.direction,
            "error": self.error,
            "results_version": self.results_version,
            # Of the frames yielded, those tracked anew and those whose earlier results held.
            "computed": self.session.stats.computed,
            "reused": self.session.stats.reused,
        }

    def start(self, direction: str) -> None:
        """Start propagating in ``direction``.

        Raises:
            BusyError: A job is running.
            ValueError: A bad direction, or no prompt.
        """
        with self._lock:
            if self.state == "running" or self.session.running:
                raise BusyError("a propagation is running; cancel it first (POST /api/cancel)")
            results = self.session.propagate(direction)
            self.total = self.session.propagation_length(direction)
            self.state, self.direction, self.error = "running", direction, None
            self.done, self.frames = 0, []
            self._thread = threading.Thread(
                target=self._run, args=(results,), name="dinotrack-propagate", daemon=True
            )
            self._thread.start()

    def _run(self, results) -> None:
        try:
            for index, _ in results:
                self.frames.append(index)
                self.done += 1
                self.results_version += 1
            self.state = "cancelled" if self.done < self.total else "done"
        except Exception as error:  # reported to the client: the server goes on
            self.error = error_line(error)
            self.state = "failed"

    def cancel(self) -> None:
        """Ask the running job to stop after its current frame."""
        self.session.cancel()

    def stop(self, timeout: float = 60.0) -> None:
        """Cancel the job and wait for its thread (shutdown)."""
        self.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
