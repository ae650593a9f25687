"""Reading one object back: a seekable, streaming, verifying file-like reader.

:class:`ObjectReader` knows the object's chunk list and fetches one chunk at a time through a function it
is given, so a multi-gigabyte object is read with one chunk in memory. Every chunk is verified when it is
fetched (record checksum, and the zstd content checksum for compressed records); a reader that went
through the object from start to end also checks the whole-object BLAKE3 against the object id.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable, Sequence
from typing import Any

import blake3

from mmarchive.errors import IntegrityError

FetchChunk = Callable[[bytes, int], bytes]


class ObjectReader(io.RawIOBase):
    """A read-only, seekable view of one stored object."""

    def __init__(self, object_id: bytes, size: int, chunks: Sequence[tuple[bytes, int]],
                 fetch: FetchChunk, *, describe: str) -> None:
        super().__init__()
        self.object_id = object_id
        self.size = size
        self._chunks = list(chunks)
        self._starts: list[int] = []
        pos = 0
        for _cid, n in self._chunks:
            self._starts.append(pos)
            pos += n
        if pos != size:
            raise IntegrityError(f"{describe}: chunk lengths add up to {pos}, not {size}",
                                 object_id=object_id.hex())
        self._fetch = fetch
        self._describe = describe
        self._pos = 0
        self._cached_index = -1
        self._cached: bytes = b""
        self._hasher: Any = blake3.blake3()
        self._hashed_to = 0  # bytes [0, _hashed_to) went through the hasher in order

    # io.RawIOBase protocol
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _chunk(self, i: int) -> bytes:
        if i != self._cached_index:
            cid, n = self._chunks[i]
            try:
                data = self._fetch(cid, n)
            except IntegrityError as e:
                raise IntegrityError(f"{self._describe} cannot be read: {e}", pack=e.pack,
                                     object_id=self.object_id.hex(), offset=e.offset) from e
            self._cached_index, self._cached = i, data
        return self._cached

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        if self._pos >= self.size or not len(out):
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        data = self._chunk(i)
        start = self._pos - self._starts[i]
        n = min(len(out), len(data) - start)
        out[:n] = data[start:start + n]
        self._advance_hash(self._pos, data, start, n)
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes (fewer only at the end of the object), or all the rest."""
        if size is None or size < 0:
            return self.readall()
        out = bytearray(min(size, max(0, self.size - self._pos)))
        view = memoryview(out)
        filled = 0
        while filled < len(out):
            n = self.readinto(view[filled:])
            if not n:
                break
            filled += n
        return bytes(out[:filled])

    def read_chunkwise(self) -> Any:
        """Yield the rest of the object chunk by chunk (no copies into caller buffers)."""
        while self._pos < self.size:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            data = self._chunk(i)
            start = self._pos - self._starts[i]
            piece = data[start:] if start else data
            self._advance_hash(self._pos, data, start, len(piece))
            self._pos += len(piece)
            yield piece

    def _advance_hash(self, pos: int, data: bytes, start: int, n: int) -> None:
        if pos != self._hashed_to:
            return
        self._hasher.update(memoryview(data)[start:start + n])
        self._hashed_to += n
        if self._hashed_to == self.size and self._hasher.digest() != self.object_id:
            raise IntegrityError(f"{self._describe}: content does not match its id (BLAKE3 mismatch)",
                                 object_id=self.object_id.hex())

    def readall(self) -> bytes:
        pieces = list(self.read_chunkwise())
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]  # a one-chunk object read whole: no copy
        return b"".join(pieces)
