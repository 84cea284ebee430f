"""Decoding ahead in an in-process run: the next video's frames decode while this one is captioned.

A run of several videos in one process (``vmm index --here``) otherwise leaves a core idle for
most of each video: decoding overlaps inference only within a video's features stage, and the
caption, write and index stages, the next video's probe and the opening of its reader run alone.
:class:`Prefetcher` is one background thread that works through requested iterators in order,
each into a bounded queue of its own (``features.queue_size`` items); the decoders (Decord, PyAV)
release the GIL while they decode, so that thread runs beside the caller's inference and caption
stages on the other core. ``features.decode_ahead`` says how many videos are prepared and
requested before the current one is analysed (:func:`video_mm.pipeline.runner.run_jobs`).

Errors raised while iterating in the thread (a damaged file's typed
:class:`~video_mm.errors.VideoError`) are raised unchanged where the items are read, after the
items before them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_END = object()


class _Raised:
    """An error of the iterator, carried through the queue."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetched:
    """One requested iterator, filled by the prefetch thread and read once by the caller."""

    def __init__(self, make: Callable[[], Iterator[Any]], size: int) -> None:
        self._make = make
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._claimed = False

    def claim(self) -> bool:
        """True the first time: the caller reads the items; False after (a retried step decodes
        for itself, since the items were read by the try before)."""
        claimed, self._claimed = self._claimed, True
        return not claimed and not self._stop.is_set()

    def __iter__(self) -> Iterator[Any]:
        while (item := self._queue.get()) is not _END:
            if isinstance(item, _Raised):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop filling (the thread drops what it has and goes on to the next request)."""
        self._stop.set()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _fill(self) -> None:
        """Run in the prefetch thread: iterate, queue every item, then the end (or the error)."""
        if self._stop.is_set():
            return
        try:
            items = self._make()
            try:
                for item in items:
                    if not self._put(item):
                        return
            finally:
                close = getattr(items, "close", None)
                if close is not None:  # a generator: release what it holds open (a reader)
                    close()
        except Exception as exc:
            self._put(_Raised(exc))
            return
        self._put(_END)


class Prefetcher:
    """One thread filling requests in the order they were made. Close it when done."""

    def __init__(self, name: str = "vmm-decode-ahead") -> None:
        self._requests: queue.Queue[Prefetched | None] = queue.Queue()
        self._open: list[Prefetched] = []
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def request(self, make: Callable[[], Iterator[Any]], size: int) -> Prefetched:
        """Iterate ``make()`` in the thread once the requests before it are done, at most
        ``size`` items ahead of the reader."""
        found = Prefetched(make, max(1, size))
        self._open = [r for r in self._open if not r._stop.is_set()] + [found]
        self._requests.put(found)
        return found

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            request._fill()

    def close(self) -> None:
        """Stop every request still open and end the thread."""
        for request in self._open:
            request.close()
        self._requests.put(None)
        self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
