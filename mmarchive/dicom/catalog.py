"""The DICOM catalog: per tenant, patients, studies, series and instances, queried as QIDO-RS / C-FIND do.

:class:`Catalog` is the public face of the catalog's own LMDB environment (an
:class:`~mmarchive.index.env.IndexEnv` over :data:`CATALOG_DBS`, apart from the store's index). A caller
(the store adapter) feeds it :class:`CatalogInstance` records with :meth:`Catalog.add_many`, one write
transaction per call, which also stores the caller's high-water mark so it can resume from the store's
change feed after a crash; it asks :meth:`Catalog.query` for DICOM JSON results and :meth:`Catalog.instances`
for the current instances of a study. The rooms behind it: :mod:`catalog_keys` (key layout and entry
encoding), :mod:`catalog_writes` (instances, versions and the aggregates they keep), :mod:`catalog_query`
(planner and scans), :mod:`catalog_results` (return attributes, DICOM JSON), :mod:`matching` (PS3.4
matching). The catalog knows nothing of the store: object ids are opaque strings to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmarchive.config import IndexConfig
from mmarchive.dicom.attributes import Level
from mmarchive.dicom.catalog_keys import (
    CATALOG_DBS,
    CATALOG_SCHEMA_VERSION,
    DB_INSTANCES,
    DB_META,
    DB_PATIENTS,
    DB_SERIES,
    DB_STUDIES,
    DB_VERSIONS,
    META_MARK,
    META_SCHEMA,
    as_values,
    decode_entry,
    tenant_key,
    version_number,
)
from mmarchive.dicom.catalog_query import CatalogReader, QueryPlan, QueryRunner
from mmarchive.dicom.catalog_records import (
    AddOutcome,
    CatalogEntry,
    CatalogInstance,
    InstanceVersion,
    VersionRole,
)
from mmarchive.dicom.catalog_results import (
    IncludeFields,
    ResultRenderer,
    keywords_of,
    level_and_above,
    result_keywords,
)
from mmarchive.dicom.catalog_writes import CatalogWriter
from mmarchive.dicom.matching import CompiledQuery, compile_query
from mmarchive.errors import FormatError, InvalidInputError
from mmarchive.index.env import IndexEnv

__all__ = ["CATALOG_DBS", "AddOutcome", "Catalog", "CatalogEntry", "CatalogInstance", "InstanceVersion",
           "QueryPlan", "VersionRole"]


def _level(level: Level | str) -> Level:
    try:
        return Level(level)
    except ValueError:
        raise InvalidInputError(f"unknown query level {level!r}; use one of "
                                f"{', '.join(lv.value for lv in Level)}") from None


def _check_page(limit: int | None, offset: int) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidInputError(f"limit must be a positive integer or None, not {limit!r}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidInputError(f"offset must be a non-negative integer, not {offset!r}")


def _check_mark(mark: bytes | None) -> None:
    if mark is not None and not isinstance(mark, bytes):
        raise InvalidInputError(f"mark must be bytes or None, not {type(mark).__name__}")


class Catalog:
    """The catalog in the LMDB environment at ``path`` (created when missing unless ``readonly``)."""

    def __init__(self, path: Path | str, cfg: IndexConfig | None = None, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._env = IndexEnv(self.path, cfg or IndexConfig(), readonly=readonly, dbs=CATALOG_DBS)
        try:
            with self._env.read() as txn:
                schema = txn.get(META_SCHEMA, db=self._env.db(DB_META))
            if schema is None and not readonly:
                self._env.write(lambda t: t.put(META_SCHEMA, str(CATALOG_SCHEMA_VERSION).encode(),
                                                db=self._env.db(DB_META)))
            elif schema is not None and int(schema) != CATALOG_SCHEMA_VERSION:
                raise FormatError(f"the catalog at {self.path} has schema {int(schema)}; this mmarchive "
                                  f"reads {CATALOG_SCHEMA_VERSION}: rebuild it (Catalog.clear, then feed it "
                                  "again from the store)")
        except BaseException:
            self._env.close()
            raise

    # -- lifetime -------------------------------------------------------------------------------------

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------------

    def add_many(self, instances: Iterable[CatalogInstance], *,
                 mark: bytes | None = None) -> list[AddOutcome]:
        """Index instances in one write transaction (with ``mark``, if given); what was done to each.

        Adding an identical instance again (same SOP Instance UID and object id) changes nothing. A new
        object id with ``role=CURRENT`` becomes the current version, with ``NON_CURRENT`` joins the
        history only; an earlier object id with ``CURRENT`` is made current again.
        """
        _check_mark(mark)
        items = list(instances)
        for item in items:
            if not isinstance(item, CatalogInstance):
                raise InvalidInputError(f"add_many takes CatalogInstance records, not {type(item).__name__}")

        def apply(txn: Any) -> list[AddOutcome]:
            writer = CatalogWriter(txn, self._env.dbs)
            outcomes = [writer.add(item) for item in items]
            writer.flush()
            if mark is not None:
                txn.put(META_MARK, mark, db=self._env.db(DB_META))
            return outcomes

        return self._env.write(apply)

    def set_current(self, tenant: str, sop_uid: str, object_id: str, *,
                    mark: bytes | None = None) -> AddOutcome:
        """Make an earlier version (by object id) the current one again; NotFoundError if there is none."""
        _check_mark(mark)

        def apply(txn: Any) -> AddOutcome:
            writer = CatalogWriter(txn, self._env.dbs)
            outcome = writer.set_current(tenant, sop_uid, object_id)
            writer.flush()
            if mark is not None:
                txn.put(META_MARK, mark, db=self._env.db(DB_META))
            return outcome

        return self._env.write(apply)

    def remove(self, tenant: str, sop_uid: str, *, mark: bytes | None = None) -> bool:
        """Drop an instance with its version history: counts drop, emptied series/studies/patients go."""
        _check_mark(mark)

        def apply(txn: Any) -> bool:
            writer = CatalogWriter(txn, self._env.dbs)
            found = writer.remove(tenant, sop_uid)
            writer.flush()
            if mark is not None:
                txn.put(META_MARK, mark, db=self._env.db(DB_META))
            return found

        return self._env.write(apply)

    def clear(self, tenant: str | None = None) -> None:
        """Empty the catalog (and its mark), or only one tenant's entries (the mark stays)."""
        prefix = tenant_key(tenant) if tenant is not None else None

        def apply(txn: Any) -> None:
            for name in CATALOG_DBS:
                db = self._env.db(name)
                if prefix is None:
                    if name == DB_META:
                        txn.delete(META_MARK, db=db)
                        txn.delete(b"seq", db=db)
                    else:
                        txn.drop(db, delete=False)
                    continue
                if name == DB_META:
                    continue
                cursor = txn.cursor(db=db)
                if cursor.set_range(prefix):
                    while cursor.key().startswith(prefix):
                        if not cursor.delete():
                            break

        self._env.write(apply)

    def mark(self) -> bytes | None:
        """The mark stored by the last write that gave one (None if none, or after ``clear()``)."""
        with self._env.read() as txn:
            raw = txn.get(META_MARK, db=self._env.db(DB_META))
        return bytes(raw) if raw is not None else None

    # -- reading --------------------------------------------------------------------------------------

    def versions(self, tenant: str, sop_uid: str) -> list[InstanceVersion]:
        """The version history of an instance, oldest first ([] if the catalog does not know it)."""
        tp = tenant_key(tenant)
        prefix = tp + sop_uid.encode() + b"\x00"
        out: list[InstanceVersion] = []
        with self._env.read() as txn:
            raw = txn.get(tp + sop_uid.encode(), db=self._env.db(DB_INSTANCES))
            current = decode_entry(raw)["ver"] if raw is not None else None
            cursor = txn.cursor(db=self._env.db(DB_VERSIONS))
            if cursor.set_range(prefix):
                for key, body in cursor:
                    if not key.startswith(prefix):
                        break
                    n = version_number(key)
                    v = decode_entry(body)
                    out.append(InstanceVersion(n, v["oid"], v["at"], v["why"], v["size"], v["ts"],
                                               n == current))
        return out

    def _compile(self, level: Level, constraints: Mapping[str, str], fuzzy: bool) -> CompiledQuery:
        if not isinstance(constraints, Mapping):
            raise InvalidInputError("constraints must map attribute keywords to constraint text")
        return compile_query(constraints, fuzzy=fuzzy, allowed=keywords_of(level_and_above(level)),
                             where=f"a {level.value}-level query")

    def _scope(self, level: Level, study_uid: str | None, series_uid: str | None) -> None:
        for name, uid in (("study_uid", study_uid), ("series_uid", series_uid)):
            if uid is not None and (not isinstance(uid, str) or not uid or "\x00" in uid):
                raise InvalidInputError(f"{name} must be a UID string, not {uid!r}")
        if level is Level.PATIENT and (study_uid is not None or series_uid is not None):
            raise InvalidInputError("a patient-level query cannot be scoped to a study or series")
        if level is Level.STUDY and series_uid is not None:
            raise InvalidInputError("a study-level query cannot be scoped to a series; use a series- or "
                                    "instance-level query")

    def query(self, tenant: str, level: Level | str, constraints: Mapping[str, str], *,
              limit: int | None = None, offset: int = 0, include: IncludeFields = (), fuzzy: bool = False,
              study_uid: str | None = None, series_uid: str | None = None) -> list[dict[str, Any]]:
        """Match ``constraints`` at ``level`` within one tenant; results as DICOM JSON, in a stable order.

        Constraints may name attributes of the level and the levels above (a study query matches on
        patient attributes, a series query on study and patient ones). ``study_uid``/``series_uid`` scope
        the query as QIDO-RS paths do (``/studies/{uid}/series``). ``include`` adds attributes to the
        level's defaults (or ``"all"``).
        """
        views, _plan, keywords = self._run(tenant, level, constraints, limit, offset, include, fuzzy,
                                           study_uid, series_uid)
        render = ResultRenderer(keywords).render
        return [render(view) for view in views]

    def explain(self, tenant: str, level: Level | str, constraints: Mapping[str, str], *,
                limit: int | None = None, fuzzy: bool = False, study_uid: str | None = None,
                series_uid: str | None = None) -> QueryPlan:
        """The plan :meth:`query` would use for these arguments."""
        lv = _level(level)
        _check_page(limit, 0)
        self._scope(lv, study_uid, series_uid)
        compiled = self._compile(lv, constraints, fuzzy)
        with self._env.read() as txn:
            reader = CatalogReader(txn, self._env.dbs, tenant_key(tenant))
            runner = QueryRunner(reader, lv, compiled, study_uid=study_uid, series_uid=series_uid)
            return runner.plan(limit)[1]

    def _run(self, tenant: str, level: Level | str, constraints: Mapping[str, str], limit: int | None,
             offset: int, include: IncludeFields, fuzzy: bool, study_uid: str | None,
             series_uid: str | None) -> tuple[list[dict[str, Any]], QueryPlan, tuple[str, ...]]:
        lv = _level(level)
        tp = tenant_key(tenant)
        _check_page(limit, offset)
        self._scope(lv, study_uid, series_uid)
        compiled = self._compile(lv, constraints, fuzzy)
        keywords = result_keywords(lv, include, study_scoped=study_uid is not None,
                                   series_scoped=series_uid is not None)
        with self._env.read() as txn:
            reader = CatalogReader(txn, self._env.dbs, tp)
            runner = QueryRunner(reader, lv, compiled, study_uid=study_uid, series_uid=series_uid)
            views, plan = runner.run(limit, offset)
        return views, plan, keywords

    def instances(self, tenant: str, study_uid: str, series_uid: str | None = None) -> Iterator[CatalogEntry]:
        """The current instances of a study (or one of its series), in SeriesNumber then InstanceNumber
        order; read in one transaction, then yielded."""
        self._scope(Level.INSTANCE, study_uid, series_uid)
        entries: list[CatalogEntry] = []
        with self._env.read() as txn:
            reader = CatalogReader(txn, self._env.dbs, tenant_key(tenant))
            series_uids: Sequence[str] = [series_uid] if series_uid is not None else \
                list(reader.study_series(study_uid))
            for se in series_uids:
                for sop in reader.series_instances(study_uid, se):
                    e = reader.instance(sop)
                    if e is None:
                        continue
                    entries.append(_catalog_entry(sop, e))
        yield from entries

    def instance(self, tenant: str, study_uid: str, series_uid: str | None,
                 sop_uid: str) -> CatalogEntry | None:
        """One current instance by its SOP Instance UID (one look-up), or None unless it is in that study
        (and series, when given)."""
        self._scope(Level.INSTANCE, study_uid, series_uid)
        with self._env.read() as txn:
            e = CatalogReader(txn, self._env.dbs, tenant_key(tenant)).instance(sop_uid)
        if e is None or e["st"] != study_uid or (series_uid is not None and e["se"] != series_uid):
            return None
        return _catalog_entry(sop_uid, e)

    def counts(self, tenant: str) -> dict[str, int]:
        """How many patients, studies, series and current instances one tenant has."""
        tp = tenant_key(tenant)
        out: dict[str, int] = {}
        with self._env.read() as txn:
            for label, name in (("patients", DB_PATIENTS), ("studies", DB_STUDIES), ("series", DB_SERIES),
                                ("instances", DB_INSTANCES)):
                n = 0
                cursor = txn.cursor(db=self._env.db(name))
                if cursor.set_range(tp):
                    for key in cursor.iternext(keys=True, values=False):
                        if not key.startswith(tp):
                            break
                        n += 1
                out[label] = n
        return out


def _catalog_entry(sop_uid: str, e: dict[str, Any]) -> CatalogEntry:
    """An instance's catalog record (as :class:`CatalogReader` decodes it) as a CatalogEntry."""
    return CatalogEntry(e["st"], e["se"], sop_uid, e["oid"], e["size"], e["ts"], e["at"], e["ver"],
                        as_values(e["v"]))
