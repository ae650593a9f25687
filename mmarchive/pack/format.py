"""The pack file format, version 1: byte layouts, encoders and decoders of its parts.

A pack is ``header | record* | toc-record | footer``. Every record carries a fixed 64-byte header (kind,
codec, lengths, id, xxh3 of the payload, xxh3 of the header itself), so a pack can be read record by record
with no index at all. Sealing appends a table of contents (a record of kind TOC) and a footer that points at
it and checksums the whole pack. Manifests and tombstones are records too: the packs alone hold everything
the index knows. This module only converts between bytes and plain values; it does no I/O.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

import xxhash

from mmarchive.errors import FormatError, IntegrityError

FORMAT_VERSION = 1

PACK_MAGIC = b"MMPACK\r\n"
RECORD_MAGIC = b"MMR\x01"
FOOTER_MAGIC = b"MMPKEND\n"

ID_LEN = 32  # BLAKE3-256 digests name chunks and objects
PACK_ID_LEN = 16


class RecordKind(IntEnum):
    CHUNK = 1
    MANIFEST = 2
    TOMBSTONE = 3
    TOC = 4


class Codec(IntEnum):
    RAW = 0
    ZSTD = 1
    ZSTD_SHUFFLE2 = 2  # 16-bit byte shuffle (low bytes, then high bytes), then zstd


# -- pack header ---------------------------------------------------------------------------------
# magic 8s | version H | header_len H | flags I | pack_id 16s | created_ns Q | tenant_len H | group_len H
# then tenant (utf-8), group (utf-8), then xxh3_64 of everything before it (Q).
_HEADER_FIXED = struct.Struct("<8sHHI16sQHH")


@dataclass(frozen=True)
class PackHeader:
    pack_id: bytes
    tenant: str
    group: str
    created_ns: int

    def encode(self) -> bytes:
        t = self.tenant.encode()
        g = self.group.encode()
        length = _HEADER_FIXED.size + len(t) + len(g) + 8
        body = _HEADER_FIXED.pack(PACK_MAGIC, FORMAT_VERSION, length, 0, self.pack_id,
                                  self.created_ns, len(t), len(g)) + t + g
        return body + struct.pack("<Q", xxhash.xxh3_64_intdigest(body))

    @staticmethod
    def decode(buf: bytes, *, pack: str = "?") -> PackHeader:
        if len(buf) < _HEADER_FIXED.size or buf[:8] != PACK_MAGIC:
            raise FormatError(f"pack {pack}: not an mmarchive pack (bad magic)", pack=pack)
        _magic, version, length, _flags, pack_id, created, tlen, glen = _HEADER_FIXED.unpack_from(buf)
        if version != FORMAT_VERSION:
            raise FormatError(f"pack {pack}: format version {version} is not supported (this mmarchive "
                              f"reads version {FORMAT_VERSION}); upgrade mmarchive", pack=pack)
        if len(buf) < length or length != _HEADER_FIXED.size + tlen + glen + 8:
            raise IntegrityError(f"pack {pack}: header is truncated or has a bad length", pack=pack)
        (check,) = struct.unpack_from("<Q", buf, length - 8)
        if check != xxhash.xxh3_64_intdigest(buf[:length - 8]):
            raise IntegrityError(f"pack {pack}: header checksum mismatch", pack=pack, offset=0)
        o = _HEADER_FIXED.size
        tenant = bytes(buf[o:o + tlen]).decode()
        group = bytes(buf[o + tlen:o + tlen + glen]).decode()
        return PackHeader(pack_id=pack_id, tenant=tenant, group=group, created_ns=created)

    @staticmethod
    def peek_length(buf: bytes) -> int:
        """Return the full header length given at least its fixed part."""
        return int(_HEADER_FIXED.unpack_from(buf)[2])


HEADER_FIXED_LEN = _HEADER_FIXED.size

# -- record header -------------------------------------------------------------------------------
# magic 4s | kind B | codec B | flags H | stored_len I | raw_len I | id 32s | payload_xxh3 Q | header_xxh3 Q
_RECORD = struct.Struct("<4sBBHII32sQ")
RECORD_HEADER_LEN = _RECORD.size + 8  # 64
assert RECORD_HEADER_LEN == 64


@dataclass(frozen=True, slots=True)
class RecordHeader:
    kind: int
    codec: int
    stored_len: int
    raw_len: int
    id: bytes
    checksum: int  # xxh3_64 of the stored payload

    def encode(self) -> bytes:
        return encode_record_header(self.kind, self.codec, self.stored_len, self.raw_len, self.id,
                                    self.checksum)

    @staticmethod
    def decode(buf: bytes | memoryview, *, pack: str = "?", offset: int = 0) -> RecordHeader:
        if len(buf) < RECORD_HEADER_LEN:
            raise IntegrityError(f"pack {pack}: record at offset {offset} is truncated",
                                 pack=pack, offset=offset)
        body = buf[:_RECORD.size]
        (check,) = struct.unpack_from("<Q", buf, _RECORD.size)
        if check != xxhash.xxh3_64_intdigest(body):
            raise IntegrityError(f"pack {pack}: record header at offset {offset} is damaged "
                                 "(checksum mismatch)", pack=pack, offset=offset)
        magic, kind, codec, _flags, stored_len, raw_len, rid, payload_check = _RECORD.unpack(body)
        if magic != RECORD_MAGIC or kind not in _KINDS or codec not in _CODECS:
            raise IntegrityError(f"pack {pack}: record at offset {offset} has an unknown kind/codec",
                                 pack=pack, offset=offset)
        return RecordHeader(kind=kind, codec=codec, stored_len=stored_len, raw_len=raw_len, id=rid,
                            checksum=payload_check)


_KINDS = frozenset(int(k) for k in RecordKind)
_CODECS = frozenset(int(c) for c in Codec)


_HEADER_CHECK = struct.Struct("<Q")


def encode_record_header(kind: int, codec: int, stored_len: int, raw_len: int, rid: bytes,
                         checksum: int) -> bytes:
    """The 64-byte record header (same bytes as RecordHeader.encode, without building the record)."""
    body = _RECORD.pack(RECORD_MAGIC, kind, codec, 0, stored_len, raw_len, rid, checksum)
    return body + _HEADER_CHECK.pack(xxhash.xxh3_64_intdigest(body))


# -- manifest and tombstone payloads -----------------------------------------------------------------
# Manifest v1: version B | seq Q | size Q | created_ns Q | n_chunks I | tenant_len H | meta_len I
# then tenant utf-8, metadata (JSON, utf-8), then n_chunks * (chunk id 32s, raw_len I).
_MANIFEST = struct.Struct("<BQQQIHI")
_CHUNK_REF = struct.Struct("<32sI")
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    object_id: bytes
    tenant: str
    seq: int
    size: int
    created_ns: int
    metadata: dict[str, Any]
    chunks: tuple[tuple[bytes, int], ...]  # (chunk id, raw length) in object order

    def encode_payload(self) -> bytes:
        return encode_manifest_payload(self.seq, self.size, self.created_ns, self.tenant,
                                       encode_metadata(self.metadata), self.chunks)

    @staticmethod
    def decode_payload(object_id: bytes, buf: bytes, *, pack: str = "?") -> Manifest:
        try:
            version, seq, size, created, n, tlen, mlen = _MANIFEST.unpack_from(buf)
            if version != MANIFEST_VERSION:
                raise FormatError(f"pack {pack}: manifest version {version} not supported", pack=pack)
            o = _MANIFEST.size
            tenant = buf[o:o + tlen].decode()
            o += tlen
            metadata = json.loads(buf[o:o + mlen]) if mlen else {}
            o += mlen
            chunks = tuple(_CHUNK_REF.unpack_from(buf, o + i * _CHUNK_REF.size) for i in range(n))
            if o + n * _CHUNK_REF.size != len(buf):
                raise ValueError("trailing bytes")
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise IntegrityError(f"pack {pack}: manifest of object {object_id.hex()} cannot be decoded "
                                 f"({e})", pack=pack, object_id=object_id.hex()) from e
        return Manifest(object_id=object_id, tenant=tenant, seq=seq, size=size, created_ns=created,
                        metadata=metadata, chunks=chunks)


def encode_manifest_payload(seq: int, size: int, created_ns: int, tenant: str, metadata_json: bytes,
                            chunks: tuple[tuple[bytes, int], ...] | list[tuple[bytes, int]]) -> bytes:
    """The manifest payload from plain values (the write path's form: no Manifest object built)."""
    t = tenant.encode()
    head = _MANIFEST.pack(MANIFEST_VERSION, seq, size, created_ns, len(chunks), len(t),
                          len(metadata_json))
    if len(chunks) == 1:
        return head + t + metadata_json + _CHUNK_REF.pack(*chunks[0])
    return b"".join([head, t, metadata_json, *(_CHUNK_REF.pack(cid, n) for cid, n in chunks)])


class OneChunkManifests:
    """Encodes the manifests of one-chunk objects (chunk id = object id) of one tenant and metadata.

    The batch form of :func:`encode_manifest_payload`, with the same bytes: the layout is fixed for the
    batch, so each manifest is one struct pack.
    """

    __slots__ = ("_head", "_layout")

    def __init__(self, tenant: str, metadata_json: bytes) -> None:
        t = tenant.encode()
        self._layout = struct.Struct(f"{_MANIFEST.format}{len(t)}s{len(metadata_json)}s32sI")
        self._head = (len(t), len(metadata_json), t, metadata_json)

    def encode(self, seq: int, size: int, created_ns: int, oid: bytes) -> bytes:
        tlen, mlen, t, meta = self._head
        return self._layout.pack(MANIFEST_VERSION, seq, size, created_ns, 1, tlen, mlen, t, meta, oid,
                                 size)


# Tombstone v1: version B | seq Q | deleted_ns Q | tenant_len H, then tenant utf-8.
_TOMBSTONE = struct.Struct("<BQQH")


@dataclass(frozen=True)
class Tombstone:
    object_id: bytes
    tenant: str
    seq: int
    deleted_ns: int

    def encode_payload(self) -> bytes:
        t = self.tenant.encode()
        return _TOMBSTONE.pack(1, self.seq, self.deleted_ns, len(t)) + t

    @staticmethod
    def decode_payload(object_id: bytes, buf: bytes, *, pack: str = "?") -> Tombstone:
        try:
            version, seq, deleted, tlen = _TOMBSTONE.unpack_from(buf)
            if version != 1 or len(buf) != _TOMBSTONE.size + tlen:
                raise ValueError("bad version or length")
            tenant = buf[_TOMBSTONE.size:].decode()
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise IntegrityError(f"pack {pack}: tombstone of object {object_id.hex()} cannot be "
                                 f"decoded ({e})", pack=pack, object_id=object_id.hex()) from e
        return Tombstone(object_id=object_id, tenant=tenant, seq=seq, deleted_ns=deleted)


def encode_metadata(metadata: dict[str, Any]) -> bytes:
    if not metadata:
        return b""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- table of contents and footer ----------------------------------------------------------------
# TOC entry: kind B | codec B | offset Q | stored_len I | raw_len I | id 32s  (the seq of manifests and
# tombstones is inside their payload; the TOC is for finding records, not for replacing them).
_TOC_ENTRY = struct.Struct("<BBQII32s")
#: One TOC entry's layout, for writers that encode entries as they append records.
TOC_ENTRY_LAYOUT = _TOC_ENTRY
# Footer: magic 8s | toc_offset Q | toc_len Q | record_count Q | pack xxh3_128 16s | footer xxh3 Q
_FOOTER = struct.Struct("<8sQQQ16s")
FOOTER_LEN = _FOOTER.size + 8


class TocEntry(NamedTuple):
    kind: int
    codec: int
    offset: int
    stored_len: int
    raw_len: int
    id: bytes


def encode_toc(entries: Sequence[tuple[int, int, int, int, int, bytes]]) -> bytes:
    """The TOC payload from TocEntry records (or plain tuples of the same fields)."""
    pack = _TOC_ENTRY.pack
    return b"".join([pack(*e) for e in entries])


def decode_toc(buf: bytes, *, pack: str = "?") -> list[TocEntry]:
    if len(buf) % _TOC_ENTRY.size:
        raise IntegrityError(f"pack {pack}: table of contents has a bad length", pack=pack)
    return [TocEntry(*_TOC_ENTRY.unpack_from(buf, i)) for i in range(0, len(buf), _TOC_ENTRY.size)]


@dataclass(frozen=True)
class Footer:
    toc_offset: int
    toc_len: int
    record_count: int
    pack_checksum: bytes  # xxh3_128 of every byte before the footer

    def encode(self) -> bytes:
        body = _FOOTER.pack(FOOTER_MAGIC, self.toc_offset, self.toc_len, self.record_count,
                            self.pack_checksum)
        return body + struct.pack("<Q", xxhash.xxh3_64_intdigest(body))

    @staticmethod
    def decode(buf: bytes, *, pack: str = "?") -> Footer | None:
        """Return the footer, or None when ``buf`` does not end with one (an unsealed pack)."""
        if len(buf) < FOOTER_LEN or buf[-FOOTER_LEN:-FOOTER_LEN + 8] != FOOTER_MAGIC:
            return None
        tail = buf[-FOOTER_LEN:]
        (check,) = struct.unpack_from("<Q", tail, _FOOTER.size)
        if check != xxhash.xxh3_64_intdigest(tail[:_FOOTER.size]):
            raise IntegrityError(f"pack {pack}: footer checksum mismatch", pack=pack)
        _m, toc_offset, toc_len, count, checksum = _FOOTER.unpack_from(tail)
        return Footer(toc_offset=toc_offset, toc_len=toc_len, record_count=count,
                      pack_checksum=checksum)


def pack_name(pack_id: bytes) -> str:
    return pack_id.hex()


def pack_id_from_name(name: str) -> bytes | None:
    """The pack id a file name stands for, or None if it is not a pack id (a stray file)."""
    if len(name) != 2 * PACK_ID_LEN:
        return None
    try:
        return bytes.fromhex(name)
    except ValueError:
        return None
