"""The DICOM layer of an archive: ingest, duplicates and versions, corrections, retrieval and export.

A :class:`DicomStore` composes an :class:`~mmarchive.archive.Archive` (where the bytes live), the scanner
(:mod:`mmarchive.dicom.scan`, what a file says) and the :class:`~mmarchive.dicom.catalog.Catalog` (the
patient / study / series / instance index). Each instance is stored as one object holding the Part 10 file
byte for byte, cut into header, pixel value and trailer so that the same pixels under another header are
stored once. The object's metadata names the SOP Instance UID and the decision that stored it, so the packs
alone tell the catalog's story: the catalog follows the archive's change feed and catches up after a crash
between a durable store and its catalog update (:meth:`DicomStore.sync_catalog`).

Duplicates (same SOP Instance UID, other bytes) follow a :class:`DuplicatePolicy`; the default keeps every
version, the newest current. Every stored version is in the catalog's version history; a refusal is kept
as a decision record object in the archive (:meth:`DicomStore.decisions`). Corrections write a new header
in front of the same pixel value.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from mmarchive.archive import DEFAULT_TENANT, Archive, PutItem
from mmarchive.atomicwrite import write_atomically
from mmarchive.dicom.catalog import Catalog
from mmarchive.dicom.catalog_records import CatalogEntry, CatalogInstance, InstanceVersion, VersionRole
from mmarchive.dicom.errors import DicomInputError
from mmarchive.dicom.scan import ScannedInstance, describe
from mmarchive.errors import InvalidInputError, NotFoundError
from mmarchive.index.schema import check_tenant
from mmarchive.lifecycle.facts import dicom_date, facts_metadata
from mmarchive.records import ObjectInfo
from mmarchive.store.chunks import content_id

log = logging.getLogger(__name__)

#: The catalog's directory inside the archive directory.
CATALOG_DIR = "dicom-catalog"
#: The metadata key under which a stored instance says what it is.
METADATA_KEY = "dicom"
#: The metadata key of a decision record: a refused file, kept as a small JSON object of its own so that
#: every decision is in the archive (the file itself is not stored).
DECISION_KEY = "dicom-decision"
_CATALOG_FLUSH_ITEMS = 500
_CATALOG_FLUSH_SECONDS = 0.25
_DEFLATED = "1.2.840.10008.1.2.1.99"
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_BULK_OVER = 1024


class DuplicatePolicy(StrEnum):
    """What to do with a file whose SOP Instance UID is stored already with other bytes."""

    #: Refuse the new file; the stored version stays current.
    REJECT = "reject"
    #: Keep both: the new file becomes the current version, earlier ones stay retrievable (the default).
    VERSION = "version"
    #: The new file becomes current and the previous current version is deleted (gc reclaims it).
    REPLACE = "replace"


class IngestStatus(StrEnum):
    STORED = "stored"  # a new instance
    ALREADY_STORED = "already-stored"  # these exact bytes were stored: nothing new
    NEW_VERSION = "new-version"  # other bytes for a stored instance, kept as its current version
    REPLACED = "replaced"  # other bytes for a stored instance, which replaced the current version
    REJECTED = "rejected"  # other bytes for a stored instance, refused by the policy
    FAILED = "failed"  # not DICOM, damaged, unreadable: nothing stored


class IngestResult(NamedTuple):
    """What ingest did with one input, reported in input order."""

    source: str
    status: IngestStatus
    tenant: str
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    object_id: str | None = None
    size: int = 0
    #: Why it failed or was rejected.
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status not in (IngestStatus.FAILED, IngestStatus.REJECTED)

    def to_json(self) -> dict[str, Any]:
        d = self._asdict()
        d["status"] = str(self.status)
        return {k: v for k, v in d.items() if v is not None}


#: An input: a path, or (name, bytes) for data that is not in a file.
IngestSource = str | os.PathLike[str] | tuple[str, bytes]


class _Described(NamedTuple):
    name: str
    data: bytes | None
    scanned: ScannedInstance | None
    error: str | None


class _Slot:
    """One input on its way through ingest: resolved at once, or when its object is durable."""

    __slots__ = ("_oid", "decision", "described", "reason", "replaces", "result", "status")

    def __init__(self, result: IngestResult | None, described: _Described | None = None,
                 status: IngestStatus = IngestStatus.STORED, reason: str = "",
                 replaces: str | None = None, decision: dict[str, Any] | None = None) -> None:
        self.result = result
        self.described = described
        self.status = status  # what storing it will mean
        self.reason = reason
        self.replaces = replaces
        #: A refusal to record in the archive instead of storing the file (see DECISION_KEY).
        self.decision = decision
        self._oid: str | None = None

    def known_as(self, object_id: str) -> None:
        self._oid = object_id

    def object_id(self) -> str:
        """The id its object will have (hashed on demand: only duplicates within one call need it)."""
        if self._oid is None:
            assert self.described is not None and self.described.data is not None
            self._oid = content_id(self.described.data).hex()
        return self._oid


class _Staged:
    """The slots of one ingest call that store a version of a SOP instance and are not indexed yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sop: dict[str, list[_Slot]] = {}

    def add(self, sop: str, slot: _Slot) -> None:
        with self._lock:
            self._by_sop.setdefault(sop, []).append(slot)

    def get(self, sop: str) -> list[_Slot]:
        with self._lock:
            return list(self._by_sop.get(sop, ()))

    def remove(self, sop: str, slot: _Slot) -> None:
        with self._lock:
            same = self._by_sop.get(sop, [])
            if slot in same:
                same.remove(slot)
                if not same:
                    del self._by_sop[sop]


