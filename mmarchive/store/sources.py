"""What a caller may hand to ``put``, read as one stream of bytes.

An object arrives as a bytes-like value, a binary file object, a path, or an iterable of bytes-like
pieces; :func:`open_source` turns each into a :class:`ByteStream` that reads at most ``n`` bytes at a time,
so that nothing here needs the whole object in memory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, Union

from mmarchive.errors import InvalidInputError, StorageError

BytesLike = bytes | bytearray | memoryview
Source = Union[BytesLike, BinaryIO, "os.PathLike[str]", Iterable[BytesLike]]


class ByteStream(Protocol):
    def read(self, n: int) -> bytes: ...


class _IterStream:
    """Reads from an iterator of bytes-like pieces."""

    def __init__(self, it: Iterator[BytesLike]) -> None:
        self._it = it
        self._piece = memoryview(b"")

    def read(self, n: int) -> bytes:
        out: list[bytes] = []
        want = n
        while want > 0:
            if not self._piece:
                try:
                    nxt = next(self._it)
                except StopIteration:
                    break
                if not isinstance(nxt, (bytes, bytearray, memoryview)):
                    raise InvalidInputError(f"an iterator given to put must yield bytes, not "
                                            f"{type(nxt).__name__}")
                self._piece = memoryview(nxt).cast("B")
                continue
            take = self._piece[:want]
            out.append(bytes(take))
            self._piece = self._piece[len(take):]
            want -= len(take)
        return b"".join(out)


class _FileStream:
    def __init__(self, f: BinaryIO, name: str) -> None:
        self._f = f
        self._name = name

    def read(self, n: int) -> bytes:
        try:
            data = self._f.read(n)
        except OSError as e:
            raise StorageError(f"reading {self._name} failed: {e.strerror or e}") from e
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidInputError(f"{self._name} must be opened in binary mode")
        return bytes(data)


#: A small object's bytes as put_many holds them: a ``bytes`` source as it was given (no view to make,
#: and nothing for the cyclic GC to track while it is in flight), or a flat byte view of another one.
ObjectBytes = bytes | memoryview


def object_bytes(source: object) -> ObjectBytes | None:
    """A bytes-like ``source`` as put_many holds it (see :data:`ObjectBytes`), else None."""
    return source if type(source) is bytes else as_bytes(source)


def as_bytes(source: object) -> memoryview | None:
    """Return a flat byte view of ``source`` if it is bytes-like, else None."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return memoryview(source).cast("B")
    return None


def open_source(source: object) -> tuple[ByteStream, str, BinaryIO | None]:
    """Return (stream, description, file to close or None) for a non-bytes source."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the caller
        except OSError as e:
            raise InvalidInputError(f"cannot read {path}: {e.strerror or e}") from e
        return _FileStream(f, str(path)), str(path), f
    if isinstance(source, io.IOBase) or hasattr(source, "read"):
        name = str(getattr(source, "name", "stream"))
        return _FileStream(source, name), name, None  # type: ignore[arg-type]
    if isinstance(source, Iterable):
        return _IterStream(iter(source)), "iterator", None
    raise InvalidInputError(f"put takes bytes, a binary file, a path or an iterable of bytes, not "
                            f"{type(source).__name__}")
