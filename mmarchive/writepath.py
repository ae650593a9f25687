"""The write path: records appended to packs, index changes staged, and group commit in durable order.

This module is the one place that enforces the write ordering of docs/format.md:

1. a pack is registered in the index (open, length 0) before its file is created, and the folder entry
   of a new file is synced before the commit of its first records;
2. records are appended to the pack and its index changes are staged in memory;
3. a commit flushes and fdatasyncs every pack written since the last commit, *then* applies all staged
   changes (object entries, chunk references, pack lengths, tenant totals) in one LMDB transaction;
4. only then are the callers whose work was in that commit told it is durable.

An index entry therefore never points at bytes that are not on stable storage, and bytes past a pack's
committed length are never referenced (recovery cuts them off). Commits are grouped: every thread that
stages work waits for the next commit to cover its ticket, and one commit thread serves them all.
A failed write or commit puts the write path in a failed state; reopen the archive to recover.

Each group commit also registers the next packs of every tenant being written (``_RESERVE`` of them,
in its own transaction): when a pack fills, or a tenant starts writing a new group, staging creates the
next file without an index commit of its own, which would wait on the device behind the pack data being
written (tens of milliseconds, during which nothing reached the commit thread). A reservation is not
yet of a group: the commit that first points into the pack records the group it was made for. Reserved
packs nothing was written to are forgotten on close, and recovery removes those of a crash (open,
length 0) as it always did.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import xxhash

from mmarchive.config import StoreConfig
from mmarchive.errors import ArchiveStateError, IntegrityError, StorageError
from mmarchive.index.env import IndexEnv
from mmarchive.index.schema import (
    CHANGE_SEQ,
    DB_CHANGES,
    DB_CHUNKS,
    DB_META,
    DB_OBJECTS,
    DB_PACKS,
    DB_TENANTS,
    META_SEQ,
    PACK_OPEN,
    PACK_SEALED,
    STATE_DELETED,
    STATE_LIVE,
    ChunkEntry,
    ObjectEntry,
    PackEntry,
    RecordLocation,
    TenantTotals,
    scoped_key,
    tenant_prefix,
)
from mmarchive.pack.format import (
    RECORD_HEADER_LEN,
    OneChunkManifests,
    PackHeader,
    RecordKind,
    TocEntry,
    Tombstone,
    encode_manifest_payload,
    pack_name,
)
from mmarchive.pack.reader import ScanResult, scan_pack
from mmarchive.pack.writer import SMALL_RECORD_MAX, PackWriter, write_all
from mmarchive.records import tuple_maker
from mmarchive.store.chunks import PreparedChunk, encode_chunk
from mmarchive.store.codec import CodecSet
from mmarchive.store.sources import ObjectBytes
from mmarchive.tiers.base import Tier
from mmarchive.tiers.local import LocalTier

log = logging.getLogger(__name__)

#: How many commits' keys are remembered to keep older index views usable (see _still_current).
_RECENT_COMMITS = 8
#: Packs registered ahead for each tenant being written (see the module's charter).
_RESERVE = 2


class _ChunkChange(NamedTuple):
    """A staged change to one chunk's index entry (replaced, not changed, as more references come)."""

    tenant: str
    new: RecordLocation | None  # set when this batch wrote the record
    raw_len: int
    codec: int
    refs_delta: int


class _PendingObject(NamedTuple):
    """A staged object entry not yet committed, and the ticket that commits it."""

    entry: ObjectEntry
    ticket: int


@dataclass
class _Batch:
    """Everything staged since the last commit."""

    chunks: dict[bytes, _ChunkChange] = field(default_factory=dict)
    objects: dict[bytes, ObjectEntry] = field(default_factory=dict)
    dirty: dict[bytes, PackWriter] = field(default_factory=dict)
    full: list[PackWriter] = field(default_factory=list)
    #: Packs created since the last commit (id -> group), whose folder entries the commit syncs before
    #: its index commit, which also records their group.
    new_packs: dict[bytes, str] = field(default_factory=dict)
    seq: int = 0
    ticket: int = 0

    def empty(self) -> bool:
        return not (self.chunks or self.objects or self.dirty or self.full)


class IndexView(NamedTuple):
    """What :meth:`WritePath.look_up_many` saw in the index for one key, and in which generation.

    The staging thread checks its pending maps first; whatever is not pending was, if it was ever
    staged, committed before the generation changed. So an answer taken in the current generation is
    still right, and an older one is looked up again.
    """

    generation: int
    object_raw: bytes | None
    chunk_known: bool


class PreparedPart(NamedTuple):
    """One chunk of an object being staged: its id, plaintext, prepared record and index view.

    ``chunk`` is None when the caller found the chunk stored; ``seen`` is what the index held for its
    key when the caller looked (None: not looked up).
    """

    cid: bytes
    view: ObjectBytes
    chunk: PreparedChunk | None
    seen: IndexView | None = None


# Record constructors for the per-object staging path (see tuple_maker).
_new_view = tuple_maker(IndexView)
_new_location = tuple_maker(RecordLocation)
_new_object_entry = tuple_maker(ObjectEntry)
_new_change = tuple_maker(_ChunkChange)
_new_pending = tuple_maker(_PendingObject)