def _uid(scanned: ScannedInstance, keyword: str) -> str:
    values = scanned.values.get(keyword, ())
    return str(values[0]) if values else ""


class DicomSettings(NamedTuple):
    """The ``[layers.dicom]`` table of an archive's ``mmarchive.toml``."""

    #: What to do with other bytes for a stored SOP Instance UID (see :class:`DuplicatePolicy`).
    on_duplicate: DuplicatePolicy = DuplicatePolicy.VERSION


def _settings(archive: Archive) -> DicomSettings:
    table = dict(archive.config.layers.get("dicom", {}))
    where = f"{archive.path / 'mmarchive.toml'} [layers.dicom]"
    unknown = set(table) - set(DicomSettings._fields)
    if unknown:
        raise InvalidInputError(f"{where}: unknown keys {sorted(unknown)}; known: "
                                f"{', '.join(DicomSettings._fields)}")
    try:
        return DicomSettings(on_duplicate=DuplicatePolicy(table.get("on_duplicate", "version")))
    except ValueError:
        raise InvalidInputError(f"{where}: on_duplicate must be one of "
                                f"{', '.join(p.value for p in DuplicatePolicy)}") from None


def _decision_item(decision: dict[str, Any], name: str) -> PutItem:
    record = json.dumps(decision, sort_keys=True, separators=(",", ":")).encode()
    summary = {"sop": decision["sop"], "decision": decision["decision"]}
    return PutItem(record, metadata={DECISION_KEY: summary}, group="dicom-decisions", name=name)


def _read_and_describe(source: IngestSource) -> _Described:
    if isinstance(source, tuple):
        name, data = source
    else:
        name = os.fspath(source)
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            return _Described(name, None, None, f"cannot read {name}: {e.strerror or e}")
    try:
        return _Described(name, data, describe(data), None)
    except DicomInputError as e:
        return _Described(name, None, None, str(e))


