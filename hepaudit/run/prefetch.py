"""Read ahead: the next chunk is read and built on a thread while the current one is scored.

uproot's decompression, numpy's and awkward's kernels and onnxruntime's ``run`` all release
the GIL, so on two or more cores reading the next chunk overlaps the current chunk's
inference instead of adding to the audit's wall time. One chunk is read ahead (``depth``):
memory grows by one chunk, not by the sample. The producer can ask whether the consumer
is waiting for it (:meth:`Prefetched.consumer_idles`), to use the idle cores as well.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetched(Generic[T]):
    """Iterate over ``items`` while a thread produces up to ``depth`` items ahead.

    An exception in the producer is raised in the consumer, at the item where it happened.
    Closing early (``close``, or leaving a ``for`` loop through an exception) stops the
    producer after the item it is making and closes ``items``.
    """

    def __init__(self, items: Iterator[T], depth: int = 1, name: str = "hepaudit-read-ahead") -> None:
        self._items = items
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._waiting = False  # the consumer is blocked in __next__ now
        self._delivered = 0
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def consumer_idles(self) -> bool:
        """Whether the consumer waits for the producer now (or has not had an item yet): the
        producer may then use every core (a chunk's inputs built side by side) without taking
        them from the consumer's own work."""
        return self._delivered == 0 or self._waiting

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(_Failure(exc))

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._stop.is_set():
            raise StopIteration
        self._waiting = True
        try:
            item = self._queue.get()
        finally:
            self._waiting = False
        self._delivered += 1
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the producer and release what it holds (its file handles)."""
        self._stop.set()
        self._thread.join()
        close = getattr(self._items, "close", None)
        if close is not None:
            close()
        while not self._queue.empty():  # items made ahead are dropped now, not at exit
            self._queue.get_nowait()

    def __del__(self) -> None:
        if not self._stop.is_set() and self._thread.is_alive():
            self._stop.set()
