"""Keys and values of the index's named databases (schema version 1; see docs/format.md).

Every object and chunk key starts with the tenant, so tenants never share a key and a prefix scan lists one
tenant. Values are fixed little-endian structs with variable tails; this module converts them to plain
records and back and holds no state.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from mmarchive.errors import InvalidInputError
from mmarchive.pack.format import ID_LEN, PACK_ID_LEN

#: 2: the change feed (DB_CHANGES); 3: pack moves (DB_MOVES), last reads (DB_ACCESS), replicas (DB_REPLICAS)
SCHEMA_VERSION = 3

DB_OBJECTS = b"objects"
DB_CHUNKS = b"chunks"
DB_PACKS = b"packs"
DB_TENANTS = b"tenants"
DB_META = b"meta"
DB_CHANGES = b"changes"
DB_MOVES = b"moves"
#: Last read of each object (key as objects', value the UTC day number as u32 LE); advisory: kept by
#: writable handles, not rebuilt by reindex.
DB_ACCESS = b"access"
#: Verified second copies of packs on other tiers (key: pack id; value: JSON {tier: verified_ns}).
DB_REPLICAS = b"replicas"
ALL_DBS = (DB_OBJECTS, DB_CHUNKS, DB_PACKS, DB_TENANTS, DB_META, DB_CHANGES, DB_MOVES, DB_ACCESS,
           DB_REPLICAS)
#: Databases added after schema 2: a read-only open of an older index goes on without them (they are
#: created by the first writable open).
LATER_DBS = (DB_MOVES, DB_ACCESS, DB_REPLICAS)

META_SCHEMA = b"schema"
META_SEQ = b"seq"
META_ARCHIVE_ID = b"archive_id"

_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT_RE.match(tenant):
        raise InvalidInputError(
            f"tenant {tenant!r} is not a valid tenant name: use 1-64 characters of letters, digits, "
            "'.', '_' and '-', starting with a letter or digit")
    return tenant


def tenant_prefix(tenant: str) -> bytes:
    return tenant.encode() + b"\x00"


def scoped_key(tenant: str, ident: bytes) -> bytes:
    return tenant.encode() + b"\x00" + ident


#: The seq part of a change-feed key: big-endian, so that keys sort by seq within a tenant.
CHANGE_SEQ = struct.Struct(">Q")


def change_key(tenant: str, seq: int) -> bytes:
    """The key of an object's entry in the change feed: the tenant, then its seq (big-endian u64)."""
    return scoped_key(tenant, CHANGE_SEQ.pack(seq))


def split_scoped_key(key: bytes) -> tuple[str, bytes]:
    i = key.index(b"\x00")
    return key[:i].decode(), key[i + 1:]


def parse_object_id(oid: str) -> bytes:
    try:
        raw = bytes.fromhex(oid)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != ID_LEN:
        raise InvalidInputError(f"{oid!r} is not an object id (64 hexadecimal digits)")
    return raw


# -- objects ------------------------------------------------------------------------------------------
STATE_LIVE = 1
STATE_DELETED = 2

_OBJECT = struct.Struct("<BQQQ16sQIII")
_CHUNK_REF = struct.Struct("<32sI")


# Index records are NamedTuples: immutable like frozen dataclasses, and several times cheaper to build,
# which matters on the write path (a few per stored object).


class RecordLocation(NamedTuple):
    pack: bytes
    offset: int
    stored_len: int


class ObjectEntry(NamedTuple):
    state: int
    seq: int
    size: int
    created_ns: int
    #: Where the current manifest (live) or tombstone (deleted) record is.
    record: RecordLocation
    metadata_json: bytes
    chunks: tuple[tuple[bytes, int], ...]

    @property
    def live(self) -> bool:
        return self.state == STATE_LIVE

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(self.metadata_json) if self.metadata_json else {}

    def encode(self) -> bytes:
        state, seq, size, created, (pack, offset, stored_len), meta, chunks = self
        head = _OBJECT.pack(state, seq, size, created, pack, offset, stored_len, len(chunks), len(meta))
        if len(chunks) == 1:
            (cid, n), = chunks
            return head + meta + _CHUNK_REF.pack(cid, n)
        return b"".join([head, meta, *(_CHUNK_REF.pack(c, n) for c, n in chunks)])

    @staticmethod
    def decode(buf: bytes) -> ObjectEntry:
        state, seq, size, created, pack, off, slen, n, mlen = _OBJECT.unpack_from(buf)
        o = _OBJECT.size
        meta = bytes(buf[o:o + mlen])
        o += mlen
        chunks = tuple(_CHUNK_REF.unpack_from(buf, o + i * _CHUNK_REF.size) for i in range(n))
        return ObjectEntry(state, seq, size, created, RecordLocation(pack, off, slen), meta, chunks)


#: The fixed head of an encoded object entry: state, seq, size, created_ns, record pack, record offset,
#: record stored length, chunk count, metadata length; the metadata JSON follows it.
OBJECT_HEAD = _OBJECT