class DicomStore:
    """DICOM instances in an archive, with their catalog. Open with :meth:`open` or wrap an Archive."""

    def __init__(self, archive: Archive, *, policy: DuplicatePolicy | None = None,
                 owns_archive: bool = False) -> None:
        """``policy`` overrides ``on_duplicate`` of the archive's ``[layers.dicom]`` settings."""
        self.archive = archive
        settings = _settings(archive)
        self.policy = DuplicatePolicy(policy) if policy is not None else settings.on_duplicate
        self.readonly = archive.readonly
        self._owns_archive = owns_archive
        self._lock = threading.Lock()  # one ingest (or correction, or sync) at a time
        if self.readonly and not (archive.path / CATALOG_DIR).exists():
            raise NotFoundError(f"the archive at {archive.path} has no DICOM catalog yet: nothing was "
                                "ingested (`mmarchive ingest` creates it)")
        self.catalog = Catalog(archive.path / CATALOG_DIR, archive.config.index, readonly=archive.readonly)
        #: How many changes of the archive the catalog caught up with when this store opened.
        self.caught_up = 0
        try:
            if not self.readonly:
                self.caught_up = self.sync_catalog()
        except BaseException:
            self.catalog.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False,
             policy: DuplicatePolicy | None = None) -> DicomStore:
        archive = Archive.open(path, readonly=readonly)
        try:
            return cls(archive, policy=policy, owns_archive=True)
        except BaseException:
            archive.close()
            raise

    def close(self) -> None:
        self.catalog.close()
        if self._owns_archive:
            self.archive.close()

    def __enter__(self) -> DicomStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest -------------------------------------------------------------------------------------

    def ingest(self, sources: Iterable[IngestSource], *, tenant: str = DEFAULT_TENANT,
               policy: DuplicatePolicy | None = None, readers: int = 0,
               reason: str | None = None) -> Iterator[IngestResult]:
        """Store DICOM files; yield one result per input, in input order, once it is durable and indexed.

        Files are read and scanned by the calling thread, or with ``readers`` > 0 on that many threads
        (worth it only for slow or network storage: from the page cache the hand-offs between threads
        cost more than the reads, measured 785 against 990 CT files/s). They are stored through
        :meth:`Archive.put_many` and indexed in the catalog in batches. A file that is not DICOM, is
        damaged or cannot be read yields a FAILED result and the others go on; nothing of it is stored.
        ``reason`` overrides the word recorded in the version history ("initial", "version", ...).
        """
        check_tenant(tenant)
        use = DuplicatePolicy(policy) if policy is not None else self.policy
        if self.readonly:
            raise InvalidInputError("this DICOM store is open read-only; open it without readonly=True "
                                    "to ingest")
        if readers < 0:
            raise InvalidInputError(f"readers must be 0 or more, not {readers}")
        with self._lock:
            if readers == 0:
                yield from self._ingest(sources, tenant, use, None, 0, reason)
                return
            with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="mmarchive-dicom-read") as pool:
                yield from self._ingest(sources, tenant, use, pool, readers, reason)

    def _ingest(self, sources: Iterable[IngestSource], tenant: str, policy: DuplicatePolicy,
                pool: ThreadPoolExecutor | None, depth: int, reason: str | None) -> Iterator[IngestResult]:
        """The pipeline: read and scan (here or on the pool), decide and store here, index on a thread of
        its own.

        Indexing runs beside storing (its own LMDB environment, its own commits), so this thread only
        stages objects; results are reported in input order as the indexer resolves them.
        """
        slots: deque[_Slot] = deque()  # every input not yet reported, in order
        waiting: deque[_Slot] = deque()  # the slots whose objects put_many will report, in order
        # SOP Instance UID -> the slots of this call that store a version of it, not yet indexed
        staged = _Staged()
        durable: queue.SimpleQueue[tuple[_Slot, ObjectInfo] | None] = queue.SimpleQueue()
        replaced: list[str] = []
        failures: list[BaseException] = []

        def described() -> Iterator[_Described]:
            if pool is None:
                for source in sources:
                    yield _read_and_describe(source)
                return
            ahead: deque[Future[_Described]] = deque()
            for source in sources:
                ahead.append(pool.submit(_read_and_describe, source))
                if len(ahead) > 4 * depth:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()

        def items() -> Iterator[PutItem]:
            for d in described():
                slot = self._decide(d, tenant, policy, staged, reason)
                slots.append(slot)
                if slot.result is None:
                    assert d.scanned is not None and d.data is not None
                    waiting.append(slot)
                    if slot.decision is not None:  # the refusal is recorded, durably, in its place
                        yield _decision_item(slot.decision, d.name)
                        continue
                    staged.add(_uid(d.scanned, "SOPInstanceUID"), slot)
                    yield self._put_item(d, slot)

        def index_loop() -> None:
            try:
                while True:
                    first = durable.get()
                    if first is None:
                        return
                    batch = [first]
                    end = time.monotonic() + _CATALOG_FLUSH_SECONDS
                    last = False
                    while len(batch) < _CATALOG_FLUSH_ITEMS and (left := end - time.monotonic()) > 0:
                        try:
                            item = durable.get(timeout=left)
                        except queue.Empty:
                            break
                        if item is None:
                            last = True
                            break
                        batch.append(item)
                    replaced.extend(self._index(tenant, batch, staged))
                    if last:
                        return
            except BaseException as e:  # reported by the ingest call
                failures.append(e)

        def ready() -> Iterator[IngestResult]:
            while slots and slots[0].result is not None:
                result = slots.popleft().result
                assert result is not None
                yield result

        indexer = threading.Thread(target=index_loop, name="mmarchive-dicom-index", daemon=True)
        indexer.start()
        try:
            for info in self.archive.put_many(items(), tenant=tenant):
                durable.put((waiting.popleft(), info))
                if failures:
                    raise failures[0]
                yield from ready()
        finally:
            durable.put(None)
            indexer.join()
        if failures:
            raise failures[0]
        # Replaced versions go once everything is stored and indexed (a crash before this keeps them).
        for object_id in replaced:
            with contextlib.suppress(NotFoundError):  # replaced twice in one call, or deleted meanwhile
                self.archive.delete(object_id, tenant=tenant)
        yield from ready()
        assert not slots and not waiting

    def _decide(self, d: _Described, tenant: str, policy: DuplicatePolicy,
                staged: _Staged, reason: str | None) -> _Slot:
        """What to do with one described file: a resolved slot, or one whose object is to be stored."""
        if d.scanned is None or d.data is None:
            return _Slot(IngestResult(d.name, IngestStatus.FAILED, tenant, error=d.error))
        sop = _uid(d.scanned, "SOPInstanceUID")
        # Staged first, then the catalog: the indexer adds a version to the catalog before it drops it
        # from the staged ones, so a version being indexed meanwhile is seen in one or the other.
        pending = [slot.object_id() for slot in staged.get(sop)]
        versions = self.catalog.versions(tenant, sop)
        if not versions and not pending:
            return _Slot(None, d, IngestStatus.STORED, reason or "initial")
        oid = content_id(d.data).hex()
        if oid in pending or any(v.object_id == oid for v in versions):
            return _Slot(self._result(d, tenant, IngestStatus.ALREADY_STORED, oid))
        current = pending[-1] if pending else next((v.object_id for v in versions if v.current), None)
        if current is None:  # only non-current versions: this one becomes current, nothing is replaced
            return _Slot(None, d, IngestStatus.STORED, reason or "initial")
        if policy is DuplicatePolicy.REJECT:
            why = (f"SOP Instance UID {sop} is already stored with other content (object {current}); "
                   "the duplicate policy is 'reject': send it with policy 'version' or 'replace' to keep it")
            log.warning("%s: %s", d.name, why)
            decision = {"decision": "rejected", "policy": str(policy), "reason": why, "source": d.name,
                        "sop": sop, "study": _uid(d.scanned, "StudyInstanceUID"),
                        "series": _uid(d.scanned, "SeriesInstanceUID"), "current": current,
                        "offered": oid, "offered_size": len(d.data),
                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            return _Slot(None, d, IngestStatus.REJECTED, "rejected", decision=decision)
        if policy is DuplicatePolicy.REPLACE:
            return _Slot(None, d, IngestStatus.REPLACED, reason or "replace", replaces=current)
        return _Slot(None, d, IngestStatus.NEW_VERSION, reason or "version")

    @staticmethod
    def _result(d: _Described, tenant: str, status: IngestStatus, oid: str | None,
                error: str | None = None) -> IngestResult:
        s = d.scanned
        assert s is not None
        return IngestResult(d.name, status, tenant, _uid(s, "SOPInstanceUID"), _uid(s, "StudyInstanceUID"),
                            _uid(s, "SeriesInstanceUID"), oid, s.size, error)

    @staticmethod
    def _put_item(d: _Described, slot: _Slot) -> PutItem:
        s = d.scanned
        assert s is not None and d.data is not None
        meta: dict[str, Any] = {"sop": _uid(s, "SOPInstanceUID"), "reason": slot.reason,
                                "header": s.header_end}
        if slot.replaces:
            meta["replaces"] = slot.replaces
        study_date = str(s.values.get("StudyDate", ("",))[0] if s.values.get("StudyDate") else "")
        # Instances of the same month share packs: they age, move and expire together.
        group = f"dicom-{study_date[:6]}" if len(study_date) >= 6 and study_date[:6].isdigit() else "dicom"
        cuts = (s.header_end, s.trailer_start) if s.pixel_data is not None else ()
        facts = facts_metadata("dicom", study_date=dicom_date(study_date),
                               patient_birth_date=dicom_date(_uid(s, "PatientBirthDate")),
                               patient_id=_uid(s, "PatientID"), study_uid=_uid(s, "StudyInstanceUID"),
                               series_uid=_uid(s, "SeriesInstanceUID"), modality=_uid(s, "Modality"),
                               sop_class_uid=_uid(s, "SOPClassUID"))
        return PutItem(d.data, metadata={METADATA_KEY: meta, **facts}, group=group, cuts=cuts,
                       name=d.name)

    def _index(self, tenant: str, done: list[tuple[_Slot, ObjectInfo]], staged: _Staged) -> list[str]:
        """Add durable objects to the catalog (one transaction, with the feed mark); resolve their slots.

        Returns the ids of the objects their slots replace (to delete once the call has stored all).
        """
        now = time.time()
        instances = []
        for slot, info in done:
            d = slot.described
            assert d is not None and d.scanned is not None
            if slot.decision is not None:
                continue
            instances.append(CatalogInstance(tenant, d.scanned.values, info.id, info.size,
                                             d.scanned.transfer_syntax, now, slot.reason,
                                             VersionRole.CURRENT))
        marks = self._marks()
        marks[tenant] = max([marks.get(tenant, 0)] + [info.seq for _s, info in done])
        self.catalog.add_many(instances, mark=json.dumps(marks, sort_keys=True).encode())
        replaced = []
        for slot, info in done:
            d = slot.described
            assert d is not None and d.scanned is not None
            if slot.decision is not None:
                slot.result = self._result(d, tenant, IngestStatus.REJECTED, None,
                                           error=str(slot.decision["reason"]))
                slot.described = None
                continue
            slot.known_as(info.id)  # before the bytes go: the ingest thread may still ask
            staged.remove(_uid(d.scanned, "SOPInstanceUID"), slot)
            if slot.replaces:
                replaced.append(slot.replaces)
            slot.result = self._result(d, tenant, slot.status, info.id)
            slot.described = None  # the bytes are no longer needed
        return replaced

    def _marks(self) -> dict[str, int]:
        raw = self.catalog.mark()
        if raw is None:
            return {}
        marks = json.loads(raw)
        return {str(k): int(v) for k, v in marks.items()}

    # -- following the archive ---------------------------------------------------------------------

    def sync_catalog(self) -> int:
        """Bring the catalog up to date with the archive's change feed; return how many changes it applied.

        Normally there is nothing to do: ingest indexes what it stores. After a crash between a durable
        store and the catalog update, or after objects were stored or deleted through the plain archive
        API, the feed says what the catalog missed; the instance is read back and indexed again.
        """
        if self.readonly:
            raise InvalidInputError("sync_catalog needs the store open for writing")
        applied = 0
        with self._lock:
            marks = self._marks()
            for tenant in self.archive.tenants():
                start = after = marks.get(tenant, 0)
                while page := self.archive.changes(tenant=tenant, after=after, limit=500):
                    for change in page:
                        meta = change.metadata.get(METADATA_KEY)
                        if isinstance(meta, Mapping) and self._apply_change(tenant, change.id, change.live,
                                                                            meta):
                            applied += 1
                    after = page[-1].seq
                if after != start:  # one mark per tenant: a crash before it only replays idempotent work
                    marks[tenant] = after
                    self.catalog.add_many([], mark=json.dumps(marks, sort_keys=True).encode())
        if applied:
            log.info("catalog caught up with %d change(s) of the archive", applied)
        return applied

    def _apply_change(self, tenant: str, object_id: str, live: bool, meta: Mapping[str, Any]) -> bool:
        sop = str(meta.get("sop", ""))
        versions = self.catalog.versions(tenant, sop)
        if not live:
            if any(v.current and v.object_id == object_id for v in versions):
                self.catalog.remove(tenant, sop)
                return True
            return False
        if any(v.object_id == object_id for v in versions):
            return False
        data = self.archive.get(object_id, tenant=tenant)
        try:
            scanned = describe(data)
        except DicomInputError as e:  # stored by other means than ingest: leave it out of the catalog
            log.warning("object %s of tenant %s says it is DICOM but cannot be indexed: %s",
                        object_id, tenant, e)
            return False
        self.catalog.add_many([CatalogInstance(tenant, scanned.values, object_id, len(data),
                                               scanned.transfer_syntax, time.time(),
                                               str(meta.get("reason", "initial")), VersionRole.CURRENT)])
        return True

    def rebuild_catalog(self) -> int:
        """Empty the catalog and index every DICOM object of the archive again, from the change feed."""
        if self.readonly:
            raise InvalidInputError("rebuild_catalog needs the store open for writing")
        with self._lock:
            self.catalog.clear()
        return self.sync_catalog()

    # -- reading ------------------------------------------------------------------------------------

    def query(self, level: str, constraints: Mapping[str, str], *, tenant: str = DEFAULT_TENANT,
              **options: Any) -> list[dict[str, Any]]:
        """Match ``constraints`` at ``level`` (see :meth:`Catalog.query`); DICOM JSON results."""
        return self.catalog.query(tenant, level, constraints, **options)

    def versions(self, sop_uid: str, *, tenant: str = DEFAULT_TENANT) -> list[InstanceVersion]:
        return self.catalog.versions(tenant, sop_uid)

    def decisions(self, *, tenant: str = DEFAULT_TENANT, sop_uid: str | None = None) -> list[dict[str, Any]]:
        """The refusals recorded in the archive (oldest first), for one instance or all.

        Stored versions and replacements are in :meth:`versions`; what a policy refused is here. This
        walks the tenant's change feed: an audit query, not a fast path.
        """
        out: list[dict[str, Any]] = []
        after = 0
        while page := self.archive.changes(tenant=tenant, after=after, limit=1000):
            for change in page:
                meta = change.metadata.get(DECISION_KEY)
                wanted = isinstance(meta, Mapping) and (sop_uid is None or meta.get("sop") == sop_uid)
                if change.live and wanted:
                    out.append(json.loads(self.archive.get(change.id, tenant=tenant)))
            after = page[-1].seq
        return out

    def retrieve(self, sop_uid: str, *, tenant: str = DEFAULT_TENANT, version: int | None = None) -> bytes:
        """The Part 10 file of an instance's current version (or of version number ``version``)."""
        versions = self.catalog.versions(tenant, sop_uid)
        chosen = [v for v in versions if (v.number == version if version is not None else v.current)]
        if not chosen:
            which = f"version {version} of " if version is not None else ""
            raise NotFoundError(f"{which}SOP instance {sop_uid} is not in tenant {tenant!r}; query the "
                                "catalog to find what is stored")
        return self.archive.get(chosen[0].object_id, tenant=tenant)

    def instances(self, study_uid: str, *, tenant: str = DEFAULT_TENANT,
                  series_uid: str | None = None) -> list[CatalogEntry]:
        return list(self.catalog.instances(tenant, study_uid, series_uid))

    def current(self, study_uid: str, *, tenant: str = DEFAULT_TENANT, series_uid: str | None = None,
                sop_uid: str | None = None) -> list[CatalogEntry]:
        """The current instances of a study, or of one of its series, or the one instance ``sop_uid`` (a
        single look-up) if it is in that study and series; [] when there are none."""
        if sop_uid is None:
            return self.instances(study_uid, tenant=tenant, series_uid=series_uid)
        one = self.catalog.instance(tenant, study_uid, series_uid, sop_uid)
        return [one] if one is not None else []

    def export(self, out_dir: str | os.PathLike[str], *, study_uid: str, tenant: str = DEFAULT_TENANT,
               series_uid: str | None = None, sop_uid: str | None = None) -> list[Path]:
        """Write the current Part 10 files of a study (or a series, or one instance) under ``out_dir``.

        Files go to ``out_dir/STUDY/SERIES/SOP.dcm``, each streamed and verified through
        :func:`~mmarchive.atomicwrite.write_atomically`, so a file that exists is complete. Returns the
        paths written.
        """
        entries = self.current(study_uid, tenant=tenant, series_uid=series_uid, sop_uid=sop_uid)
        if not entries:
            what = sop_uid or series_uid or study_uid
            raise NotFoundError(f"nothing to export: {what} is not in tenant {tenant!r}")
        written = []
        for e in entries:
            folder = Path(out_dir) / e.study_instance_uid / e.series_instance_uid
            target = folder / f"{e.sop_instance_uid}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.archive.open_object(e.object_id, tenant=tenant) as reader:
                write_atomically(target, reader.read_chunkwise())
            written.append(target)
        return written

    def metadata(self, study_uid: str, *, tenant: str = DEFAULT_TENANT, series_uid: str | None = None,
                 sop_uid: str | None = None) -> list[dict[str, Any]]:
        """The DICOM JSON of every current instance of a study (or series, or the one instance
        ``sop_uid``), bulk data left out.

        Only each file's header is read (the piece before the pixel data, its own content in the
        store), never its pixel data; binary elements over 1 KiB are left out, as WADO-RS metadata
        leaves bulk data to its own URIs.
        """
        entries = self.current(study_uid, tenant=tenant, series_uid=series_uid, sop_uid=sop_uid)
        if not entries:
            what = (f"instance {sop_uid}" if sop_uid is not None else
                    f"series {series_uid}" if series_uid is not None else f"study {study_uid}")
            raise NotFoundError(f"{what} is not in tenant {tenant!r}")
        return [self._header_json(e.object_id, tenant) for e in entries]

    def header_end(self, object_id: str, size: int, *, tenant: str = DEFAULT_TENANT) -> int:
        """Where the header piece of a stored instance of ``size`` bytes ends (its pixel value starts), as
        ingest recorded it; ``size`` when it recorded none (a file stored whole)."""
        dicom = self.archive.stat(object_id, tenant=tenant).metadata.get(METADATA_KEY)
        end = dicom.get("header") if isinstance(dicom, Mapping) else None
        return end if isinstance(end, int) and 0 <= end <= size else size

    def _header_json(self, object_id: str, tenant: str) -> dict[str, Any]:
        with self.archive.open_object(object_id, tenant=tenant) as reader:
            size = int(reader.size)
            head = reader.read(self.header_end(object_id, size, tenant=tenant))
        from mmarchive.dicom.scan_pydicom import header_dataset  # pydicom: not needed by ingest

        ds = header_dataset(head, f"the header of object {object_id}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                for elem in list(ds):
                    if elem.VR in _BULK_VRS and elem.value is not None and len(elem.value) > _BULK_OVER:
                        del ds[elem.tag]
                result: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=_BULK_OVER)
            except Exception as e:  # pydicom raises many kinds
                raise DicomInputError(f"the header of object {object_id} cannot be read back ({e})") from e
        return result

    # -- corrections --------------------------------------------------------------------------------

    def correct(self, study_uid: str, changes: Mapping[str, str], *, tenant: str = DEFAULT_TENANT,
                series_uid: str | None = None, reason: str = "correction") -> list[IngestResult]:
        """Write a new header version of every current instance of a study (or series) with ``changes``.

        ``changes`` maps DICOM keywords to new values (e.g. ``{"PatientID": "NEW-1"}``; an empty value
        empties the attribute). The pixel value is not touched: each new version shares it with the
        version before, which stays retrievable. Returns one result per instance.
        """
        from pydicom.datadict import tag_for_keyword

        for keyword in changes:
            if tag_for_keyword(keyword) is None:
                raise InvalidInputError(f"{keyword!r} is not a DICOM keyword; use names like PatientID")
            if tag_for_keyword(keyword) in (0x7FE00010, 0x00080018):
                raise InvalidInputError(f"{keyword} cannot be corrected: it identifies the instance or "
                                        "is its pixel data")
        entries = list(self.catalog.instances(tenant, study_uid, series_uid))
        if not entries:
            raise NotFoundError(f"study {study_uid} is not in tenant {tenant!r}")
        rewritten = [(f"{e.sop_instance_uid} ({reason})",
                      _with_new_header(self.archive.get(e.object_id, tenant=tenant), changes))
                     for e in entries]
        return list(self.ingest(rewritten, tenant=tenant, policy=DuplicatePolicy.VERSION, reason=reason))


def _with_new_header(data: bytes, changes: Mapping[str, str]) -> bytes:
    """``data`` with ``changes`` made to its header; the pixel element and what follows, byte for byte."""
    scanned = describe(data)
    if scanned.transfer_syntax == _DEFLATED:
        raise InvalidInputError("a deflated file cannot be corrected in place; convert it first")
    from mmarchive.dicom.scan_pydicom import header_dataset

    ds = header_dataset(data, "the stored header")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        out = io.BytesIO()
        try:
            ds.save_as(out, enforce_file_format=True)
        except Exception as e:
            raise InvalidInputError(f"cannot write the corrected header ({e}); check the values") from e
    tail = data[scanned.pixel_data.element_offset:] if scanned.pixel_data is not None else b""
    return out.getvalue() + tail

