"""Read, render and write at once: reading (decoding) and writing (encoding) run in threads beside the renderer,
joined by bounded queues, so the device never waits for the disk and a bounded number of pictures or frames is
in flight whatever the batch's or the clip's length. PIL, PyAV and torch release the GIL while they work."""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
DONE = object()
POLL_S = 0.1  # how often a blocked thread checks that the other side still wants it


class Failed:
    """An exception raised in a worker thread, carried to the thread that waits on it."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a thread, at most ``depth`` ahead; its exceptions are raised here, in order."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(Failed(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None and stop.is_set():
                close()  # the consumer left early: let the generator release what it holds

    worker = threading.Thread(target=produce, name="liif-read", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is DONE:
                return
            if isinstance(item, Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()


class Background:
    """Call ``consume`` on each item ``put`` here, in order, in a thread, with at most ``depth`` waiting. A
    failure of ``consume`` is raised by the next ``put`` or by ``join``; after one, the rest is dropped.
    Call ``join`` when done, or ``stop`` when leaving by an exception."""

    def __init__(self, consume: Callable[[T], object], depth: int) -> None:
        self.consume = consume
        self.buffer: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.worker = threading.Thread(target=self.run, name="liif-write", daemon=True)
        self.worker.start()

    def run(self) -> None:
        while True:
            item = self.buffer.get()
            if item is DONE:
                return
            if self.error is None:
                try:
                    self.consume(item)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                    self.error = exc

    def put(self, item: T) -> None:
        self.raise_error()
        self.buffer.put(item)

    def join(self) -> None:
        """Wait until every item is consumed; raise the first failure."""
        self.stop()
        self.raise_error()

    def stop(self) -> None:
        """Let the thread end once what is queued is consumed, and wait for it (nothing raised)."""
        if self.worker.is_alive():
            self.buffer.put(DONE)
            self.worker.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error
