"""ReadAhead: order, bounded look-ahead, errors handed to the consumer, early close."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from mmarchive.readahead import ReadAhead


def test_yields_everything_in_order() -> None:
    with ReadAhead(iter(range(1000)), depth=3) as ahead:
        assert list(ahead) == list(range(1000))


def test_producer_stays_at_most_depth_ahead() -> None:
    produced = []
    gate = threading.Event()

    def source() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    with ReadAhead(source(), depth=4) as ahead:
        first = next(ahead)
        gate.wait(0.3)  # give the producer time to run ahead
        assert first == 0
        assert len(produced) <= 1 + 4 + 1  # taken, queued, and one waiting to be queued


def test_producer_error_reaches_the_consumer() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    with ReadAhead(source(), depth=2) as ahead:
        assert next(ahead) == 1
        with pytest.raises(OSError, match="disk gone"):
            next(ahead)


def test_close_stops_an_endless_producer() -> None:
    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    ahead = ReadAhead(endless(), depth=2)
    assert next(ahead) == 0
    ahead.close()
    with pytest.raises(StopIteration):
        next(ahead)