def object_summary(buf: bytes) -> tuple[int, int, int, bytes, bytes]:
    """(state, size, created_ns, manifest pack id, metadata_json) of an encoded object entry, without
    decoding its chunk list (what a scan over every object needs, at a fraction of :meth:`decode`)."""
    state, _seq, size, created, pack, _off, _slen, _n, mlen = _OBJECT.unpack_from(buf)
    return state, size, created, pack, bytes(buf[_OBJECT.size:_OBJECT.size + mlen])


# -- chunks -------------------------------------------------------------------------------------------
_CHUNK = struct.Struct("<16sQIIBQ")


class ChunkEntry(NamedTuple):
    record: RecordLocation
    raw_len: int
    codec: int
    refs: int

    def encode(self) -> bytes:
        return ChunkEntry.encode_fields(*self)

    @staticmethod
    def encode_fields(record: RecordLocation, raw_len: int, codec: int, refs: int) -> bytes:
        """The encoding of ``ChunkEntry(record, raw_len, codec, refs)``, without building it."""
        pack, offset, stored_len = record
        return _CHUNK.pack(pack, offset, stored_len, raw_len, codec, refs)

    @staticmethod
    def decode(buf: bytes) -> ChunkEntry:
        pack, off, slen, raw, codec, refs = _CHUNK.unpack(buf)
        return ChunkEntry(RecordLocation(pack, off, slen), raw, codec, refs)


# -- packs --------------------------------------------------------------------------------------------
PACK_OPEN = 1
PACK_SEALED = 2
#: Replaced by gc (its records live elsewhere or are garbage); the file is being deleted. Nothing points
#: into it; recovery and gc finish the deletion.
PACK_DELETING = 3

_PACK = struct.Struct("<BQQIQHHH")


@dataclass(frozen=True)
class PackEntry:
    state: int
    #: Committed length while open (the index never points past it); the final size once sealed.
    length: int
    #: Bytes of records the index points at (headers included); the rest is garbage for gc.
    live_bytes: int
    records: int
    created_ns: int
    tier: str
    tenant: str
    group: str

    @property
    def sealed(self) -> bool:
        return self.state == PACK_SEALED

    @property
    def deleting(self) -> bool:
        return self.state == PACK_DELETING

    @property
    def unused(self) -> bool:
        """Registered, nothing committed in it yet: a pack reserved for writing, or one just created."""
        return self.state == PACK_OPEN and self.length == 0

    def encode(self) -> bytes:
        t, te, g = self.tier.encode(), self.tenant.encode(), self.group.encode()
        return _PACK.pack(self.state, self.length, self.live_bytes, self.records, self.created_ns,
                          len(t), len(te), len(g)) + t + te + g

    @staticmethod
    def decode(buf: bytes) -> PackEntry:
        state, length, live, records, created, lt, lte, lg = _PACK.unpack_from(buf)
        o = _PACK.size
        tier = bytes(buf[o:o + lt]).decode()
        tenant = bytes(buf[o + lt:o + lt + lte]).decode()
        group = bytes(buf[o + lt + lte:o + lt + lte + lg]).decode()
        return PackEntry(state, length, live, records, created, tier, tenant, group)


# -- pack moves -----------------------------------------------------------------------------------------
MOVE_COPYING = "copying"    # the copy to the target may be partial; the index still reads the source
MOVE_SWITCHED = "switched"  # the index reads the target; the source copy waits out the grace period


@dataclass(frozen=True)
class MoveEntry:
    """A pack move between tiers that has started and not finished (key: the pack id)."""

    source: str
    target: str
    phase: str
    started_ns: int
    #: When the source copy may be removed (phase switched).
    release_after_ns: int = 0

    def encode(self) -> bytes:
        return json.dumps({"source": self.source, "target": self.target, "phase": self.phase,
                           "started_ns": self.started_ns,
                           "release_after_ns": self.release_after_ns}).encode()

    @staticmethod
    def decode(buf: bytes) -> MoveEntry:
        d = json.loads(bytes(buf))
        return MoveEntry(d["source"], d["target"], d["phase"], d["started_ns"], d["release_after_ns"])


# -- tenants ------------------------------------------------------------------------------------------
_TENANT = struct.Struct("<qqqqq")


@dataclass(frozen=True, slots=True)
class TenantTotals:
    objects: int = 0
    logical_bytes: int = 0
    chunks: int = 0
    unique_bytes: int = 0  # plaintext bytes of chunks with references
    stored_bytes: int = 0  # stored (compressed) payload bytes of those chunks

    def encode(self) -> bytes:
        return _TENANT.pack(self.objects, self.logical_bytes, self.chunks, self.unique_bytes,
                            self.stored_bytes)

    @staticmethod
    def decode(buf: bytes) -> TenantTotals:
        return TenantTotals(*_TENANT.unpack(buf))

    def plus(self, other: TenantTotals) -> TenantTotals:
        return TenantTotals(self.objects + other.objects, self.logical_bytes + other.logical_bytes,
                            self.chunks + other.chunks, self.unique_bytes + other.unique_bytes,
                            self.stored_bytes + other.stored_bytes)


assert PACK_ID_LEN == 16
