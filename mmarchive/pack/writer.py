"""Appending records to a pack file and sealing it.

A :class:`PackWriter` owns one open pack file descriptor. Records are buffered; ``take`` hands the
buffered bytes with their file offset to whoever writes them (the commit thread, outside the staging
lock), ``flush`` writes them itself, and ``sync`` makes everything written durable (fdatasync). A large
payload that cannot change (``bytes``, or a read-only view of ``bytes``) is not copied into the buffer:
it is kept by reference, up to ``_DEFER_MAX`` bytes, and written with the buffer by whoever takes it, so
copying it into the page cache is not the staging thread's work. Past that, the pending bytes are written
by the ``spill`` executor if one was given and its last write is done (so at most one is in flight and
the appending thread still waits when the executor falls behind), else at once by the appending thread;
``sync`` first waits for that write. Other large payloads are written at once. Writes are positional, so
taken bytes and a later record may be written concurrently. The caller
decides when to sync and when an index may point at the bytes: the writer only guarantees that the end
offsets it reports are record boundaries. ``seal`` appends the table of contents and the footer and
syncs; after that the file never changes. The writer does not know the index or where the file lives.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from concurrent.futures import Executor, Future

import xxhash

from mmarchive.errors import StorageError
from mmarchive.pack.format import (
    FOOTER_LEN,
    RECORD_HEADER_LEN,
    TOC_ENTRY_LAYOUT,
    Footer,
    PackHeader,
    RecordHeader,
    RecordKind,
    encode_record_header,
    encode_toc,
)
from mmarchive.pack.writeback import start_writeback

_DIRECT_WRITE = 64 * 1024  # payloads this large skip the buffer (pwritev): no copy into it
#: Payloads :meth:`PackWriter.append_small` takes: those that always go through the buffer.
SMALL_RECORD_MAX = _DIRECT_WRITE
#: A buffer this full is set aside for the taker and a new one started: a bytearray grows by an eighth at
#: a time, so one buffer of many MiB would copy each byte several times as it grows.
_BUFFER_MAX = 1024 * 1024
#: Immutable large payloads kept for the taker, at most, per pack; past it the appending thread writes
#: them itself. A few MiB: while the commit thread waits in fdatasync, the staging thread copies the next
#: records into the page cache (2 threads for the copy, which on fresh memory costs as much as the disk).
_DEFER_MAX = 8 * 1024 * 1024
_IOV_MAX = 1024  # the most buffers one pwritev takes (Linux's IOV_MAX)
#: Bytes written per pwritev before the device is asked to start on them (see write_all).
_WRITE_PIECE = 8 * 1024 * 1024

Part = bytes | bytearray | memoryview

_pack_toc_entry = TOC_ENTRY_LAYOUT.pack
_xxh3_64 = xxhash.xxh3_64_intdigest
_CHUNK, _MANIFEST = int(RecordKind.CHUNK), int(RecordKind.MANIFEST)


def _immutable(payload: Part) -> bool:
    """Whether ``payload`` can be kept by reference: its bytes cannot change before they are written."""
    if isinstance(payload, bytes):
        return True
    return isinstance(payload, memoryview) and payload.readonly and isinstance(payload.obj, bytes)


def write_all(fd: int, parts: list[Part], offset: int, *, what: str) -> None:
    """Write every byte of ``parts`` to ``fd`` at ``offset`` (positional; handles short writes).

    The bytes go out in pieces of about ``_WRITE_PIECE``, and the device is asked to start writing each
    piece at once (:func:`start_writeback`): it writes one while the next is copied.
    """
    views = [memoryview(p) for p in parts if len(p)]
    i = 0  # the first view not wholly written (an index: popping the front of a long list is slow)
    try:
        while i < len(views):
            j, piece = i + 1, len(views[i])
            while j < len(views) and j - i < _IOV_MAX and piece < _WRITE_PIECE:
                piece += len(views[j])
                j += 1
            n = os.pwritev(fd, views[i:j], offset)
            start_writeback(fd, offset, n)
            offset += n
            while n and i < len(views):
                if n >= len(views[i]):
                    n -= len(views[i])
                    i += 1
                else:
                    views[i] = views[i][n:]
                    n = 0
    except OSError as e:
        raise StorageError(f"writing {what} failed: {e.strerror or e}; free space or fix the storage, "
                           "then retry (nothing unacknowledged was kept)",
                           transient=False) from e


class PackWriter:
    """Appends records to one pack file."""

    def __init__(self, fd: int, header: PackHeader, name: str, *, offset: int,
                 toc: Sequence[tuple[int, int, int, int, int, bytes]], hasher: xxhash.xxh3_128,
                 spill: Executor | None = None) -> None:
        self.fd = fd
        self.header = header
        self.name = name
        self._file_end = offset  # where the pending bytes start: bytes before are written or taken
        #: Pending bytes before the buffer, in file order: earlier buffers and kept large records.
        self._parts: list[Part] = []
        self._parts_len = 0
        self._buffer = bytearray()
        #: The table of contents so far, encoded: thousands of entry tuples held until the seal would
        #: only give the cyclic GC more to walk.
        self._toc = bytearray(encode_toc(toc))
        self._toc_count = len(toc)
        self._hasher = hasher
        self._spill = spill
        self._spilled: Future[None] | None = None  # the write handed to ``spill``, until waited for

    @classmethod
    def create(cls, fd: int, header: PackHeader, name: str, *, spill: Executor | None = None) -> PackWriter:
        head = header.encode()
        writer = cls(fd, header, name, offset=0, toc=[], hasher=xxhash.xxh3_128(), spill=spill)
        writer._buffer += head
        return writer

    @classmethod
    def resume(cls, fd: int, header: PackHeader, name: str, *, content: bytes,
               toc: Sequence[tuple[int, int, int, int, int, bytes]],
               spill: Executor | None = None) -> PackWriter:
        """Continue an unsealed pack whose first ``len(content)`` bytes (whole records) are kept."""
        os.ftruncate(fd, len(content))
        return cls(fd, header, name, offset=len(content), toc=list(toc),
                   hasher=xxhash.xxh3_128(content), spill=spill)

    @property
    def size(self) -> int:
        """Bytes in the pack so far, pending ones included."""
        return self._file_end + self._parts_len + len(self._buffer)

    def append(self, kind: int, codec: int, rid: bytes, raw_len: int,
               payload: Part, checksum: int, *, keep: bool = True) -> int:
        """Append one record and return the offset of its header.

        ``keep``: a large immutable payload may be kept by reference until the next :meth:`take`;
        False writes it now (a caller staging many large records before any take bounds its memory).
        """
        if len(payload) < _DIRECT_WRITE:
            return self.append_small(int(kind), int(codec), rid, raw_len, payload, checksum)
        offset = self.size
        head = encode_record_header(kind, codec, len(payload), raw_len, rid, checksum)
        self._toc += _pack_toc_entry(kind, codec, offset, len(payload), raw_len, rid)
        self._toc_count += 1
        if self._buffer:
            self._set_buffer_aside()
        self._parts += (head, payload)
        self._parts_len += len(head) + len(payload)
        if not keep or not _immutable(payload):
            self.flush()  # the caller may reuse a mutable buffer
        elif self._parts_len > _DEFER_MAX:  # what is kept stays bounded
            self._spill_or_flush()
        return offset

    def _spill_or_flush(self) -> None:
        """Hand the pending records to the ``spill`` executor if its last write is done, else write them."""
        if self._spill is None or (self._spilled is not None and not self._spilled.done()):
            self.flush()
            return
        self.wait_spilled()  # done: raises here, to the appending thread, if it failed
        at, parts, _end = self.take()
        self._spilled = self._spill.submit(write_all, self.fd, parts, at, what=f"pack {self.name}")

    def append_small(self, kind: int, codec: int, rid: bytes, raw_len: int, payload: Part,
                     checksum: int) -> int:
        """:meth:`append` for a payload of under ``SMALL_RECORD_MAX`` bytes (the caller checks), which
        is always buffered; ``kind`` and ``codec`` are plain ints. The write path's per-object form."""
        buffer = self._buffer
        offset = self._file_end + self._parts_len + len(buffer)
        self._toc += _pack_toc_entry(kind, codec, offset, len(payload), raw_len, rid)
        self._toc_count += 1
        buffer += encode_record_header(kind, codec, len(payload), raw_len, rid, checksum)
        buffer += payload
        if len(buffer) >= _BUFFER_MAX:
            self._set_buffer_aside()
        return offset

    def append_one_chunk_object(self, oid: bytes, codec: int, raw_len: int, payload: Part, checksum: int,
                                manifest: bytes) -> int:
        """The chunk record of a one-chunk object (chunk id = object id ``oid``), then its manifest
        record; return the chunk record's offset.

        The manifest record follows at that offset + ``RECORD_HEADER_LEN`` + ``len(payload)``.
        ``payload`` is under ``SMALL_RECORD_MAX`` bytes (the caller checks).
        """
        buffer = self._buffer
        offset = self._file_end + self._parts_len + len(buffer)
        stored_len, manifest_len = len(payload), len(manifest)
        buffer += encode_record_header(_CHUNK, codec, stored_len, raw_len, oid, checksum)
        buffer += payload
        buffer += encode_record_header(_MANIFEST, 0, manifest_len, manifest_len, oid, _xxh3_64(manifest))
        buffer += manifest
        toc = self._toc
        toc += _pack_toc_entry(_CHUNK, codec, offset, stored_len, raw_len, oid)
        toc += _pack_toc_entry(_MANIFEST, 0, offset + RECORD_HEADER_LEN + stored_len, manifest_len,
                               manifest_len, oid)
        self._toc_count += 2
        if len(buffer) >= _BUFFER_MAX:
            self._set_buffer_aside()
        return offset

    def _set_buffer_aside(self) -> None:
        self._parts.append(self._buffer)
        self._parts_len += len(self._buffer)
        self._buffer = bytearray()

    def take(self) -> tuple[int, list[Part], int]:
        """Hand over the pending records: (file offset, their bytes in order, end offset, a record
        boundary).

        The caller writes the bytes at the offset (:func:`write_all`) before it syncs.
        """
        offset, parts = self._file_end, self._parts
        if self._buffer:
            parts.append(self._buffer)
            self._buffer = bytearray()
        self._parts, self._parts_len = [], 0
        update = self._hasher.update
        for part in parts:  # the pack checksum covers the bytes in file order
            update(part)
            self._file_end += len(part)
        return offset, parts, self._file_end

    def flush(self) -> int:
        """Write pending records to the file; return the end offset (a record boundary)."""
        offset, parts, end = self.take()
        write_all(self.fd, parts, offset, what=f"pack {self.name}")
        return end

    def wait_spilled(self) -> None:
        """Wait for the write handed to the ``spill`` executor, if any; raise its error."""
        spilled, self._spilled = self._spilled, None
        if spilled is not None:
            spilled.result()

    def close(self) -> None:
        """Close the file (after the write handed to ``spill``, whose error is not raised here)."""
        try:
            with contextlib.suppress(StorageError):  # never synced, so never committed: nothing is lost
                self.wait_spilled()
        finally:
            os.close(self.fd)

    def sync(self) -> None:
        self.wait_spilled()
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            raise StorageError(f"syncing pack {self.name} failed: {e.strerror or e}") from e

    def seal(self) -> int:
        """Append the table of contents and the footer, sync, and return the final size."""
        toc_payload = bytes(self._toc)
        toc_offset = self.size
        head = RecordHeader(RecordKind.TOC, 0, len(toc_payload), len(toc_payload), bytes(32),
                            xxhash.xxh3_64_intdigest(toc_payload)).encode()
        self._buffer += head
        self._buffer += toc_payload
        self.flush()
        footer = Footer(toc_offset=toc_offset, toc_len=len(head) + len(toc_payload),
                        record_count=self._toc_count, pack_checksum=self._hasher.digest())
        write_all(self.fd, [footer.encode()], self._file_end, what=f"pack {self.name}")
        self._file_end += FOOTER_LEN
        end = self._file_end
        self.sync()
        assert end == toc_offset + len(head) + len(toc_payload) + FOOTER_LEN
        return end
