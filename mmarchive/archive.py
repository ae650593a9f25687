"""The public API: an :class:`Archive` composes the store, the index, the pack tier and the write path.

An archive is a directory holding ``mmarchive.toml`` (its config), ``index/`` (the LMDB index, a cache),
``packs/`` (the pack files, the truth) and ``lock`` (the writer lock). Objects are immutable byte strings
named by the BLAKE3-256 of their content and scoped by tenant; ``put`` returns only once the object is
durable. ``put_many`` streams many objects through a worker pool and reports each as soon as the group
commit that holds it is durable. Maintenance (verify, gc, reindex) lives in :mod:`mmarchive.maintenance`.
"""

from __future__ import annotations

import builtins
import datetime
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import blake3

from mmarchive.config import CONFIG_FILE, ArchiveConfig
from mmarchive.errors import (
    ArchiveStateError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from mmarchive.index.env import IndexEnv, SharedExclusiveLock
from mmarchive.index.schema import (
    DB_ACCESS,
    DB_CHANGES,
    DB_CHUNKS,
    DB_META,
    DB_OBJECTS,
    DB_PACKS,
    DB_TENANTS,
    META_ARCHIVE_ID,
    META_SCHEMA,
    SCHEMA_VERSION,
    STATE_LIVE,
    ChunkEntry,
    ObjectEntry,
    PackEntry,
    TenantTotals,
    change_key,
    check_tenant,
    object_summary,
    parse_object_id,
    scoped_key,
    split_scoped_key,
    tenant_prefix,
)
from mmarchive.maintenance.gc import collect_garbage
from mmarchive.maintenance.moves import MovesFinished, PackMove, finish_moves, move_pack, pending_moves
from mmarchive.maintenance.reindex import rebuild_index, recover_index_directory
from mmarchive.maintenance.replicas import add_replica, all_replicas, drop_replica, repair_pack
from mmarchive.maintenance.verify import verify_archive
from mmarchive.objectio import ObjectReader
from mmarchive.pack.format import RecordHeader, RecordKind, encode_metadata, pack_id_from_name, pack_name
from mmarchive.pack.reader import read_record
from mmarchive.readahead import ReadAhead
from mmarchive.records import (
    ArchiveStats,
    GcReport,
    ObjectChange,
    ObjectInfo,
    PackInfo,
    StoredObject,
    TierUsage,
    VerifyReport,
    tuple_maker,
)
from mmarchive.store.chunking import Chunker
from mmarchive.store.chunks import PreparedChunk, content_id, content_ids, encode_chunk, encode_small_chunks
from mmarchive.store.codec import CodecSet
from mmarchive.store.sources import ObjectBytes, Source, as_bytes, object_bytes, open_source
from mmarchive.tiers.base import PackFile
from mmarchive.tiers.local import LocalTier, fsync_directory
from mmarchive.tiers.recall import RECALL_DIR, RecallCache, RecallStats
from mmarchive.tiers.tierset import TierSet
from mmarchive.writepath import IndexView, PreparedPart, WritePath
from mmarchive.writerlock import WriterLock

if TYPE_CHECKING:
    from mmarchive.lifecycle.guard import LifecycleGuard

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
_MAX_GROUP = 200
#: put_many stages at most this many commits' bytes (``[index] commit_bytes``) beyond the last object it
#: reported durable, then waits for the commit thread: staging much further ahead of the device only
#: holds memory (the write path reserves packs for about that much; see writepath._RESERVE).
_AHEAD_COMMITS = 4
_LIST_PAGE = 1000
#: Live objects per read transaction of scan_objects.
_SCAN_PAGE = 10_000


@dataclass(frozen=True)
class PutItem:
    """One object for :meth:`Archive.put_many`, with its own tenant, metadata or group if needed."""

    source: Source
    tenant: str | None = None
    metadata: Mapping[str, Any] | None = None
    group: str | None = None
    name: str | None = None  # how to report the source (a path, "stdin")
    cuts: tuple[int, ...] = ()  # where the caller cuts a bytes source into separately stored pieces


class _PartedObject(NamedTuple):
    """A small object the caller cut into pieces: its id, size, prepared pieces and index view."""

    oid: bytes
    size: int
    parts: list[PreparedPart]
    seen: IndexView


# A small object prepared for staging: whole (its one chunk, whose id is the object's) or in pieces.
_Prepared = PreparedPart | _PartedObject


class _StagedObject(NamedTuple):
    """An object put_many staged: its info, yielded once its ticket is durable."""

    info: ObjectInfo
    ticket: int


# Record constructors for the per-object path of put_many (see tuple_maker).
_new_part = tuple_maker(PreparedPart)
_new_info = tuple_maker(ObjectInfo)
_new_staged = tuple_maker(_StagedObject)


def _pieces(view: memoryview, cuts: tuple[int, ...]) -> list[memoryview]:
    """``view`` cut at ``cuts`` (sorted offsets within it); empty pieces are dropped."""
    pieces: list[memoryview] = []
    start = 0
    for cut in (*cuts, len(view)):
        if not isinstance(cut, int) or cut < start or cut > len(view):
            raise InvalidInputError(f"cuts {cuts!r} must be sorted offsets between 0 and the object's "
                                    f"size ({len(view)} bytes)")
        if cut > start:
            pieces.append(view[start:cut])
        start = cut
    return pieces


def _check_group(group: str) -> str:
    if not isinstance(group, str) or len(group) > _MAX_GROUP or any(ord(c) < 32 for c in group):
        raise InvalidInputError(f"group {group!r} must be a string of at most {_MAX_GROUP} printable "
                                "characters")
    return group


class Archive:
    """An open archive. Use :meth:`create` or :meth:`open`, ideally as a context manager."""

    def __init__(self, path: Path, config: ArchiveConfig, *, readonly: bool,
                 creating: bool = False) -> None:
        self.path = path
        self.config = config
        self.readonly = readonly
        self._lock: WriterLock | None = None
        if not readonly:
            self._lock = WriterLock(path / "lock")
            self._lock.acquire()
        index: IndexEnv | None = None
        try:
            self.tiers = TierSet(path, config.tiers)
            #: The tier new packs land on (a local directory).
            self.tier: LocalTier = self.tiers.landing
            self.codecs = CodecSet(config.store.compression, config.store.zstd_level)
            self.chunker = Chunker(config.store)
            # A new archive has nothing to recover (and must not list its remote tiers to find that out).
            lost = not creating and recover_index_directory(path / "index", self.tiers,
                                                            readonly=readonly)
            self.index = index = IndexEnv(path / "index", config.index, readonly=readonly)
            if lost:
                log.warning("the index of %s was missing; rebuilding it from the packs", path)
                rebuild_index(self)
            self._check_identity()
            #: Copies of recently read packs of colder tiers on the landing tier's disk ([recall]).
            self.recall = RecallCache(path / RECALL_DIR, config.recall, known=self._recall_known)
            self._write: WritePath | None = None
            if not readonly:
                self._write = WritePath(self.index, self.tier, config.store)
        except BaseException:
            if index is not None:
                index.close()
            if self._lock is not None:
                self._lock.release()
            raise
        self._maintenance = SharedExclusiveLock()
        self._pool: ThreadPoolExecutor | None = None
        self._worker_count = max(2, os.cpu_count() or 2)
        self._hasher_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        #: Objects read since the last flush of the access table: scoped key -> UTC day number.
        self._accessed: dict[bytes, int] = {}
        self._access_lock = threading.Lock()
        self._access_flushed = time.monotonic()
        self._guard: LifecycleGuard | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], config: ArchiveConfig | None = None) -> Archive:
        """Create a new, empty archive at ``path`` (which must not hold one) and open it for writing."""
        root = Path(path)
        cfg = config or ArchiveConfig()
        cfg.validate()
        if (root / CONFIG_FILE).exists():
            raise InvalidInputError(f"{root} already holds an archive; open it instead")
        if root.exists() and any(root.iterdir()):
            raise InvalidInputError(f"{root} exists and is not empty; choose a new or empty directory")
        root.mkdir(parents=True, exist_ok=True)
        (root / "packs").mkdir(exist_ok=True)
        tmp = root / (CONFIG_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write(cfg.to_toml())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / CONFIG_FILE)
        fsync_directory(root)
        return cls(root, cfg, readonly=False, creating=True)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> Archive:
        """Open an existing archive; for writing unless ``readonly`` (readers need no lock)."""
        root = Path(path)
        cfg_path = root / CONFIG_FILE
        if not cfg_path.exists():
            raise NotFoundError(f"no archive at {root} (no {CONFIG_FILE}); create one with "
                                "`mmarchive init`")
        return cls(root, ArchiveConfig.load(cfg_path), readonly=readonly)

    def _check_identity(self) -> None:
        with self.index.read() as txn:
            aid = txn.get(META_ARCHIVE_ID, db=self.index.db(DB_META))
            schema = txn.get(META_SCHEMA, db=self.index.db(DB_META))
        if aid is None and not self.readonly:
            def init(txn: Any) -> None:
                txn.put(META_ARCHIVE_ID, self.config.archive_id.encode(), db=self.index.db(DB_META))
                txn.put(META_SCHEMA, str(SCHEMA_VERSION).encode(), db=self.index.db(DB_META))
            self.index.write(init)
            return
        if aid is not None and aid.decode() != self.config.archive_id:
            raise IntegrityError(f"the index in {self.path} belongs to archive {aid.decode()}, not "
                                 f"{self.config.archive_id}; rebuild it with `mmarchive reindex`")
        if schema is not None and int(schema) > SCHEMA_VERSION:
            raise ArchiveStateError(f"the index in {self.path} has schema {int(schema)}, newer than this "
                                    f"mmarchive reads ({SCHEMA_VERSION}); upgrade mmarchive")
        if schema in (b"1", b"2") and not self.readonly:
            db_o, db_ch, db_m = (self.index.db(DB_OBJECTS), self.index.db(DB_CHANGES),
                                 self.index.db(DB_META))

            def upgrade(txn: Any) -> None:
                if schema == b"1":  # schema 2 added the change feed; 3 only a database (moves)
                    for key, value in txn.cursor(db=db_o):
                        tenant, oid = split_scoped_key(key)
                        txn.put(change_key(tenant, ObjectEntry.decode(value).seq), oid, db=db_ch)
                txn.put(META_SCHEMA, str(SCHEMA_VERSION).encode(), db=db_m)
            self.index.write(upgrade)
            log.info("upgraded the index in %s from schema %s to %d", self.path, schema.decode(),
                     SCHEMA_VERSION)
        elif schema == b"1":
            raise ArchiveStateError(f"the index in {self.path} predates the change feed (schema 1); "
                                    "open the archive for writing once to upgrade it")

    def close(self) -> None:
        """Commit what is staged, release the writer lock and close everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for pool in (self._pool, self._hasher_pool):
                if pool is not None:
                    pool.shutdown(wait=True)
            if self._write is not None:
                self._write.close()
                self._flush_access()
            self.recall.close()
            self.tiers.close()
            self.index.close()
            if self._guard is not None:
                self._guard.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _writer(self) -> WritePath:
        if self._closed:
            raise ArchiveStateError("the archive is closed")
        if self._write is None:
            raise ArchiveStateError("the archive is open read-only; open it without readonly=True "
                                    "to write")
        return self._write

    def _object_hasher(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._hasher_pool is None:
                self._hasher_pool = ThreadPoolExecutor(max_workers=1,
                                                       thread_name_prefix="mmarchive-object-hash")
            return self._hasher_pool

    def _workers(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._worker_count,
                                                thread_name_prefix="mmarchive-prepare")
            return self._pool

    # -- writing ----------------------------------------------------------------------------------

    def put(self, source: Source, *, tenant: str = DEFAULT_TENANT,
            metadata: Mapping[str, Any] | None = None, group: str = "",
            cuts: tuple[int, ...] = ()) -> ObjectInfo:
        """Store one object and return once it is durable.

        ``source`` is bytes, a binary file object, a path, or an iterable of bytes. ``metadata`` is a
        JSON-serialisable mapping kept with the object; ``group`` keeps objects that age together (a
        study, a series) in the same packs. Storing bytes that the tenant already holds writes nothing
        new and returns ``already_stored=True`` (with new ``metadata``, a new manifest is written).

        ``cuts`` (bytes sources only) are offsets where the caller knows the content changes, such as
        where a file's header ends and its pixel data begins: each piece between cuts is stored as
        content of its own (and cut further if large), so the same piece in another object is stored
        once. The object, its id and what :meth:`get` returns are unchanged by cuts.
        """
        check_tenant(tenant)
        _check_group(group)
        write = self._writer()
        with self._maintenance.shared():
            info, ticket = self._put_one(source, tenant, group, metadata, name=None, cuts=cuts)
            write.wait_durable(ticket)
        return info

    def put_many(self, items: Iterable[Source | PutItem], *, tenant: str = DEFAULT_TENANT,
                 metadata: Mapping[str, Any] | None = None, group: str = "") -> Iterator[ObjectInfo]:
        """Store many objects, yielding each one's info, in input order, once it is durable.

        Hashing and compression of objects of ``parallel_threshold`` bytes or more run on a worker
        pool, in batches; smaller ones are prepared on the calling thread. Commits are grouped (see
        ``[index]`` in the config). An object is reported only after the commit that holds it; if
        the caller stops iterating early, what was staged is still committed when the archive closes.
        """
        check_tenant(tenant)
        _check_group(group)
        write = self._writer()
        cfg_i = self.config.index
        threshold = self.config.store.chunk_threshold
        inline_below = self.config.store.parallel_threshold
        batch_bytes_max = max(inline_below, 2 * 1024 * 1024)
        pool = self._workers()
        max_window = self._worker_count + 2
        # Batches of small objects being prepared on the pool, staged in input order.
        window: deque[tuple[Future[list[_Prepared]], list[PutItem | None]]] = deque()
        batch_views: list[tuple[ObjectBytes, str, tuple[int, ...]]] = []
        batch_items: list[PutItem | None] = []  # None: a plain source with the call's defaults
        default_meta = _plain_metadata(metadata)
        batch_bytes = 0
        batch_parallel = False  # whether the batch holds an object worth the worker pool
        done: deque[_StagedObject] = deque()
        staged_objects = staged_bytes = 0
        waiting_bytes = 0  # bytes of the objects in done
        waiting_max = _AHEAD_COMMITS * cfg_i.commit_bytes
        last_request = time.monotonic()

        def submit_batch() -> None:
            nonlocal batch_views, batch_items, batch_bytes, batch_parallel
            if not batch_items:
                return
            if batch_parallel:
                window.append((pool.submit(self._prepare_many, batch_views), batch_items))
            else:
                window.append((self._prepare_small_batch(batch_views, pool), batch_items))
            batch_views, batch_items, batch_bytes, batch_parallel = [], [], 0, False

        def staged(info: ObjectInfo, ticket: int) -> None:
            nonlocal staged_objects, staged_bytes, waiting_bytes
            done.append(_new_staged((info, ticket)))
            staged_objects += 1
            staged_bytes += info.size
            waiting_bytes += info.size

        def stage_window_head() -> None:
            fut, batch = window.popleft()
            preps = fut.result()
            whole = [prep for prep in preps if isinstance(prep, PreparedPart)]
            if len(whole) == len(preps) and not any(batch):
                # Whole objects with the call's tenant, group and metadata: staged as one batch.
                for (entry, existed, ticket), part in zip(
                        write.stage_whole_objects(tenant, group, whole, self.codecs, default_meta), whole,
                        strict=True):
                    staged(self._info(tenant, part.cid, entry, already=existed), ticket)
                return
            for prep, item in zip(preps, batch, strict=True):
                if item is None:
                    info, ticket = self._stage_small(prep, tenant, group, default_meta, None)
                else:
                    info, ticket = self._stage_small(
                        prep, item.tenant or tenant, item.group or group,
                        _plain_metadata(_metadata(item, metadata)), item.name)
                staged(info, ticket)

        with self._maintenance.shared():
            for raw in items:
                if isinstance(raw, PutItem):
                    item: PutItem | None = raw
                    if raw.tenant is not None:
                        check_tenant(raw.tenant)
                    if raw.group is not None:
                        _check_group(raw.group)
                    source = raw.source
                    item_tenant = raw.tenant or tenant
                    cuts = raw.cuts
                else:
                    item, source, item_tenant, cuts = None, raw, tenant, ()
                view = object_bytes(source)
                if view is not None and len(view) <= threshold:
                    batch_views.append((view, item_tenant, cuts))
                    batch_items.append(item)
                    batch_bytes += len(view)
                    if len(view) >= inline_below:
                        batch_parallel = True
                    if len(batch_items) >= 64 or batch_bytes >= batch_bytes_max:
                        submit_batch()
                    while len(window) > max_window:
                        stage_window_head()
                else:
                    submit_batch()
                    while window:
                        stage_window_head()
                    item = item or PutItem(source)
                    info, ticket = self._put_one(source, item_tenant, item.group or group,
                                                 _metadata(item, metadata), name=item.name, cuts=cuts)
                    staged(info, ticket)
                now = time.monotonic()
                if done and (staged_objects >= cfg_i.commit_objects
                             or staged_bytes >= cfg_i.commit_bytes or now - last_request > 1.0):
                    write.request_commit(done[-1][1])
                    staged_objects = staged_bytes = 0
                    last_request = now
                if waiting_bytes > waiting_max:
                    write.wait_durable(done[0][1])
                while done and write.is_durable(done[0][1]):
                    info = done.popleft()[0]
                    waiting_bytes -= info.size
                    yield info
            submit_batch()
            while window:
                stage_window_head()
            if done:
                write.wait_durable(max(t for _i, t in done))
            while done:
                yield done.popleft()[0]

    def _look_up_whole(self, views: list[tuple[ObjectBytes, str, tuple[int, ...]]]
                       ) -> tuple[list[bytes], list[IndexView]]:
        """The content ids of whole objects and what the index holds for them (one read transaction)."""
        write = self._write
        assert write is not None
        cids = content_ids([view for view, _tenant, _cuts in views])
        return cids, write.look_up_many([scoped_key(tenant, cid)
                                         for cid, (_view, tenant, _cuts) in zip(cids, views, strict=True)])

    def _prepare_many(self, views: list[tuple[ObjectBytes, str, tuple[int, ...]]]) -> list[_Prepared]:
        """Hash (and compress unless stored) a batch of small objects, with one index look-up.

        Compressing only what is not stored yet makes a resend cost one hash and one look-up.
        """
        if any(cuts for _view, _tenant, cuts in views):
            return self._prepare_parted(views)
        cids, seen = self._look_up_whole(views)
        codecs = self.codecs
        return [PreparedPart(cid, view, None if s.chunk_known else encode_chunk(codecs, cid, view), s)
                for cid, (view, _tenant, _cuts), s in zip(cids, views, seen, strict=True)]

    def _prepare_small_batch(self, views: list[tuple[ObjectBytes, str, tuple[int, ...]]],
                             pool: ThreadPoolExecutor) -> Future[list[_Prepared]]:
        """Prepare a batch of objects under ``parallel_threshold``: compression on the pool.

        Hashing and the index look-up take microseconds per object and run here; handing each to
        another thread would cost more in GIL hand-offs than it saves. Compression is most of the
        work, and zstd does the whole batch in one call without the GIL, so it runs on the pool
        while this thread stages the batches before it.
        """
        done: Future[list[_Prepared]] = Future()
        if any(cuts for _view, _tenant, cuts in views):
            done.set_result(self._prepare_parted(views))
            return done
        cids, seen = self._look_up_whole(views)
        new = [i for i, s in enumerate(seen) if not s.chunk_known]
        if not new or self.codecs.mode == "none":
            done.set_result(self._prepared_parts(cids, views, seen, new))
            return done
        return pool.submit(self._prepared_parts, cids, views, seen, new)

    def _prepared_parts(self, cids: list[bytes], views: list[tuple[ObjectBytes, str, tuple[int, ...]]],
                        seen: list[IndexView], new: list[int]) -> list[_Prepared]:
        """Whole small objects with the records of those at ``new`` encoded in one batch."""
        chunks: list[PreparedChunk | None] = [None] * len(views)
        encoded = encode_small_chunks(self.codecs, [cids[i] for i in new], [views[i][0] for i in new])
        for i, chunk in zip(new, encoded, strict=True):
            chunks[i] = chunk
        return [_new_part((cid, view, chunk, s))
                for cid, (view, _tenant, _cuts), chunk, s in zip(cids, views, chunks, seen, strict=True)]

    def _prepare_parted(self, views: list[tuple[ObjectBytes, str, tuple[int, ...]]]) -> list[_Prepared]:
        """Like :meth:`_prepare_many`, for a batch in which some objects come cut into pieces.

        One look-up per object key, and one per piece of the cut objects (an uncut object's one
        piece is the object itself).
        """
        write = self._write
        assert write is not None
        plans: list[tuple[bytes, list[tuple[bytes, memoryview]]]] = []
        for view, _tenant, cuts in views:
            plans.append((content_id(view),
                          [(content_id(p), p) for p in _pieces(memoryview(view), cuts)] if cuts else []))
        objects_seen = write.look_up_many([scoped_key(tenant, oid)
                                           for (_v, tenant, _c), (oid, _p) in zip(views, plans, strict=True)])
        pieces_seen = iter(write.look_up_many([scoped_key(tenant, cid)
                                               for (_v, tenant, _c), (_o, pieces) in zip(views, plans,
                                                                                         strict=True)
                                               for cid, _piece in pieces]))
        codecs = self.codecs

        def prepared(cid: bytes, data: ObjectBytes, s: IndexView) -> PreparedPart:
            return PreparedPart(cid, data, None if s.chunk_known else encode_chunk(codecs, cid, data), s)

        out: list[_Prepared] = []
        for (view, _tenant, _cuts), (oid, pieces), seen_object in zip(views, plans, objects_seen,
                                                                      strict=True):
            if not pieces:
                out.append(prepared(oid, view, seen_object))
            else:
                out.append(_PartedObject(oid, len(view), [prepared(cid, piece, next(pieces_seen))
                                                          for cid, piece in pieces], seen_object))
        return out

    def _prepare_chunk(self, view: memoryview, tenant: str) -> PreparedPart:
        """Hash one chunk of a large object, and compress it unless the tenant already stores it."""
        cid = content_id(view)
        write = self._write
        assert write is not None
        known = write.chunk_known(scoped_key(tenant, cid))
        return PreparedPart(cid, view, None if known else encode_chunk(self.codecs, cid, view))

    def _stage_small(self, prep: _Prepared, tenant: str, group: str,
                     metadata: bytes | None, name: str | None) -> tuple[ObjectInfo, int]:
        """Stage a prepared small object; ``metadata`` is already plain (see _plain_metadata)."""
        write = self._writer()
        if isinstance(prep, _PartedObject):
            entry, existed, ticket = write.stage_parted_object(
                tenant, group, prep.oid, prep.size, prep.parts, self.codecs, metadata, prep.seen)
            return self._info(tenant, prep.oid, entry, already=existed, source=name), ticket
        entry, existed, ticket = write.stage_whole_object(
            tenant, group, prep.cid, prep.view, prep.chunk, self.codecs, metadata, prep.seen)
        return self._info(tenant, prep.cid, entry, already=existed, source=name), ticket

    def _put_one(self, source: Source, tenant: str, group: str,
                 metadata: Mapping[str, Any] | None, *, name: str | None,
                 cuts: tuple[int, ...] = ()) -> tuple[ObjectInfo, int]:
        threshold = self.config.store.chunk_threshold
        view = as_bytes(source)
        if cuts and view is None:
            raise InvalidInputError("cuts apply to a bytes source only; read the object into memory "
                                    "or store it without cuts")
        if view is not None and len(view) <= threshold:
            prep = self._prepare_many([(view, tenant, tuple(cuts))])[0]
            return self._stage_small(prep, tenant, group, _plain_metadata(metadata), name or "bytes")
        close_me = None
        if view is not None:
            stream_desc = name or "bytes"
        else:
            stream, desc, close_me = open_source(source)
            stream_desc = name or desc
        try:
            if view is None:
                head = stream.read(threshold + 1)
                if len(head) <= threshold:
                    prep = self._prepare_many([(memoryview(head), tenant, ())])[0]
                    return self._stage_small(prep, tenant, group, _plain_metadata(metadata), stream_desc)
                pieces: Iterator[bytes | memoryview] = self.chunker.cut_stream(stream, head)
            elif cuts:
                pieces = itertools.chain.from_iterable(
                    self.chunker.cut_buffer(p) if len(p) > threshold else (p,)
                    for p in _pieces(view, tuple(cuts)))
            else:
                pieces = self.chunker.cut_buffer(view)
            # Reading and chunking walk the stream in order on a thread of their own, a few chunks
            # ahead of the hashing, compression and pack writes that the staging below drives.
            with ReadAhead[bytes | memoryview](pieces, depth=2) as ahead:
                return self._stage_chunked(ahead, tenant, group, metadata, stream_desc)
        finally:
            if close_me is not None:
                close_me.close()

    def _stage_chunked(self, pieces: Iterable[bytes | memoryview], tenant: str, group: str,
                       metadata: Mapping[str, Any] | None, name: str) -> tuple[ObjectInfo, int]:
        write = self._writer()
        hasher = blake3.blake3()
        chunks: list[tuple[bytes, int]] = []
        size = 0
        inflight: deque[Future[PreparedPart]] = deque()
        hashing: deque[Future[Any]] = deque()
        pool = self._workers()
        # The whole-object BLAKE3 (the object id) must see the chunks in order: one thread of its own
        # runs it beside the workers that hash and compress each chunk.
        object_hasher = self._object_hasher()

        def stage(prep: PreparedPart) -> None:
            write.stage_chunk(tenant, group, prep.cid, prep.view, prep.chunk, self.codecs)

        for piece in pieces:
            view = memoryview(piece)
            size += len(view)
            hashing.append(object_hasher.submit(hasher.update, view))
            inflight.append(pool.submit(self._prepare_chunk, view, tenant))
            while len(inflight) > 3:  # bounded: a few chunks in memory, whatever the object size
                prep = inflight.popleft().result()
                stage(prep)
                chunks.append((prep.cid, len(prep.view)))
            while len(hashing) > 3:
                hashing.popleft().result()
        while inflight:
            prep = inflight.popleft().result()
            stage(prep)
            chunks.append((prep.cid, len(prep.view)))
        while hashing:
            hashing.popleft().result()
        oid = hasher.digest()
        entry, existed, ticket = write.stage_object(tenant, group, oid, size,
                                                    _plain_metadata(metadata), chunks)
        return self._info(tenant, oid, entry, already=existed, source=name), ticket

    def delete(self, object_id: str, *, tenant: str = DEFAULT_TENANT, actor: str | None = None,
               reason: str | None = None, audit_action: str = "object.delete") -> ObjectInfo:
        """Delete an object logically (its bytes are reclaimed by :meth:`gc`); return what it was.

        Refused with :class:`RetentionError`, naming the hold or rule, while a legal hold or a retention
        rule of the archive's lifecycle policy keeps the object. Every deletion and refusal is appended
        to the audit log with ``actor`` (default: the OS user) and ``reason``.
        """
        write = self._writer()
        oid, entry = self._entry(tenant, object_id)
        guard = self.lifecycle
        facts = guard.object_facts(tenant, object_id, entry.size, entry.created_ns, entry.metadata_json,
                                   self._pack_tier(entry.record.pack))
        with guard.deleting(facts, actor=actor, reason=reason, action=audit_action), \
                self._maintenance.shared():
            staged = write.stage_delete(tenant, "", oid)
            if staged is None:
                raise NotFoundError(f"object {object_id} does not exist in tenant {tenant!r}")
            prev, ticket = staged
            write.wait_durable(ticket)
        return self._info(tenant, oid, prev)

    @property
    def lifecycle(self) -> LifecycleGuard:
        """The archive's lifecycle policy, legal holds and audit log (built on first use)."""
        guard = self._guard
        if guard is None:
            from mmarchive.lifecycle.guard import LifecycleGuard

            with self._pool_lock:
                if self._guard is None:
                    self._guard = LifecycleGuard(self.path, self.config.lifecycle, self.tiers.names)
                guard = self._guard
        return guard

    def _pack_tier(self, pack_id: bytes) -> str:
        with self.index.read() as txn:
            raw = txn.get(pack_id, db=self.index.db(DB_PACKS))
        return PackEntry.decode(raw).tier if raw is not None else self.tier.name

    def flush(self) -> None:
        """Make everything staged so far durable (put and delete already wait; put_many may not)."""
        self._writer().flush()

    # -- reading ----------------------------------------------------------------------------------

    def _entry(self, tenant: str, object_id: str) -> tuple[bytes, ObjectEntry]:
        check_tenant(tenant)
        oid = parse_object_id(object_id)
        if self._closed:
            raise ArchiveStateError("the archive is closed")
        with self.index.read() as txn:
            raw = txn.get(scoped_key(tenant, oid), db=self.index.db(DB_OBJECTS))
        entry = ObjectEntry.decode(raw) if raw is not None else None
        if entry is None or not entry.live:
            raise NotFoundError(f"object {object_id} does not exist in tenant {tenant!r}"
                                + (" (it was deleted)" if entry is not None else ""))
        return oid, entry

    def _info(self, tenant: str, oid: bytes, entry: ObjectEntry, *, already: bool = False,
              source: str | None = None) -> ObjectInfo:
        return _new_info((tenant, oid.hex(), entry.size, entry.created_ns, entry.metadata_json,
                          len(entry.chunks), already, source, entry.seq))

    def stat(self, object_id: str, *, tenant: str = DEFAULT_TENANT) -> ObjectInfo:
        oid, entry = self._entry(tenant, object_id)
        return self._info(tenant, oid, entry)

    def exists(self, object_id: str, *, tenant: str = DEFAULT_TENANT) -> bool:
        try:
            self._entry(tenant, object_id)
        except NotFoundError:
            return False
        return True

    def open_object(self, object_id: str, *, tenant: str = DEFAULT_TENANT) -> Any:
        """Return a seekable, streaming, verifying binary file object over the object's bytes."""
        oid, entry = self._entry(tenant, object_id)
        if self._write is not None:
            self._note_access(scoped_key(tenant, oid))
        if entry.size == 0 and oid != blake3.blake3(b"").digest():
            raise IntegrityError(f"object {object_id}: empty but its id is not the empty hash",
                                 object_id=object_id)
        return ObjectReader(oid, entry.size, entry.chunks,
                            lambda cid, n: self._fetch_chunk(tenant, cid, n),
                            describe=f"object {object_id} (tenant {tenant})")

    def get(self, object_id: str, *, tenant: str = DEFAULT_TENANT) -> bytes:
        """Return the object's bytes, fully verified. Use :meth:`open` for large objects."""
        with self.open_object(object_id, tenant=tenant) as reader:
            data: bytes = reader.readall()
            return data

    # -- last access (for lifecycle rules and capacity eviction; advisory, day resolution) -----------

    _ACCESS_FLUSH_OBJECTS = 1024
    _ACCESS_FLUSH_S = 30.0

    def _note_access(self, key: bytes) -> None:
        day = int(time.time() // 86400)
        with self._access_lock:
            if self._accessed.get(key) == day:
                return
            self._accessed[key] = day
            due = (len(self._accessed) >= self._ACCESS_FLUSH_OBJECTS
                   or time.monotonic() - self._access_flushed > self._ACCESS_FLUSH_S)
        if due:
            self._flush_access()

    def _flush_access(self) -> None:
        with self._access_lock:
            taken, self._accessed = self._accessed, {}
            self._access_flushed = time.monotonic()
        if not taken:
            return
        db = self.index.db(DB_ACCESS)

        def apply(txn: Any) -> None:
            for key, day in taken.items():
                value = day.to_bytes(4, "little")
                if txn.get(key, db=db) != value:
                    txn.put(key, value, db=db)

        self.index.write(apply)

    def last_access(self, object_id: str, *, tenant: str = DEFAULT_TENANT) -> datetime.date | None:
        """The UTC day this object was last read through a writable handle, or None if never."""
        key = scoped_key(check_tenant(tenant), parse_object_id(object_id))
        with self._access_lock:
            day = self._accessed.get(key)
        if day is None:
            with self.index.read() as txn:
                raw = txn.get(key, db=self.index.db(DB_ACCESS))
            if raw is None:
                return None
            day = int.from_bytes(raw, "little")
        return datetime.date(1970, 1, 1) + datetime.timedelta(days=day)

    def _locate_chunk(self, tenant: str, cid: bytes) -> tuple[ChunkEntry, str, int]:
        """The chunk's index entry, the tier its pack is on and, when that is a sealed pack on a colder
        tier, the pack's size (else 0), read in one transaction."""
        with self.index.read() as txn:
            raw = txn.get(scoped_key(tenant, cid), db=self.index.db(DB_CHUNKS))
            if raw is None:
                raise IntegrityError(f"chunk {cid.hex()} is not in the index; run `mmarchive verify`, "
                                     "then `mmarchive reindex`")
            chunk = ChunkEntry.decode(raw)
            pack = txn.get(chunk.record.pack, db=self.index.db(DB_PACKS))
        if pack is None:
            return chunk, self.tier.name, 0
        entry = PackEntry.decode(pack)
        return chunk, entry.tier, (entry.length if entry.sealed and entry.tier != self.tier.name else 0)

    def _fetch_chunk(self, tenant: str, cid: bytes, raw_len: int) -> bytes:
        chunk, tier_name, cold_size = self._locate_chunk(tenant, cid)
        name = pack_name(chunk.record.pack)

        def read(src: PackFile) -> tuple[RecordHeader, bytes]:
            return read_record(src, chunk.record.offset, chunk.record.stored_len,
                               kind=RecordKind.CHUNK, rid=cid)

        # Only a pack the index places (sealed) on a colder tier is looked for in the recall cache; a
        # damaged cached copy is dropped there and the record read from the tier.
        got = self.recall.read(name, cold_size, read) if cold_size else None
        if got is None:
            try:
                with self.tiers.get(tier_name).reader(name, size=cold_size or None) as src:
                    got = read(src)
            except IntegrityError:
                # The pack may have moved to another tier or been repacked since the look-up (and its
                # old copy been removed after the move's grace period): look again once.
                again = self._locate_chunk(tenant, cid)
                if again[:2] == (chunk, tier_name):
                    raise
                chunk, tier_name, cold_size = again
                with self.tiers.get(tier_name).reader(pack_name(chunk.record.pack),
                                                      size=cold_size or None) as src:
                    got = read(src)
            if cold_size:  # an access of the pack: the cache fetches it in the background when due
                self.recall.note_read(pack_name(chunk.record.pack), self.tiers.get(tier_name), cold_size)
        head, payload = got
        if head.raw_len != raw_len:
            raise IntegrityError(f"pack {name}: chunk {cid.hex()} has {head.raw_len} bytes, the "
                                 f"manifest says {raw_len}", pack=name)
        return self.codecs.decode(head.codec, payload, raw_len,
                                  where=f"pack {name}, chunk {cid.hex()}")

    def _recall_known(self, names: builtins.list[str]) -> dict[str, int]:
        """Of these pack names, those the index places, sealed, on a colder tier, with their sizes."""
        out: dict[str, int] = {}
        with self.index.read() as txn:
            db = self.index.db(DB_PACKS)
            for name in names:
                pack_id = pack_id_from_name(name)
                raw = txn.get(pack_id, db=db) if pack_id is not None else None
                if raw is not None:
                    entry = PackEntry.decode(raw)
                    if entry.sealed and entry.tier != self.tier.name:
                        out[name] = entry.length
        return out

    def recall_stats(self) -> RecallStats:
        """What the recall cache ([recall] in the config) did since this handle opened, and holds now."""
        return self.recall.stats()

    def list(self, *, tenant: str = DEFAULT_TENANT, limit: int | None = None,
             after: str | None = None) -> Iterator[ObjectInfo]:
        """Yield the tenant's live objects in id order (short read transactions, page by page)."""
        check_tenant(tenant)
        prefix = tenant_prefix(tenant)
        start = prefix + (parse_object_id(after) if after else b"")
        skip_first = after is not None
        count = 0
        while True:
            page: list[tuple[bytes, bytes]] = []
            with self.index.read() as txn:
                cur = txn.cursor(db=self.index.db(DB_OBJECTS))
                if cur.set_range(start):
                    for key, value in cur:
                        if not key.startswith(prefix):
                            break
                        if skip_first and key == start:
                            continue
                        page.append((key, value))
                        if len(page) >= _LIST_PAGE:
                            break
            if not page:
                return
            for key, value in page:
                entry = ObjectEntry.decode(value)
                if entry.live:
                    yield self._info(tenant, key[len(prefix):], entry)
                    count += 1
                    if limit is not None and count >= limit:
                        return
            start = page[-1][0]
            skip_first = True
            if len(page) < _LIST_PAGE:
                return

    def scan_objects(self, *, tenant: str | None = None) -> Iterator[StoredObject]:
        """Yield every live object (of one tenant, or all) with what the lifecycle needs, in key order.

        Reads in pages of short transactions, so a scan of millions of objects never pins the index.
        """
        for page in self.scan_object_rows(tenant=tenant):
            for key, value, raw_day in page:
                state, size, created, pack, meta = object_summary(value)
                if state == STATE_LIVE:
                    cut = key.index(b"\x00")
                    yield StoredObject(key[:cut].decode(), key[cut + 1:].hex(), size, created, meta, pack,
                                       int.from_bytes(raw_day, "little") if raw_day is not None else None)

    def scan_object_rows(self, *, tenant: str | None = None, start: bytes = b"", stop: bytes | None = None
                         ) -> Iterator[builtins.list[tuple[bytes, bytes, bytes | None]]]:
        """The raw form of :meth:`scan_objects`, for whole-archive passes that must be cheap per object.

        Yields pages of (object key, encoded entry, last-access day as 4 bytes or None), in key order,
        deleted objects included; decode entries with :func:`mmarchive.index.schema.object_summary`.
        ``start`` (inclusive) and ``stop`` (exclusive) bound the keys, so passes can share the table.
        """
        prefix = tenant_prefix(check_tenant(tenant)) if tenant is not None else b""
        start = max(start, prefix)
        skip_first = False
        db_o = self.index.db(DB_OBJECTS)
        try:
            db_a: Any = self.index.db(DB_ACCESS)
        except StorageError:
            db_a = None  # a read-only handle on an index that predates the access table
        while True:
            page: builtins.list[tuple[bytes, bytes, bytes | None]] = []
            with self.index.read() as txn:
                cur = txn.cursor(db=db_o)
                if not cur.set_range(start):
                    return
                get_access = txn.cursor(db=db_a).get if db_a is not None else None
                for key, value in cur:
                    if not key.startswith(prefix) or (stop is not None and key >= stop):
                        break
                    if skip_first and key == start:
                        continue
                    page.append((key, value, get_access(key) if get_access is not None else None))
                    if len(page) >= _SCAN_PAGE:
                        break
            if page:
                yield page
            if len(page) < _SCAN_PAGE:
                return
            start, skip_first = page[-1][0], True

    def changes(self, *, tenant: str = DEFAULT_TENANT, after: int = 0,
                limit: int = 1000) -> builtins.list[ObjectChange]:
        """The tenant's objects changed (stored, re-stored with new metadata, deleted) after ``after``.

        In seq order, at most ``limit``. Each object appears once, at its latest change, so a
        consumer that keeps the last ``seq`` it handled and asks again from there sees every object
        in its current state (a layer's own index, a replica); deleted objects appear until gc
        forgets them.
        """
        check_tenant(tenant)
        if after < 0 or limit < 1:
            raise InvalidInputError(f"changes: after must be >= 0 and limit >= 1 (got {after}, {limit})")
        prefix = tenant_prefix(tenant)
        out: builtins.list[ObjectChange] = []
        with self.index.read() as txn:
            cur = txn.cursor(db=self.index.db(DB_CHANGES))
            db_o = self.index.db(DB_OBJECTS)
            if cur.set_range(change_key(tenant, after + 1)):
                for key, oid in cur:
                    if not key.startswith(prefix) or len(out) >= limit:
                        break
                    raw = txn.get(prefix + oid, db=db_o)
                    if raw is None:
                        raise IntegrityError(f"the change feed of tenant {tenant!r} names object "
                                             f"{oid.hex()}, which the index lacks; run `mmarchive reindex`")
                    e = ObjectEntry.decode(raw)
                    out.append(ObjectChange(e.seq, tenant, oid.hex(), e.live, e.size, e.created_ns,
                                            e.metadata))
        return out

    def tenants(self) -> builtins.list[str]:
        with self.index.read() as txn:
            return [k.decode() for k, _v in txn.cursor(db=self.index.db(DB_TENANTS))]

    def object_tenants(self) -> builtins.list[str]:
        """The tenants that have entries in the objects table, found by one seek per tenant."""
        out: builtins.list[str] = []
        with self.index.read() as txn:
            cur = txn.cursor(db=self.index.db(DB_OBJECTS))
            found = cur.first()
            while found:
                tenant = cur.key()[:cur.key().index(b"\x00")]
                out.append(tenant.decode())
                found = cur.set_range(tenant + b"\x01")
        return out

    def stats(self, *, tenant: str | None = None) -> ArchiveStats:
        """Totals for one tenant or (``tenant=None``) the whole archive."""
        if tenant is not None:
            check_tenant(tenant)
        total = TenantTotals()
        packs = pack_bytes = 0
        with self.index.read() as txn:
            for key, value in txn.cursor(db=self.index.db(DB_TENANTS)):
                if tenant is None or key.decode() == tenant:
                    total = total.plus(TenantTotals.decode(value))
            for _key, value in txn.cursor(db=self.index.db(DB_PACKS)):
                p = PackEntry.decode(value)
                if not (p.deleting or p.unused) and (tenant is None or p.tenant == tenant):
                    packs += 1
                    pack_bytes += p.length
        return ArchiveStats(tenant=tenant, objects=total.objects, logical_bytes=total.logical_bytes,
                            unique_bytes=total.unique_bytes, stored_bytes=total.stored_bytes,
                            packs=packs, pack_bytes=pack_bytes)

    # -- maintenance ------------------------------------------------------------------------------

    def verify(self, *, repair: bool = False, actor: str | None = None,
               progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """Check every record of every pack, every replica, and the index against the packs.

        With ``repair`` (needs a writable handle), a damaged or missing pack is restored from a replica
        that verifies, and a damaged replica is copied again from its pack; each repair is audited, and
        the report is that of a second check after the repairs (``repaired``, ``unrepaired``).
        """
        if repair:
            self._writer()
        with self._maintenance.exclusive():
            if self._write is not None:
                self._write.flush()
            report = verify_archive(self, progress=progress)
            if repair and (report.damaged_packs or report.damaged_replicas):
                repaired, unrepaired = self._repair(report, actor)
                report = verify_archive(self)
                report.repaired, report.unrepaired = repaired, unrepaired
            return report

    def _repair(self, report: VerifyReport, actor: str | None) -> tuple[builtins.list[str],
                                                                        builtins.list[str]]:
        from mmarchive.lifecycle.audit import AuditEntry, current_user

        audit = self.lifecycle.audit
        who = actor or current_user()
        repaired: builtins.list[str] = []
        unrepaired: builtins.list[str] = []
        for name in report.damaged_packs:
            tier = repair_pack(self, bytes.fromhex(name))
            if tier is None:
                unrepaired.append(f"pack {name}: no replica that verifies; restore it from a backup")
                continue
            repaired.append(f"pack {name} from tier {tier}")
            audit.append(AuditEntry("pack.repair", who, name, f"damaged or missing; restored from its "
                                    f"replica on tier {tier}", None, {"from": tier}))
        for item in report.damaged_replicas:
            tier, name = item.split(":", 1)
            pack_id = bytes.fromhex(name)
            try:
                drop_replica(self, pack_id, tier)
                add_replica(self, pack_id, tier)
            except (IntegrityError, StorageError) as e:
                unrepaired.append(f"replica {item}: {e}")
                continue
            repaired.append(f"replica {item}")
            audit.append(AuditEntry("pack.replicate", who, name, f"replica on tier {tier} was damaged; "
                                    "copied again from the pack", None, {"to": tier}))
        return repaired, unrepaired

    def gc(self, *, repack_below: float = 0.5,
           progress: Callable[[int, int], None] | None = None) -> GcReport:
        """Reclaim unreferenced data: delete dead packs, repack packs less than ``repack_below`` live.

        ``progress(done, total)`` is called as packs are examined.
        """
        if not 0.0 <= repack_below <= 1.0:
            raise InvalidInputError(f"repack_below must be between 0 and 1, not {repack_below}")
        self._writer()
        with self._maintenance.exclusive():
            assert self._write is not None
            self._write.flush()
            return collect_garbage(self, repack_below=repack_below, progress=progress)

    def packs(self, *, tier: str | None = None, tenant: str | None = None) -> builtins.list[PackInfo]:
        """Every pack the index knows (not those being deleted, nor those with nothing committed in them
        yet), optionally of one tier or tenant."""
        with self.index.read() as txn:
            entries = [(bytes(k), PackEntry.decode(v))
                       for k, v in txn.cursor(db=self.index.db(DB_PACKS))]
        return [PackInfo(pack_name(k), e.tier, e.tenant, e.group, e.sealed, e.length, e.live_bytes,
                         e.records, e.created_ns)
                for k, e in entries
                if not (e.deleting or e.unused) and (tier is None or e.tier == tier)
                and (tenant is None or e.tenant == tenant)]

    def tier_usage(self) -> builtins.list[TierUsage]:
        """Packs, bytes and objects on each configured tier, hottest first."""
        per: dict[str, list[int]] = {name: [0, 0, 0, 0, 0] for name in self.tiers.names}
        pack_tier: dict[bytes, str] = {}
        sizes: dict[bytes, int] = {}
        with self.index.read() as txn:
            for k, v in txn.cursor(db=self.index.db(DB_PACKS)):
                e = PackEntry.decode(v)
                sizes[bytes(k)] = e.length
                if e.deleting or e.unused:
                    continue
                pack_tier[bytes(k)] = e.tier
                row = per.setdefault(e.tier, [0, 0, 0, 0, 0])
                row[0] += 1
                row[1] += e.length
                row[2] += e.live_bytes
            for _k, v in txn.cursor(db=self.index.db(DB_OBJECTS)):
                obj = ObjectEntry.decode(v)
                if obj.live:
                    where = pack_tier.get(obj.record.pack)
                    if where is not None:
                        per[where][3] += 1
        for move in self.pack_moves():
            for name in {move.source, move.target}:
                per.setdefault(name, [0, 0, 0, 0, 0])[4] += 1
        replicas: dict[str, list[int]] = {}
        for pack_id, tiers in all_replicas(self).items():
            for name in tiers:
                row = replicas.setdefault(name, [0, 0])
                row[0] += 1
                row[1] += sizes.get(pack_id, 0)
        out = []
        for name, (packs, size, live, objects, moving) in per.items():
            cfg = self.tiers.configs[self.tiers.order[name]] if name in self.tiers.order else None
            n_rep, rep_bytes = replicas.get(name, (0, 0))
            out.append(TierUsage(name, cfg.kind if cfg else "?", packs, size, live, objects,
                                 cfg.capacity if cfg else 0, cfg.high_water if cfg else 1.0, moving,
                                 n_rep, rep_bytes))
        return out

    @property
    def move_grace_s(self) -> float:
        """Seconds a moved pack's source copy is kept (``[lifecycle] move_grace_seconds``, 900)."""
        value = self.config.lifecycle.get("move_grace_seconds", 900)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InvalidInputError(f"[lifecycle] move_grace_seconds must be a number of seconds >= 0, "
                                    f"not {value!r}")
        return float(value)

    def move_pack(self, pack: str, tier: str, *, grace_s: float | None = None) -> int:
        """Move one sealed pack to ``tier``: copy, verify on the target, switch the index, and remove
        the source once the grace period (default :attr:`move_grace_s`) has passed. Returns bytes
        copied (0 when the pack is there already). Puts and reads go on meanwhile.
        """
        self._writer()
        pack_id = pack_id_from_name(pack)
        if pack_id is None:
            raise InvalidInputError(f"{pack!r} is not a pack id (32 hexadecimal digits)")
        with self._maintenance.shared():
            return move_pack(self, pack_id, tier,
                             grace_s=self.move_grace_s if grace_s is None else grace_s)

    def seal_packs(self) -> None:
        """Commit what is staged and seal every open pack, so that all of them can move between tiers
        (new writes then start new packs)."""
        write = self._writer()
        with self._maintenance.exclusive():
            write.seal_all()

    def finish_moves(self, *, now_ns: int | None = None) -> MovesFinished:
        """Roll back moves a crash stopped before their switch; remove sources past their grace."""
        self._writer()
        with self._maintenance.shared():
            return finish_moves(self, now_ns=now_ns)

    def pack_moves(self) -> builtins.list[PackMove]:
        """Moves started and not finished (in their grace period, or stopped by a crash)."""
        try:
            return pending_moves(self)
        except StorageError:
            return []  # a read-only open of an index older than the moves database

    def reindex(self, *, progress: Callable[[int, int], None] | None = None) -> None:
        """Rebuild the whole index from the packs alone; ``progress(done, total)`` counts packs."""
        self._writer()
        with self._maintenance.exclusive():
            assert self._write is not None
            self._write.close()
            try:
                rebuild_index(self, progress=progress)
            finally:
                self._write = WritePath(self.index, self.tier, self.config.store)


def _metadata(item: PutItem, default: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return item.metadata if item.metadata is not None else default


def _plain_metadata(metadata: Mapping[str, Any] | None) -> bytes | None:
    """The metadata as stored (canonical JSON; b"" for an empty mapping), or None to keep what is."""
    if metadata is None:
        return None
    try:
        return encode_metadata(dict(metadata))
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"metadata must be JSON-serialisable ({e})") from e

