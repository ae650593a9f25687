"""Reading records back out of packs, verifying every check on the way.

``read_record`` fetches one record whose place the index knows and refuses to return anything that does
not match: the record header checksum, the expected kind, id and length, and the xxh3 of the payload.
``scan_pack`` walks a whole pack for verify, reindex and crash recovery: it checks the footer, the table of
contents and the pack checksum when the pack is sealed, and resynchronises past damaged records, reporting
each. Packs are reached through :class:`PackBytes`, so the reader works on any tier.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import xxhash

from mmarchive.errors import IntegrityError
from mmarchive.pack.format import (
    FOOTER_LEN,
    HEADER_FIXED_LEN,
    RECORD_HEADER_LEN,
    RECORD_MAGIC,
    Footer,
    PackHeader,
    RecordHeader,
    RecordKind,
    decode_toc,
)

_SPLIT_READ = 64 * 1024


class PackBytes(Protocol):
    """Random access to the bytes of one pack, wherever it is stored."""

    name: str

    def read_at(self, offset: int, length: int) -> bytes: ...

    def size(self) -> int: ...


_SCAN_BLOCK = 8 * 1024 * 1024


class _Closable(PackBytes, Protocol):
    def close(self) -> None: ...


class WindowedPackBytes:
    """A pack read through one cached window of ``window`` bytes, for scans over remote tiers.

    A scan reads record after record; on S3 each ``read_at`` is a request, so a whole-pack scan through
    this wrapper costs one ranged GET per window instead of two per record. Local files are cheap to
    read directly and are not wrapped (see :func:`windowed`).
    """

    def __init__(self, src: _Closable, window: int = _SCAN_BLOCK) -> None:
        self.name = src.name
        self._src = src
        self._window = window
        self._start = 0
        self._buf = b""
        self._size = src.size()

    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        end = offset + length
        if self._start <= offset and end <= self._start + len(self._buf):
            return self._buf[offset - self._start:end - self._start]
        if length >= self._window:
            return self._src.read_at(offset, length)
        self._start = offset
        self._buf = self._src.read_at(offset, min(self._window, max(0, self._size - offset)))
        return self._buf[:length]

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> WindowedPackBytes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def windowed(src: _Closable) -> Any:
    """``src`` itself when its reads are cheap (a local file), else a :class:`WindowedPackBytes` over it."""
    return src if getattr(src, "cheap_reads", False) else WindowedPackBytes(src)


def read_record(src: PackBytes, offset: int, stored_len: int, *, kind: int,
                rid: bytes | None = None) -> tuple[RecordHeader, bytes]:
    """Return the header and payload of the record at ``offset``, verified.

    Raises :class:`IntegrityError` naming the pack and offset when anything does not match.
    """
    if stored_len >= _SPLIT_READ and getattr(src, "cheap_reads", False):
        # Two reads, so that the payload arrives as its own bytes object (no copy of a large slice);
        # on a remote tier a request costs far more than that copy: one read there.
        buf = src.read_at(offset, RECORD_HEADER_LEN)
        payload = src.read_at(offset + RECORD_HEADER_LEN, stored_len)
        complete = len(buf) == RECORD_HEADER_LEN and len(payload) == stored_len
    else:
        buf = src.read_at(offset, RECORD_HEADER_LEN + stored_len)
        payload = buf[RECORD_HEADER_LEN:]
        complete = len(buf) == RECORD_HEADER_LEN + stored_len
    if not complete:
        raise IntegrityError(f"pack {src.name}: record at offset {offset} is cut short (pack is "
                             "truncated); restore the pack from a replica or run verify",
                             pack=src.name, offset=offset)
    head = RecordHeader.decode(buf, pack=src.name, offset=offset)
    if head.kind != kind or head.stored_len != stored_len or (rid is not None and head.id != rid):
        raise IntegrityError(f"pack {src.name}: record at offset {offset} is not the one the index "
                             "expects; run `mmarchive verify` and `mmarchive reindex`",
                             pack=src.name, offset=offset)
    if xxhash.xxh3_64_intdigest(payload) != head.checksum:
        raise IntegrityError(f"pack {src.name}: payload of the record at offset {offset} is damaged "
                             "(xxh3 mismatch)", pack=src.name, offset=offset)
    return head, payload


def read_header(src: PackBytes) -> PackHeader:
    fixed = src.read_at(0, HEADER_FIXED_LEN)
    if len(fixed) < HEADER_FIXED_LEN:
        PackHeader.decode(fixed, pack=src.name)  # raises the right error
    length = PackHeader.peek_length(fixed)
    return PackHeader.decode(src.read_at(0, length), pack=src.name)


@dataclass(frozen=True)
class ScannedRecord:
    offset: int
    header: RecordHeader
    payload: bytes


@dataclass
class ScanResult:
    """What a full scan of one pack found besides its good records."""

    header: PackHeader | None = None
    sealed: bool = False
    #: End offset of the last good record before any damage (where an unsealed pack may be cut).
    clean_end: int = 0
    problems: list[str] | None = None

    def problem(self, text: str) -> None:
        if self.problems is None:
            self.problems = []
        self.problems.append(text)



def scan_pack(src: PackBytes, result: ScanResult, *, limit: int | None = None,
              payloads: bool = True) -> Iterator[ScannedRecord]:
    """Yield every intact record of a pack in order, noting problems in ``result``.

    ``limit`` stops the scan at that offset (the committed length of an unsealed pack). Records after a
    damaged one are still found by searching for the next record magic whose header verifies.
    """
    name = src.name
    try:
        result.header = read_header(src)
    except IntegrityError as e:
        result.problem(str(e))
        return
    total = src.size() if limit is None else min(limit, src.size())
    end = total
    footer = None
    if limit is None and total >= FOOTER_LEN:
        try:
            footer = Footer.decode(src.read_at(total - FOOTER_LEN, FOOTER_LEN), pack=name)
        except IntegrityError as e:
            result.problem(str(e))
        if footer is not None:
            result.sealed = True
            end = footer.toc_offset
            _check_sealed(src, footer, total, result)
    # Without a known committed length, an unsealed pack may end in a record a crash cut short.
    lenient_tail = limit is None and not result.sealed
    offset = len(result.header.encode())
    result.clean_end = offset
    damaged = False
    while offset < end:
        head_buf = src.read_at(offset, RECORD_HEADER_LEN)
        try:
            head = RecordHeader.decode(head_buf, pack=name, offset=offset)
            if head.kind == RecordKind.TOC or offset + RECORD_HEADER_LEN + head.stored_len > end:
                raise IntegrityError(f"pack {name}: record at offset {offset} runs past the end",
                                     pack=name, offset=offset)
            payload = src.read_at(offset + RECORD_HEADER_LEN, head.stored_len)
            if xxhash.xxh3_64_intdigest(payload) != head.checksum:
                raise IntegrityError(f"pack {name}: payload of the {RecordKind(head.kind).name.lower()}"
                                     f" record {head.id.hex()} at offset {offset} is damaged "
                                     "(xxh3 mismatch)", pack=name, offset=offset)
        except IntegrityError as e:
            if not (lenient_tail and _is_torn_tail(src, offset, end)):
                result.problem(str(e))
            damaged = True
            nxt = _resync(src, offset + 1, end)
            if nxt is None:
                return
            offset = nxt
            continue
        yield ScannedRecord(offset, head, payload if payloads else b"")
        offset += RECORD_HEADER_LEN + head.stored_len
        if not damaged:
            result.clean_end = offset


def _is_torn_tail(src: PackBytes, offset: int, end: int) -> bool:
    """An unsealed pack may end in a partly written record: not damage if nothing valid follows."""
    return _resync(src, offset + 1, end) is None


def _check_sealed(src: PackBytes, footer: Footer, total: int, result: ScanResult) -> None:
    name = src.name
    hasher = xxhash.xxh3_128()
    pos = 0
    stop = total - FOOTER_LEN
    while pos < stop:
        block = src.read_at(pos, min(_SCAN_BLOCK, stop - pos))
        if not block:
            break
        hasher.update(block)
        pos += len(block)
    if hasher.digest() != footer.pack_checksum:
        result.problem(f"pack {name}: whole-pack checksum mismatch (some byte of the pack is damaged)")
    try:
        _head, toc_payload = read_record(src, footer.toc_offset, footer.toc_len - RECORD_HEADER_LEN,
                                        kind=RecordKind.TOC)
        entries = decode_toc(toc_payload, pack=name)
        if len(entries) != footer.record_count:
            result.problem(f"pack {name}: table of contents lists {len(entries)} records, footer "
                           f"says {footer.record_count}")
    except IntegrityError as e:
        result.problem(f"pack {name}: table of contents is damaged ({e})")


def _resync(src: PackBytes, start: int, end: int) -> int | None:
    """Return the offset of the next verifiable record header at or after ``start``."""
    pos = start
    while pos < end:
        block = src.read_at(pos, min(_SCAN_BLOCK, end - pos))
        if not block:
            return None
        i = block.find(RECORD_MAGIC)
        while i >= 0:
            cand = pos + i
            try:
                head = RecordHeader.decode(src.read_at(cand, RECORD_HEADER_LEN), pack=src.name,
                                           offset=cand)
                if cand + RECORD_HEADER_LEN + head.stored_len <= end:
                    return cand
            except IntegrityError:
                pass
            i = block.find(RECORD_MAGIC, i + 1)
        pos += max(1, len(block) - len(RECORD_MAGIC) + 1)
    return None
