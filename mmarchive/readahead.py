"""Read-ahead: running an iterator on a thread of its own, a bounded number of items ahead.

The staging of a large object is a pipeline: reading and content-defined chunking must walk the stream
in order, while hashing, compression and pack writes happen elsewhere. :class:`ReadAhead` moves the
in-order producer (the chunker over the caller's stream) onto its own thread so that it overlaps with
the consumer. At most ``depth`` items wait in between, so memory stays bounded; errors raised by the
producer are raised to the consumer; closing stops the producer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class ReadAhead(Generic[T]):
    """Iterate ``source`` on a background thread, at most ``depth`` items ahead of the consumer."""

    def __init__(self, source: Iterator[T], depth: int, *, name: str = "mmarchive-read-ahead") -> None:
        self._queue: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _offer(self, entry: tuple[object, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._offer((item, None)):
                    return
        except BaseException as e:
            self._offer((_END, e))
            return
        self._offer((_END, None))

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item, error = self._queue.get()
        if item is _END:
            self._finished = True
            self._thread.join()
            if error is not None:
                raise error
            raise StopIteration
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the producer (if it is still running) and wait for its thread."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
        self._finished = True

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
