"""Decoding in a background thread: a bounded queue that a decoding thread fills while the
caller consumes, errors handed over to the caller unchanged, the thread stopped when the
caller stops (:class:`dinotrack.io.video.FrameReader`, :func:`dinotrack.io.video.read_image_files`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_END = object()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def _put(items: queue.Queue, item: Any, stopping: threading.Event) -> bool:
    while not stopping.is_set():
        try:
            items.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _decode_into(
    items: queue.Queue, stopping: threading.Event, produce: Callable[[], Iterator[Any]]
) -> None:
    frames = None
    try:
        frames = produce()
        for frame in frames:
            if not _put(items, frame, stopping):
                return
    except BaseException as error:  # handed over to the consuming thread
        _put(items, _Failure(error), stopping)
        return
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    _put(items, _END, stopping)


class BackgroundWorker:
    """One decoding thread filling a bounded queue with the items of `produce()`."""

    def __init__(self, prefetch: int, produce: Callable[[], Iterator[Any]]) -> None:
        self.items: queue.Queue = queue.Queue(maxsize=prefetch)
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=_decode_into,
            args=(self.items, self.stopping, produce),
            name="dinotrack-frame-reader",
            daemon=True,
        )
        self.thread.start()

    def __iter__(self) -> Iterator[Any]:
        """The items in order; an error of the decoding thread is raised here, unchanged."""
        while True:
            item = self._get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def _get(self) -> Any:
        while True:
            try:
                return self.items.get(timeout=0.1)
            except queue.Empty:
                if not self.thread.is_alive() and self.items.empty():
                    raise RuntimeError("the frame decoding thread ended unexpectedly") from None

    def stop(self) -> None:
        self.stopping.set()
        while True:
            try:
                self.items.get_nowait()
            except queue.Empty:
                break
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=10.0)


def read_in_background(prefetch: int, produce: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    worker = BackgroundWorker(prefetch, produce)
    try:
        yield from worker
    finally:
        worker.stop()