def _outdated(key: bytes, newer: list[frozenset[bytes]] | None) -> bool:
    """Whether an index view of ``key`` is out of date, given the keys of the commits since its
    generation (None: some of them are forgotten, so it may be)."""
    return newer is None or any(key in keys for keys in newer)


@dataclass
class _ActivePack:
    writer: PackWriter
    pack_id: bytes


def finish_deletion(index: IndexEnv, tier: Tier, pack_id: bytes) -> None:
    """Unlink a pack that the index marks as being deleted, then forget it in the index."""
    tier.remove(pack_name(pack_id))

    def forget(txn: Any) -> None:
        txn.delete(pack_id, db=index.db(DB_PACKS))

    index.write(forget)


class WritePath:
    """Stages records and index changes and commits them in groups (one per archive handle)."""

    def __init__(self, index: IndexEnv, tier: LocalTier, cfg: StoreConfig) -> None:
        self.index = index
        self.tier = tier
        self.cfg = cfg
        self._lock = threading.RLock()  # guards staging state and pack writers
        #: Writes large records into the page cache past what a pack keeps for the commit thread, so the
        #: staging thread need not (one write in flight per pack; see PackWriter).
        self._spill = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmarchive-packwrite")
        #: Held by the look-ups of :meth:`look_up_many` and by a commit's :meth:`_apply`, each inside its
        #: transaction. py-lmdb lets the GIL go around every get and put, so when both run at once the
        #: two threads hand the GIL to each other at nearly every call (a context switch each); taking
        #: turns, 4 KiB objects went 13% faster and nothing else changed (docs/benchmarks.md).
        self._index_turn = threading.Lock()
        self._batch = _Batch()
        self._ticket = 0  # last ticket handed out
        self._active: dict[tuple[str, str], _ActivePack] = {}
        #: Packs registered in the index (open, length 0) whose files do not exist yet, with the
        #: creation time they were registered with, per tenant, oldest first.
        self._reserved: dict[str, list[tuple[bytes, int]]] = {}
        #: Unsealed packs from earlier sessions, resumed when their (tenant, group) writes again.
        self._resumable: dict[tuple[str, str], bytes] = {}
        self._committed_len: dict[bytes, int] = {}
        # Pending (not yet committed) chunks and objects, visible to dedup and existence checks.
        self._pending_chunks: dict[bytes, _ChunkChange] = {}
        self._pending_objects: dict[bytes, _PendingObject] = {}
        # Group commit state.
        self._cond = threading.Condition()
        self._durable = 0
        self._requested = 0
        self._failure: BaseException | None = None
        #: Incremented (under the lock) each time a commit removes entries from the pending maps.
        self._generation = 0
        #: The keys of the latest commits, newest last, as (generation it started, keys it changed): an
        #: index view older than the current generation still holds for a key that none of the commits
        #: since it touched. (Keys only: holding the commits' entries would keep thousands of objects
        #: alive for the cyclic GC to walk.)
        self._recent_commits: deque[tuple[int, frozenset[bytes]]] = deque(maxlen=_RECENT_COMMITS)
        self._closing = False
        self._thread: threading.Thread | None = None
        with index.read() as txn:
            raw = txn.get(META_SEQ, db=index.db(DB_META))
        self._seq = int.from_bytes(raw, "little") if raw else 0
        self._recover()

    # -- recovery ---------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Cut uncommitted tails off open packs; seal the ones that are full or duplicated."""
        with self.index.read() as txn:
            packs = [(k, PackEntry.decode(v)) for k, v in txn.cursor(db=self.index.db(DB_PACKS))]
        for pack_id, entry in packs:
            # A gc replaced it and was stopped before the unlink (gc finishes those on other tiers).
            if entry.deleting and entry.tier == self.tier.name:
                finish_deletion(self.index, self.tier, pack_id)
        for pack_id, entry in packs:
            if entry.state != PACK_OPEN:
                continue
            name = pack_name(pack_id)
            path = self.tier.path(name)
            if entry.length == 0:
                # Registered but nothing committed: a reservation, or a crash before the first commit
                # (or mid-repack).
                finish_deletion(self.index, self.tier, pack_id)
                continue
            if not path.exists():
                continue  # a missing pack with committed records is damage: verify reports it
            size = path.stat().st_size
            if size > entry.length:
                with open(path, "r+b") as f:
                    f.truncate(entry.length)
                    f.flush()
                    os.fsync(f.fileno())
            key = (entry.tenant, entry.group)
            self._committed_len[pack_id] = entry.length
            if entry.length >= self.cfg.pack_size or key in self._resumable:
                self._seal_existing(pack_id, entry)
            else:
                self._resumable[key] = pack_id

    def _resume_writer(self, pack_id: bytes, entry_length: int) -> PackWriter:
        """Reopen an unsealed pack for appending after checking every committed record in it."""
        name = pack_name(pack_id)
        with self.tier.reader(name) as src:
            if src.size() < entry_length:
                raise IntegrityError(f"pack {name} cannot be resumed: it has {src.size()} bytes, "
                                     f"{entry_length} were committed", pack=name)
            scan = ScanResult()
            toc = [TocEntry(rec.header.kind, rec.header.codec, rec.offset, rec.header.stored_len,
                            rec.header.raw_len, rec.header.id)
                   for rec in scan_pack(src, scan, limit=entry_length, payloads=False)]
            if scan.problems or scan.header is None or scan.clean_end != entry_length:
                raise IntegrityError(f"pack {name} cannot be resumed: "
                                     f"{'; '.join(scan.problems or ['its records end early'])}",
                                     pack=name)
            content = src.read_at(0, entry_length)
        fd = self.tier.open_append(name)
        return PackWriter.resume(fd, scan.header, name, content=content, toc=toc, spill=self._spill)

    def _seal_existing(self, pack_id: bytes, entry: PackEntry) -> None:
        """Seal an open pack from an earlier session; a damaged one is left open for verify to report."""
        try:
            writer = self._resume_writer(pack_id, entry.length)
        except IntegrityError as e:
            log.warning("not sealing damaged pack %s: %s", pack_name(pack_id), e)
            return
        try:
            size = writer.seal()
        finally:
            writer.close()
        self._mark_sealed(pack_id, size)

    def _mark_sealed(self, pack_id: bytes, size: int) -> None:
        def apply(txn: Any) -> None:
            db = self.index.db(DB_PACKS)
            cur = PackEntry.decode(txn.get(pack_id, db=db))
            txn.put(pack_id, replace(cur, state=PACK_SEALED, length=size).encode(), db=db)

        self.index.write(apply)
        self._committed_len.pop(pack_id, None)
        self.tier.forget(pack_name(pack_id))

    # -- staging ----------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise StorageError(f"an earlier write failed ({self._failure}); nothing after it was "
                               "acknowledged. Close and reopen the archive to continue") \
                from self._failure
        if self._closing:
            raise ArchiveStateError("the archive is closed")

    def _writer(self, tenant: str, group: str) -> _ActivePack:
        key = (tenant, group)
        active = self._active.get(key)
        if active is not None:
            return active
        resumable = self._resumable.pop(key, None)
        if resumable is not None:
            try:
                writer = self._resume_writer(resumable, self._committed_len[resumable])
                active = self._active[key] = _ActivePack(writer, resumable)
                return active
            except IntegrityError as e:
                # Leave the damaged pack as it is (verify reports it) and write a new one.
                log.warning("not appending to damaged pack %s: %s", pack_name(resumable), e)
        reserved = self._reserved.setdefault(tenant, [])
        if not reserved:
            # Nothing reserved (the tenant's first pack, or packs filling faster than commits reserve):
            # register this one and the next ones in an index commit of their own.
            reserved.extend(self._register_packs(tenant, group, 1 + _RESERVE))
        pack_id, created_ns = reserved.pop(0)
        # (Its folder entry is synced by the commit that first points into it: see _commit_once.)
        writer = self._new_pack_file(pack_id, tenant, group, created_ns, sync_directory=False)
        self._batch.new_packs[pack_id] = group
        self._committed_len[pack_id] = 0
        active = self._active[key] = _ActivePack(writer, pack_id)
        return active

    def create_pack(self, tenant: str, group: str) -> tuple[bytes, PackWriter]:
        """Register a new pack in the index (open, length 0), then create its file (durably)."""
        ((pack_id, created_ns),) = self._register_packs(tenant, group, 1)
        return pack_id, self._new_pack_file(pack_id, tenant, group, created_ns, sync_directory=True)

    def _new_pack_file(self, pack_id: bytes, tenant: str, group: str, created_ns: int, *,
                       sync_directory: bool) -> PackWriter:
        """Create the file of a registered pack and a writer for it."""
        name = pack_name(pack_id)
        fd = self.tier.create(name, sync_directory=sync_directory)
        return PackWriter.create(fd, PackHeader(pack_id, tenant, group, created_ns), name, spill=self._spill)

    def _register_packs(self, tenant: str, group: str, count: int) -> list[tuple[bytes, int]]:
        """Register ``count`` new packs (open, length 0) in one index commit; return (id, created)."""
        new = [self._new_pack_id() for _ in range(count)]
        self.index.write(lambda txn: self._put_registered(txn, tenant, group, new))
        return new

    @staticmethod
    def _new_pack_id() -> tuple[bytes, int]:
        return os.urandom(16), time.time_ns()  # (the secrets module would add 15 ms to start-up)

    def _put_registered(self, txn: Any, tenant: str, group: str, packs: list[tuple[bytes, int]]) -> None:
        db = self.index.db(DB_PACKS)
        for pack_id, created_ns in packs:
            txn.put(pack_id, PackEntry(PACK_OPEN, 0, 0, 0, created_ns, self.tier.name, tenant,
                                       group).encode(), db=db)

    def _forget_reserved(self) -> None:
        """Forget the reserved packs (no file was made for them) in one index commit."""
        with self._lock:
            ids = [pack_id for packs in self._reserved.values() for pack_id, _created in packs]
            self._reserved.clear()
        if not ids:
            return
        db = self.index.db(DB_PACKS)

        def forget(txn: Any) -> None:
            for pack_id in ids:
                txn.delete(pack_id, db=db)

        self.index.write(forget)

    def _reservations_wanted(self) -> dict[str, list[tuple[bytes, int]]]:
        """New pack ids (and creation times) that top up the reservations of every tenant being
        written to ``_RESERVE`` (lock held)."""
        wanted: dict[str, list[tuple[bytes, int]]] = {}
        for tenant in {tenant for tenant, _group in self._active}:
            missing = _RESERVE - len(self._reserved.get(tenant, ()))
            if missing > 0:
                wanted[tenant] = [self._new_pack_id() for _ in range(missing)]
        return wanted

    def seal_all(self) -> None:
        """Commit what is staged, then seal every open pack (active and resumable)."""
        self.flush()
        with self._lock:
            actives = list(self._active.values())
            self._active.clear()
            resumable = list(self._resumable.values())
            self._resumable.clear()
        self._forget_reserved()
        for active in actives:
            size = active.writer.seal()
            active.writer.close()
            self._mark_sealed(active.pack_id, size)
        for pack_id in resumable:
            with self.index.read() as txn:
                entry = PackEntry.decode(txn.get(pack_id, db=self.index.db(DB_PACKS)))
            self._seal_existing(pack_id, entry)

    def _append(self, tenant: str, group: str, kind: int, codec: int, rid: bytes, raw_len: int,
                payload: bytes | bytearray | memoryview, checksum: int, *,
                keep: bool = True) -> RecordLocation:
        active = self._writer(tenant, group)
        try:
            offset = active.writer.append(kind, codec, rid, raw_len, payload, checksum, keep=keep)
        except StorageError as e:
            self._fail(e)
            raise
        self._batch.dirty[active.pack_id] = active.writer
        self._retire_if_full(tenant, group, active)
        return RecordLocation(active.pack_id, offset, len(payload))

    def _retire_if_full(self, tenant: str, group: str, active: _ActivePack) -> bool:
        """If the pack is full, hand its writer to the next commit to seal; (tenant, group) gets a new
        pack at its next record. Return whether it was full."""
        if active.writer.size < self.cfg.pack_size:
            return False
        del self._active[(tenant, group)]
        self._batch.full.append(active.writer)
        return True

    def chunk_known(self, key: bytes) -> bool:
        """Whether a chunk (tenant-scoped key) is stored or staged. Thread-safe, lock-free."""
        if key in self._pending_chunks:
            return True
        with self.index.read() as txn:
            return txn.get(key, db=self.index.db(DB_CHUNKS)) is not None

    def look_up_many(self, keys: list[bytes]) -> list[IndexView]:
        """What the index holds for objects' keys (object entry, chunk of that id known), and when.

        One read transaction for all keys, taken before staging so that the staging thread need not
        query the index itself; see :class:`IndexView` for why an answer stays usable until the next
        commit completes. (Both databases are read: an object stored in pieces has no chunk of its
        own id, so a missing chunk does not tell that the object is missing.)
        """
        generation = self._generation
        db_o, db_c = self.index.db(DB_OBJECTS), self.index.db(DB_CHUNKS)
        absent = _new_view((generation, None, False))  # shared by every key the index lacks
        views = []
        with self.index.read() as txn, self._index_turn:
            get = txn.get
            for key in keys:
                raw = get(key, None, db_o)
                known = get(key, None, db_c) is not None
                views.append(_new_view((generation, raw, known)) if raw is not None or known else absent)
        return views

    def _still_current(self, key: bytes, seen: IndexView) -> bool:
        """Whether what ``seen`` tells of ``key`` still holds (lock held).

        Only this handle's commits change objects and chunks while it stages (gc and repair wait for
        staging to end), so a view stays right until a commit touches its key; a view older than the
        commits remembered is not trusted.
        """
        generation = seen.generation
        return generation == self._generation or not _outdated(key, self._commits_since(generation))

    def _commits_since(self, generation: int) -> list[frozenset[bytes]] | None:
        """The keys of each commit since ``generation`` began, or None if some are forgotten (lock held)."""
        if generation == self._generation:
            return []
        recent = self._recent_commits
        if not recent or recent[0][0] > generation:
            return None
        return [keys for started, keys in recent if started >= generation]

    def _current_entry(self, key: bytes,
                       seen: IndexView | None) -> tuple[ObjectEntry | None, IndexView | None]:
        """An object's entry as staged or committed (lock held), and the index view it came from.

        The view is None when the entry is staged (its chunks are then staged or stored too); ``seen``
        is used if it is still current, else the index is read.
        """
        pending = self._pending_objects.get(key)
        if pending is not None:
            return pending[0], None
        if seen is None or not self._still_current(key, seen):
            seen = self.look_up_many([key])[0]
        return (ObjectEntry.decode(seen.object_raw) if seen.object_raw is not None else None), seen

    def stage_whole_object(self, tenant: str, group: str, oid: bytes, data: ObjectBytes,
                           chunk: PreparedChunk | None, codecs: CodecSet,
                           metadata: bytes | None,
                           seen: IndexView | None = None) -> tuple[ObjectEntry, bool, int]:
        """Stage a one-chunk object (chunk id == object id), using ``seen`` if it is still current.

        ``chunk`` is its prepared record, or None if it was found stored (``codecs`` then encodes it
        should that no longer hold).
        """
        with self._lock:
            self._check_usable()
            return self._stage_whole_locked(tenant, group, scoped_key(tenant, oid), oid, data, chunk,
                                            codecs, metadata, seen)

    def stage_whole_objects(self, tenant: str, group: str, preps: list[PreparedPart], codecs: CodecSet,
                            metadata: bytes | None) -> list[tuple[ObjectEntry, bool, int]]:
        """:meth:`stage_whole_object` for a batch of one tenant's objects, in order, under one lock hold.

        The common case of an ingest (a new object whose chunk is new, prepared from an index view that
        is still current) is staged here without the general path's look-ups; any other object goes
        the general way. Every object of the batch gets the same creation time.
        """
        prefix = tenant_prefix(tenant)
        out: list[tuple[ObjectEntry, bool, int]] = []
        with self._lock:
            self._check_usable()
            generation = self._generation
            pending_objects, pending_chunks = self._pending_objects, self._pending_chunks
            batch_chunks = self._batch.chunks
            meta_json = metadata or b""
            manifest = OneChunkManifests(tenant, meta_json)
            now = time.time_ns()
            active: _ActivePack | None = None  # (taken at the first record: a resend writes none)
            # The commits since each older index view's generation: their keys' views are out of date.
            commits_since: dict[int, list[frozenset[bytes]] | None] = {}
            for cid, data, chunk, seen in preps:
                key = prefix + cid
                if seen is not None and seen.generation != generation:
                    g = seen.generation
                    if g not in commits_since:
                        commits_since[g] = self._commits_since(g)
                    if _outdated(key, commits_since[g]):
                        seen = None
                if (seen is None or seen.object_raw is not None
                        or seen.chunk_known or chunk is None or not data or key in pending_objects
                        or key in pending_chunks or len(chunk.stored) >= SMALL_RECORD_MAX):
                    out.append(self._stage_whole_locked(tenant, group, key, cid, data, chunk, codecs,
                                                        metadata, seen))
                    active = None  # (that path may have filled it)
                    continue
                size = len(data)
                _cid, _raw_len, codec, stored, checksum = chunk
                self._seq += 1
                payload = manifest.encode(self._seq, size, now, cid)
                if active is None:
                    active = self._writer(tenant, group)
                    self._batch.dirty[active.pack_id] = active.writer
                offset = active.writer.append_one_chunk_object(cid, codec, size, stored, checksum, payload)
                chunk_at = _new_location((active.pack_id, offset, len(stored)))
                batch_chunks[key] = pending_chunks[key] = _new_change((tenant, chunk_at, size, codec, 1))
                manifest_at = _new_location((active.pack_id, offset + RECORD_HEADER_LEN + len(stored),
                                             len(payload)))
                entry = _new_object_entry((STATE_LIVE, self._seq, size, now, manifest_at, meta_json,
                                           ((cid, size),)))
                out.append((entry, False, self._stage_entry(key, entry)))
                if self._retire_if_full(tenant, group, active):
                    active = None
        return out

    def _stage_whole_locked(self, tenant: str, group: str, key: bytes, oid: bytes, data: ObjectBytes,
                            chunk: PreparedChunk | None, codecs: CodecSet, metadata: bytes | None,
                            seen: IndexView | None) -> tuple[ObjectEntry, bool, int]:
        """The body of :meth:`stage_whole_object` (lock held)."""
        prev, view = self._current_entry(key, seen)
        if data and view is not None:  # (no view: the object is staged, so is its chunk)
            self._stage_chunk_unless_known(tenant, group, oid, data, chunk, codecs, view)
        return self._stage_manifest(tenant, group, key, oid, len(data), metadata,
                                    [(oid, len(data))] if len(data) else [], prev)

    def stage_parted_object(self, tenant: str, group: str, oid: bytes, size: int,
                            parts: list[PreparedPart], codecs: CodecSet,
                            metadata: bytes | None,
                            seen: IndexView | None = None) -> tuple[ObjectEntry, bool, int]:
        """Stage an object made of the given chunks, in order (the caller chose where they are cut).

        ``seen`` is the index's view of the object's own key, used if it is still current. Chunks
        already stored or staged are referenced, not written again; an object already stored with the
        same metadata stages nothing.
        """
        key = scoped_key(tenant, oid)
        with self._lock:
            self._check_usable()
            prev, _view = self._current_entry(key, seen)
            unchanged = (prev is not None and prev.live
                         and (metadata is None or metadata == prev.metadata_json))
            if not unchanged:
                for part in parts:
                    self._stage_chunk_unless_known(tenant, group, part.cid, part.view, part.chunk, codecs,
                                                   part.seen)
            return self._stage_manifest(tenant, group, key, oid, size, metadata,
                                        [(part.cid, len(part.view)) for part in parts], prev)

    def stage_chunk(self, tenant: str, group: str, cid: bytes, data: bytes | bytearray | memoryview,
                    chunk: PreparedChunk | None, codecs: CodecSet) -> None:
        """Make chunk ``cid`` (plaintext ``data``) stored, unless it is already stored or staged.

        ``chunk`` is its prepared record, or None when the caller found the chunk stored (``codecs``
        then encodes it should that no longer hold).
        """
        with self._lock:
            self._check_usable()
            self._stage_chunk_unless_known(tenant, group, cid, data, chunk, codecs, keep=False)

    def _stage_chunk_unless_known(self, tenant: str, group: str, cid: bytes,
                                  data: bytes | bytearray | memoryview, chunk: PreparedChunk | None,
                                  codecs: CodecSet, seen: IndexView | None = None, *,
                                  keep: bool = True) -> None:
        """Stage chunk ``cid`` unless it is staged or stored (lock held).

        ``seen`` answers "stored?" if it is still current; else the index is asked. ``keep``: a large
        immutable record may wait, by reference, for the commit thread to write it (see PackWriter);
        False for the chunks of a large object, which one call stages many of before any commit.
        """
        key = scoped_key(tenant, cid)
        if key in self._pending_chunks:
            return
        if seen is not None and self._still_current(key, seen):
            if seen.chunk_known:
                return
        elif self.chunk_known(key):
            return
        self._stage_new_chunk(tenant, group, key, cid,
                              chunk if chunk is not None else encode_chunk(codecs, cid, data), keep=keep)

    def _stage_new_chunk(self, tenant: str, group: str, key: bytes, cid: bytes,
                         chunk: PreparedChunk, *, keep: bool) -> None:
        loc = self._append(tenant, group, RecordKind.CHUNK, chunk.codec, cid, chunk.raw_len,
                           chunk.stored, chunk.checksum, keep=keep)
        change = _new_change((tenant, loc, chunk.raw_len, int(chunk.codec), 0))
        self._batch.chunks[key] = change
        self._pending_chunks[key] = change

    def _ref(self, tenant: str, cid: bytes, delta: int) -> None:
        self._ref_key(scoped_key(tenant, cid), tenant, delta)

    def _ref_key(self, key: bytes, tenant: str, delta: int) -> None:
        chunks = self._batch.chunks
        change = chunks.get(key)
        if change is None:
            chunks[key] = _new_change((tenant, None, 0, 0, delta))
            return
        new = chunks[key] = _new_change((tenant, change.new, change.raw_len, change.codec,
                                         change.refs_delta + delta))
        if self._pending_chunks.get(key) is change:  # the record this batch writes: pending as new
            self._pending_chunks[key] = new

    def current_object(self, key: bytes) -> ObjectEntry | None:
        pending = self._pending_objects.get(key)
        if pending is not None:
            return pending[0]
        with self.index.read() as txn:
            raw = txn.get(key, db=self.index.db(DB_OBJECTS))
        return ObjectEntry.decode(raw) if raw is not None else None

    def stage_object(self, tenant: str, group: str, oid: bytes, size: int,
                     metadata: bytes | None, chunks: list[tuple[bytes, int]],
                     *, prev: ObjectEntry | bool | None = False) -> tuple[ObjectEntry, bool, int]:
        """Stage the manifest of an object whose chunks are staged; return (entry, existed, ticket).

        ``prev`` is the object's current entry when the caller already looked it up (under the lock).
        """
        key = scoped_key(tenant, oid)
        with self._lock:
            self._check_usable()
            if prev is False:
                prev = self.current_object(key)
            assert prev is None or isinstance(prev, ObjectEntry)
            return self._stage_manifest(tenant, group, key, oid, size, metadata, chunks, prev)

    def _stage_manifest(self, tenant: str, group: str, key: bytes, oid: bytes, size: int,
                        metadata: bytes | None, chunks: list[tuple[bytes, int]],
                        prev: ObjectEntry | None) -> tuple[ObjectEntry, bool, int]:
        """The body of stage_object, with the lock held and the current entry looked up.

        ``metadata`` is canonical JSON (:func:`encode_metadata`), or None to keep the current one.
        """
        meta_json = metadata or b""
        if prev is not None and prev.live and (metadata is None or meta_json == prev.metadata_json):
            pending = self._pending_objects.get(key)
            return prev, True, (pending[1] if pending else 0)
        self._seq += 1
        now = time.time_ns()
        payload = encode_manifest_payload(self._seq, size, now, tenant, meta_json, chunks)
        loc = self._append(tenant, group, RecordKind.MANIFEST, 0, oid, len(payload), payload,
                           xxhash.xxh3_64_intdigest(payload))
        entry = ObjectEntry(STATE_LIVE, self._seq, size, now, loc, meta_json, tuple(chunks))
        if len(chunks) == 1 and chunks[0][0] == oid:
            self._ref_key(key, tenant, +1)  # a one-chunk object: its chunk key is its own key
        else:
            for cid, _n in chunks:
                self._ref(tenant, cid, +1)
        if prev is not None and prev.live:
            for cid, _n in prev.chunks:
                self._ref(tenant, cid, -1)
        return entry, False, self._stage_entry(key, entry)

    def stage_delete(self, tenant: str, group: str, oid: bytes) -> tuple[ObjectEntry, int] | None:
        """Stage a tombstone; return (the deleted entry, ticket) or None if there is no live object."""
        key = scoped_key(tenant, oid)
        with self._lock:
            self._check_usable()
            prev = self.current_object(key)
            if prev is None or not prev.live:
                return None
            self._seq += 1
            now = time.time_ns()
            payload = Tombstone(oid, tenant, self._seq, now).encode_payload()
            loc = self._append(tenant, group, RecordKind.TOMBSTONE, 0, oid, len(payload), payload,
                               xxhash.xxh3_64_intdigest(payload))
            for cid, _n in prev.chunks:
                self._ref(tenant, cid, -1)
            # The index keeps a deleted object's metadata, so that a follower of the change feed (the
            # DICOM catalog) knows what was deleted. Tombstones do not carry it: reindex drops it.
            entry = ObjectEntry(STATE_DELETED, self._seq, 0, now, loc, prev.metadata_json, ())
            return prev, self._stage_entry(key, entry)

    def _stage_entry(self, key: bytes, entry: ObjectEntry) -> int:
        self._batch.objects[key] = entry
        self._batch.seq = self._seq
        self._ticket += 1
        self._batch.ticket = self._ticket
        self._pending_objects[key] = _new_pending((entry, self._ticket))
        return self._ticket

    # -- group commit -----------------------------------------------------------------------------

    def barrier(self) -> int:
        """Return a ticket covering everything staged so far (chunks without manifests included)."""
        with self._lock:
            self._ticket += 1
            self._batch.ticket = self._ticket
            return self._ticket

    def request_commit(self, ticket: int) -> None:
        """Ask the commit thread to commit through ``ticket`` (returns at once)."""
        with self._cond:
            if ticket > self._requested:
                self._requested = ticket
                self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._commit_loop, name="mmarchive-commit",
                                                daemon=True)
                self._thread.start()

    def wait_durable(self, ticket: int) -> None:
        """Block until ``ticket`` is committed; raise if its commit failed."""
        if ticket <= self._durable:
            return
        self.request_commit(ticket)
        with self._cond:
            while self._durable < ticket and self._failure is None:
                self._cond.wait()
        if self._durable < ticket:
            raise StorageError(f"the commit of this write failed ({self._failure}); it was not "
                               "stored. Close and reopen the archive, then retry") from self._failure

    def is_durable(self, ticket: int) -> bool:
        return ticket <= self._durable

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while self._requested <= self._durable and not self._closing:
                    self._cond.wait()
                if self._requested <= self._durable and self._closing:
                    return
                if self._failure is not None:
                    return
            try:
                self._commit_once()
            except BaseException as e:
                self._fail(e)
                return

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = error
            self._cond.notify_all()

    def _commit_once(self) -> None:
        with self._lock:
            batch = self._batch
            self._batch = _Batch()
            taken = {pack_id: writer.take() for pack_id, writer in batch.dirty.items()}
            # Registered by this commit's transaction (an empty batch makes none).
            reserve = {} if batch.empty() else self._reservations_wanted()
        # Written and synced outside the staging lock: staging goes on meanwhile (it appends after
        # the taken bytes, at offsets of its own).
        ends = {}
        for pack_id, (offset, parts, end) in taken.items():
            writer = batch.dirty[pack_id]
            write_all(writer.fd, parts, offset, what=f"pack {writer.name}")
            ends[pack_id] = end
        for writer in batch.dirty.values():
            writer.sync()
        for pack_id in batch.new_packs:  # their names are durable before the index points into them
            self.tier.sync_directory(pack_name(pack_id))
        if not batch.empty():
            self.index.write(lambda txn: self._apply_in_turn(txn, batch, ends, reserve))
        for pack_id, end in ends.items():
            self._committed_len[pack_id] = end
        with self._lock:
            for tenant, packs in reserve.items():
                self._reserved.setdefault(tenant, []).extend(packs)
            # Answers of look_up_many() taken before this point may miss what this commit just made
            # visible and no longer pending: the new generation tells stagers to ask again.
            self._recent_commits.append((self._generation, frozenset(batch.chunks).union(batch.objects)))
            self._generation += 1
            for key, change in batch.chunks.items():
                if self._pending_chunks.get(key) is change:
                    del self._pending_chunks[key]
            for key, entry in batch.objects.items():
                pending = self._pending_objects.get(key)
                if pending is not None and pending[0] is entry:
                    del self._pending_objects[key]
        with self._cond:
            self._durable = max(self._durable, batch.ticket)
            self._cond.notify_all()
        for writer in batch.full:
            pack_id = writer.header.pack_id
            size = writer.seal()
            writer.close()
            self._mark_sealed(pack_id, size)

    def _apply_in_turn(self, txn: Any, batch: _Batch, ends: dict[bytes, int],
                       reserve: dict[str, list[tuple[bytes, int]]]) -> None:
        with self._index_turn:
            self._apply(txn, batch, ends, reserve)

    def _apply(self, txn: Any, batch: _Batch, ends: dict[bytes, int],
               reserve: dict[str, list[tuple[bytes, int]]]) -> None:
        """Apply one batch in the open write transaction (idempotent w.r.t. Python state), and register
        the packs ``reserve`` names.

        This runs once per group commit over every staged change, on the commit thread while the
        caller's thread keeps staging, so it avoids per-change objects beyond the index values.
        """
        db_o, db_c = self.index.db(DB_OBJECTS), self.index.db(DB_CHUNKS)
        db_p, db_t = self.index.db(DB_PACKS), self.index.db(DB_TENANTS)
        db_ch = self.index.db(DB_CHANGES)
        live: dict[bytes, int] = {}
        records: dict[bytes, int] = {}
        # tenant -> [objects, logical bytes, chunks, unique bytes, stored bytes] deltas
        totals: dict[str, list[int]] = {}
        hdr = RECORD_HEADER_LEN

        put, encode_chunk_entry = txn.put, ChunkEntry.encode_fields
        for key, change in batch.chunks.items():
            tenant, new, raw_len, codec, delta = change
            if new is not None:
                pack_id, _offset, stored_len = new
                records[pack_id] = records.get(pack_id, 0) + 1
                # A chunk record is written only for a key the index lacks: insert it without a
                # look-up, falling back to the general path if it is there after all. (Positional
                # arguments: dupdata, overwrite, append, db; keywords cost a third more per call.)
                if delta >= 0 and put(key, encode_chunk_entry(new, raw_len, codec, delta), True, False,
                                      False, db_c):
                    if delta:
                        live[pack_id] = live.get(pack_id, 0) + hdr + stored_len
                        t = totals.get(tenant)
                        if t is None:
                            t = totals[tenant] = [0, 0, 0, 0, 0]
                        t[2] += 1
                        t[3] += raw_len
                        t[4] += stored_len
                    continue
            raw = txn.get(key, db=db_c)
            if raw is not None:
                cur = ChunkEntry.decode(raw)
            elif new is not None:
                cur = ChunkEntry(new, raw_len, codec, 0)
            else:
                raise IntegrityError(f"chunk {key.hex()} is referenced but was never stored; run "
                                     "`mmarchive reindex`")
            refs = cur.refs + delta
            if refs < 0:
                raise IntegrityError(f"chunk {key.hex()} would get a negative reference count; "
                                     "run `mmarchive reindex`")
            if (cur.refs == 0) != (refs == 0):
                sign = 1 if refs else -1
                loc = cur.record
                live[loc.pack] = live.get(loc.pack, 0) + sign * (hdr + loc.stored_len)
                t = totals.get(tenant)
                if t is None:
                    t = totals[tenant] = [0, 0, 0, 0, 0]
                t[2] += sign
                t[3] += sign * cur.raw_len
                t[4] += sign * loc.stored_len
            if refs != cur.refs or raw is None:
                txn.put(key, ChunkEntry(cur.record, cur.raw_len, cur.codec, refs).encode(), db=db_c)

        replace_value, seq_key = txn.replace, CHANGE_SEQ.pack
        # Per tenant prefix (the key up to and with its NUL): the tenant and its totals.
        prefixes: dict[bytes, tuple[str, list[int]]] = {}
        for key, entry in batch.objects.items():
            prefix = key[:key.index(0) + 1]
            known = prefixes.get(prefix)
            if known is None:
                tenant = prefix[:-1].decode()
                t = totals.get(tenant)
                if t is None:
                    t = totals[tenant] = [0, 0, 0, 0, 0]
                known = prefixes[prefix] = (tenant, t)
            t = known[1]
            state, seq, size, _created, (pack_id, _offset, stored_len), _meta, _chunks = entry
            prev_raw = replace_value(key, entry.encode(), db_o)
            # The change feed holds each object once, under the seq of its latest change (the key is
            # change_key's, from the tenant prefix).
            put(prefix + seq_key(seq), key[len(prefix):], True, True, False, db_ch)
            if prev_raw is not None:
                prev = ObjectEntry.decode(prev_raw)
                txn.delete(prefix + seq_key(prev.seq), db=db_ch)
                prev_loc = prev.record
                live[prev_loc.pack] = live.get(prev_loc.pack, 0) - hdr - prev_loc.stored_len
                if prev.state == STATE_LIVE:
                    t[0] -= 1
                    t[1] -= prev.size
            live[pack_id] = live.get(pack_id, 0) + hdr + stored_len
            records[pack_id] = records.get(pack_id, 0) + 1
            if state == STATE_LIVE:
                t[0] += 1
                t[1] += size
        # Records of changes superseded within this batch are in the packs but not counted here;
        # the pack record count is informational (the table of contents is authoritative).

        for pack_id in set(ends) | set(live):
            raw = txn.get(pack_id, db=db_p)
            if raw is None:
                raise IntegrityError(f"pack {pack_name(pack_id)} is not registered in the index")
            cur_p = PackEntry.decode(raw)
            group = batch.new_packs.get(pack_id)
            if group is not None:  # made from a reservation: of the group it was made for
                cur_p = replace(cur_p, group=group)
            length = ends.get(pack_id, cur_p.length) if cur_p.state == PACK_OPEN else cur_p.length
            txn.put(pack_id, replace(cur_p, length=length,
                                     live_bytes=cur_p.live_bytes + live.get(pack_id, 0),
                                     records=cur_p.records + records.get(pack_id, 0)).encode(), db=db_p)

        for tenant, deltas in totals.items():
            tkey = tenant.encode()
            raw = txn.get(tkey, db=db_t)
            cur_t = TenantTotals.decode(raw) if raw is not None else TenantTotals()
            txn.put(tkey, cur_t.plus(TenantTotals(*deltas)).encode(), db=db_t)
        if batch.seq:
            txn.put(META_SEQ, batch.seq.to_bytes(8, "little"), db=self.index.db(DB_META))
        for tenant, packs in reserve.items():
            self._put_registered(txn, tenant, "", packs)  # (the group is recorded when one is used)

    # -- shutdown ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit everything staged so far and wait for it."""
        self.wait_durable(self.barrier())

    def close(self) -> None:
        """Commit what is staged, stop the commit thread, close pack files (open packs stay open)."""
        if self._failure is None and not self._closing:
            try:
                self.flush()
            except StorageError as e:
                # Nothing staged-but-unacknowledged is lost to a caller: it was never reported durable.
                log.error("final commit on close failed: %s", e)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for active in self._active.values():
                active.writer.close()
            self._active.clear()
        self._spill.shutdown()
        try:
            self._forget_reserved()
        except StorageError as e:
            log.warning("could not forget the packs reserved for writing (the next open does): %s", e)
