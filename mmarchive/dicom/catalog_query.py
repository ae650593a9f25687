"""Answering a catalog query: plan, scan one index, filter with the compiled matcher, order, page.

The planner looks at the constraints a query can use an index for (a UID list, PatientID, AccessionNumber,
PatientName exact, prefix or fuzzy words, StudyDate range, ModalitiesInStudy, Modality,
SeriesInstanceUID, SOPInstanceUID, the study/series a query is scoped to) and probes each index range,
counting keys up to :data:`PROBE_CAP`; it scans only the smallest (a study-level index serving a series
or instance query costs more, by the fan-out factors below) and filters what it finds with the whole
:class:`~mmarchive.dicom.matching.CompiledQuery`. With no usable constraint, or only unselective ones
when a limit is given, it walks the level in its order and stops once the page is full.

Results come in one stable order per level, whatever the plan: patients by PatientID (then issuer),
studies by StudyDate, StudyTime, StudyInstanceUID (absent dates first), series by StudyInstanceUID,
SeriesNumber, SeriesInstanceUID, instances by their series' order then InstanceNumber, SOPInstanceUID.
Candidates are *views*: the merged values of an entry and the levels above it plus the computed
attributes, exactly what matching and the results see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mmarchive.dicom.attributes import Level
from mmarchive.dicom.catalog_keys import (
    DB_INSTANCES,
    DB_LOOKUP,
    DB_MEMBERS,
    DB_PATIENTS,
    DB_SERIES,
    DB_STUDIES,
    LEVEL_KEYWORDS,
    LOOKUP_ACCESSION,
    LOOKUP_MODALITIES,
    LOOKUP_NAME,
    LOOKUP_NAME_WORD,
    LOOKUP_PATIENT_ID,
    LOOKUP_PATIENT_NAME,
    LOOKUP_PATIENT_NAME_WORD,
    LOOKUP_SERIES_MODALITY,
    LOOKUP_STUDY_DATE,
    MEMBER_STUDY_SERIES,
    decode_entry,
    index_value,
    instance_member_prefix,
    is_cut,
    number_key,
    study_order_value,
)
from mmarchive.dicom.catalog_results import keywords_of, level_and_above
from mmarchive.dicom.catalog_writes import study_modalities
from mmarchive.dicom.matching import CompiledConstraint, CompiledQuery

#: Keys counted at most when probing how selective an index range is.
PROBE_CAP: Final = 2000
#: Assumed series per study and instances per series, to compare plans of different levels.
SERIES_PER_STUDY: Final = 4
INSTANCES_PER_SERIES: Final = 50

View = dict[str, Any]
Entry = dict[str, Any]


@dataclass(frozen=True)
class KeyRange:
    """Keys of one database from ``start`` while they begin with ``prefix`` and stay below ``end``."""

    db: bytes
    start: bytes
    prefix: bytes
    end: bytes | None = None
    #: The target is the key after ``strip`` bytes (else the value is the target).
    target_in_key: bool = False
    strip: int = 0


@dataclass(frozen=True)
class QueryPlan:
    """What the planner chose: the source scanned, its probed key count (None: not probed) and level."""

    level: Level
    source: str
    targets: str
    estimate: int | None
    streaming: bool


@dataclass(frozen=True)
class _Candidate:
    source: str
    targets: Level
    ranges: tuple[KeyRange, ...] = ()
    direct: tuple[str, ...] = ()
    #: Yields targets in the level's result order (can stop early).
    ordered: bool = False


def _prefix_range(db: bytes, prefix: bytes, **kw: Any) -> KeyRange:
    return KeyRange(db, prefix, prefix, **kw)


def _lookup_ranges(tp: bytes, kind: bytes, constraint: CompiledConstraint,
                   normalise: Callable[[str], str] = str) -> tuple[KeyRange, ...] | None:
    """Index ranges serving a constraint on an attribute that has a lookup: exact values, else prefixes."""
    head = tp + kind
    if constraint.exact is not None:
        return tuple(_prefix_range(DB_LOOKUP, head + index_value(normalise(v)) + (
            b"" if is_cut(normalise(v)) else b"\x00")) for v in constraint.exact)
    if constraint.prefixes is not None and all(constraint.prefixes):
        return tuple(_prefix_range(DB_LOOKUP, head + index_value(normalise(p)))
                     for p in constraint.prefixes)
    return None


class CatalogReader:
    """One read transaction of one tenant: cached entry loads, views, planning and execution."""

    def __init__(self, txn: Any, dbs: Mapping[bytes, Any], tp: bytes) -> None:
        self.txn = txn
        self.dbs = dbs
        self.tp = tp
        self._studies: dict[str, Entry | None] = {}
        self._series: dict[tuple[str, str], Entry | None] = {}
        self._study_views: dict[str, View | None] = {}
        self._series_views: dict[tuple[str, str], View | None] = {}

    # -- entries and views ------------------------------------------------------------------------

    def study(self, uid: str) -> Entry | None:
        if uid not in self._studies:
            raw = self.txn.get(self.tp + uid.encode(), db=self.dbs[DB_STUDIES])
            self._studies[uid] = decode_entry(raw) if raw is not None else None
        return self._studies[uid]

    def series(self, series_uid: str, study_uid: str) -> Entry | None:
        key = (series_uid, study_uid)
        if key not in self._series:
            raw = self.txn.get(self.tp + series_uid.encode() + b"\x00" + study_uid.encode(),
                               db=self.dbs[DB_SERIES])
            self._series[key] = decode_entry(raw) if raw is not None else None
        return self._series[key]

    def instance(self, sop_uid: str) -> Entry | None:
        raw = self.txn.get(self.tp + sop_uid.encode(), db=self.dbs[DB_INSTANCES])
        return decode_entry(raw) if raw is not None else None

    def patient_view(self, pkey: str, entry: Entry) -> View:
        view: View = dict(entry["v"])
        view["NumberOfPatientRelatedStudies"] = (entry["ns"],)
        view["NumberOfPatientRelatedSeries"] = (entry["ne"],)
        view["NumberOfPatientRelatedInstances"] = (entry["ni"],)
        return view

    def study_view(self, uid: str) -> View | None:
        if uid in self._study_views:
            return self._study_views[uid]
        entry = self.study(uid)
        view: View | None = None
        if entry is not None:
            view = {**entry["pv"], **entry["v"]}
            view["ModalitiesInStudy"] = study_modalities(entry)
            view["SOPClassesInStudy"] = sorted(entry["cls"])
            view["NumberOfStudyRelatedSeries"] = (entry["ns"],)
            view["NumberOfStudyRelatedInstances"] = (entry["ni"],)
        self._study_views[uid] = view
        return view

    def series_view(self, series_uid: str, study_uid: str) -> View | None:
        key = (series_uid, study_uid)
        if key in self._series_views:
            return self._series_views[key]
        entry = self.series(series_uid, study_uid)
        study = self.study_view(study_uid) if entry is not None else None
        view: View | None = None
        if entry is not None and study is not None:
            view = {**study, **entry["v"]}
            view["NumberOfSeriesRelatedInstances"] = (entry["ni"],)
        self._series_views[key] = view
        return view

    def instance_view(self, entry: Entry) -> View | None:
        series = self.series_view(entry["se"], entry["st"])
        if series is None:
            return None
        # Upper-level attributes come from the aggregates, not from this instance's own header.
        view = dict(series)
        values = entry["v"]
        for keyword in _INSTANCE_LEVEL:
            if keyword in values:
                view[keyword] = values[keyword]
        view["AvailableTransferSyntaxUID"] = [entry["ts"]] if entry["ts"] else []
        return view

    # -- scanning -----------------------------------------------------------------------------------

    def scan(self, r: KeyRange) -> Iterator[str]:
        cursor = self.txn.cursor(db=self.dbs[r.db])
        if not cursor.set_range(r.start):
            return
        prefix, end = r.prefix, r.end
        for key, value in cursor:
            if not key.startswith(prefix) or (end is not None and key >= end):
                return
            yield (key[r.strip:] if r.target_in_key else value).decode()

    def count(self, ranges: Sequence[KeyRange], cap: int) -> int:
        n = 0
        for r in ranges:
            for _ in self.scan(r):
                n += 1
                if n >= cap:
                    return n
        return n

    def study_series(self, study_uid: str) -> Iterator[str]:
        """A study's series UIDs in SeriesNumber order."""
        yield from self.scan(_prefix_range(
            DB_MEMBERS, self.tp + MEMBER_STUDY_SERIES + study_uid.encode() + b"\x00"))

    def series_instances(self, study_uid: str, series_uid: str) -> Iterator[str]:
        """A series' SOP Instance UIDs in InstanceNumber order."""
        prefix = instance_member_prefix(self.tp, study_uid, series_uid)
        yield from self.scan(_prefix_range(DB_MEMBERS, prefix))


_INSTANCE_LEVEL: Final = LEVEL_KEYWORDS[Level.INSTANCE]
#: The keywords of each level and the levels above it, less SpecificCharacterSet (not a constraint to
#: check twice): what a query's upper levels can be filtered on before loading lower entries.
_UPPER_KEYWORDS: Final = {level: keywords_of(level_and_above(level)) - {"SpecificCharacterSet"}
                          for level in Level}


# -- candidates per level -------------------------------------------------------------------------

def _casefold(text: str) -> str:
    return text.rstrip("^ ").casefold()


def _study_candidates(tp: bytes, query: CompiledQuery) -> list[_Candidate]:
    out: list[_Candidate] = []
    uid = query.get("StudyInstanceUID")
    if uid is not None and uid.exact is not None:
        out.append(_Candidate("StudyInstanceUID", Level.STUDY, direct=uid.exact))
    for keyword, kind, normalise in (("PatientID", LOOKUP_PATIENT_ID, str),
                                     ("AccessionNumber", LOOKUP_ACCESSION, str),
                                     ("PatientName", LOOKUP_NAME, _casefold),
                                     ("ModalitiesInStudy", LOOKUP_MODALITIES, str)):
        constraint = query.get(keyword)
        if constraint is None:
            continue
        ranges: tuple[KeyRange, ...] | None
        if constraint.fuzzy_words is not None:
            ranges = tuple(_prefix_range(DB_LOOKUP, tp + LOOKUP_NAME_WORD + index_value(w))
                           for w in constraint.fuzzy_words)
        else:
            ranges = _lookup_ranges(tp, kind, constraint, normalise)
        if ranges:
            out.append(_Candidate(keyword, Level.STUDY, ranges=ranges))
    date = query.get("StudyDate")
    if date is not None and date.text_range is not None:
        lo, hi = date.text_range
        head = tp + LOOKUP_STUDY_DATE
        # Keys are head + date(8 digits) + " " + time + NUL + uid: a date's keys lie below date + 0xFF.
        end = None if hi == "\uffff" else head + hi.encode() + b"\xff"
        out.append(_Candidate("StudyDate", Level.STUDY, ordered=True, ranges=(
            KeyRange(DB_LOOKUP, head + (lo or "0").encode(), head, end),)))
    return out


def _walk_studies(tp: bytes) -> _Candidate:
    head = tp + LOOKUP_STUDY_DATE
    return _Candidate("walk", Level.STUDY, ranges=(_prefix_range(DB_LOOKUP, head),), ordered=True)


def _series_candidates(tp: bytes, query: CompiledQuery) -> list[_Candidate]:
    out: list[_Candidate] = []
    uid = query.get("SeriesInstanceUID")
    if uid is not None and uid.exact is not None:
        out.append(_Candidate("SeriesInstanceUID", Level.SERIES, ranges=tuple(
            _prefix_range(DB_SERIES, tp + u.encode() + b"\x00", target_in_key=True, strip=len(tp))
            for u in uid.exact)))
    modality = query.get("Modality")
    if modality is not None:
        ranges = _lookup_ranges(tp, LOOKUP_SERIES_MODALITY, modality)
        if ranges:
            out.append(_Candidate("Modality", Level.SERIES, ranges=ranges))
    return out


def _patient_candidates(tp: bytes, query: CompiledQuery) -> list[_Candidate]:
    out: list[_Candidate] = []
    pid = query.get("PatientID")
    if pid is not None:
        if pid.exact is not None:
            out.append(_Candidate("PatientID", Level.PATIENT, ranges=tuple(
                _prefix_range(DB_PATIENTS, tp + index_value(v) + b"\x00", target_in_key=True,
                              strip=len(tp)) for v in pid.exact)))
        elif pid.prefixes is not None and all(pid.prefixes):
            out.append(_Candidate("PatientID", Level.PATIENT, ranges=tuple(
                _prefix_range(DB_PATIENTS, tp + index_value(p), target_in_key=True, strip=len(tp))
                for p in pid.prefixes)))
    name = query.get("PatientName")
    if name is not None:
        if name.fuzzy_words is not None:
            ranges: tuple[KeyRange, ...] | None = tuple(
                _prefix_range(DB_LOOKUP, tp + LOOKUP_PATIENT_NAME_WORD + index_value(w))
                for w in name.fuzzy_words)
        else:
            ranges = _lookup_ranges(tp, LOOKUP_PATIENT_NAME, name, _casefold)
        if ranges:
            out.append(_Candidate("PatientName", Level.PATIENT, ranges=ranges))
    return out


_FANOUT: Final = {
    (Level.STUDY, Level.STUDY): 1, (Level.STUDY, Level.SERIES): SERIES_PER_STUDY,
    (Level.STUDY, Level.INSTANCE): SERIES_PER_STUDY * INSTANCES_PER_SERIES,
    (Level.SERIES, Level.SERIES): 1, (Level.SERIES, Level.INSTANCE): INSTANCES_PER_SERIES,
    (Level.INSTANCE, Level.INSTANCE): 1, (Level.PATIENT, Level.PATIENT): 1,
}


class QueryRunner:
    """Plans and runs one query at one level in one read transaction."""

    def __init__(self, reader: CatalogReader, level: Level, query: CompiledQuery, *,
                 study_uid: str | None, series_uid: str | None) -> None:
        self.r = reader
        self.level = level
        self.query = query
        self.study_uid = study_uid
        self.series_uid = series_uid
        self._study_query = query.restricted_to(_UPPER_KEYWORDS[Level.STUDY])
        self._series_query = query.restricted_to(_UPPER_KEYWORDS[Level.SERIES])

    # -- planning -------------------------------------------------------------------------------------

    def _candidates(self) -> list[_Candidate]:
        tp, q, level = self.r.tp, self.query, self.level
        if level is Level.PATIENT:
            return _patient_candidates(tp, q)
        if level is Level.INSTANCE:
            sop = q.get("SOPInstanceUID")
            if sop is not None and sop.exact is not None:
                return [_Candidate("SOPInstanceUID", Level.INSTANCE, direct=sop.exact)]
        if self.series_uid is not None and level is not Level.STUDY:
            if self.study_uid is not None:
                return [_Candidate("scope", Level.SERIES,
                                   direct=(self.series_uid + "\x00" + self.study_uid,))]
            return [_Candidate("scope", Level.SERIES, ranges=(_prefix_range(
                DB_SERIES, tp + self.series_uid.encode() + b"\x00", target_in_key=True, strip=len(tp)),))]
        if self.study_uid is not None:
            return [_Candidate("scope", Level.STUDY, direct=(self.study_uid,), ordered=True)]
        out = _study_candidates(tp, q)
        if level is not Level.STUDY:
            out += _series_candidates(tp, q)
        return out

    def plan(self, limit: int | None) -> tuple[_Candidate, QueryPlan]:
        best: tuple[int, int, _Candidate] | None = None
        for c in self._candidates():
            n = len(c.direct) if c.direct else self.r.count(c.ranges, PROBE_CAP)
            cost = n * _FANOUT[(c.targets, self.level)]
            if best is None or cost < best[0]:
                best = (cost, n, c)
            if n <= 8:
                break
        if best is not None and (best[1] < PROBE_CAP or limit is None):
            cost, _n, c = best
            return c, QueryPlan(self.level, c.source, c.targets.value, cost, c.ordered)
        # Nothing selective and a page to fill: walk in result order and stop once the page is full
        # (at study level along the StudyDate range when there is one: it walks fewer).
        tp = self.r.tp
        if self.level is Level.PATIENT:
            c = _Candidate("walk", Level.PATIENT, ranges=(_prefix_range(
                DB_PATIENTS, tp, target_in_key=True, strip=len(tp)),), ordered=True)
        elif self.level is Level.STUDY:
            c = best[2] if best is not None and best[2].source == "StudyDate" else _walk_studies(tp)
        else:
            c = _Candidate("walk", Level.SERIES, ordered=True)
        return c, QueryPlan(self.level, c.source, c.targets.value, None, c.ordered)

    # -- execution ----------------------------------------------------------------------------------

    def _targets(self, c: _Candidate) -> Iterator[str]:
        if c.direct:
            yield from c.direct
            return
        seen: set[str] = set()
        for r in c.ranges:
            for target in self.r.scan(r):
                if target not in seen:
                    seen.add(target)
                    yield target

    def run(self, limit: int | None, offset: int) -> tuple[list[View], QueryPlan]:
        c, plan = self.plan(limit)
        if self.level is Level.PATIENT:
            views = self._patients(c)
        elif c.targets is Level.STUDY:
            views = self._from_studies(c)
        elif c.targets is Level.SERIES and c.source == "walk":
            views = self._walk_series()
        elif c.targets is Level.SERIES:
            views = self._from_series(c)
        else:
            views = self._from_instances(c)
        out: list[View] = []
        skipped = 0
        for view in views:
            if skipped < offset:
                skipped += 1
                continue
            out.append(view)
            if limit is not None and len(out) >= limit:
                break
        return out, plan

    def _patients(self, c: _Candidate) -> Iterator[View]:
        pkeys = self._targets(c)
        if not c.ordered:
            pkeys = iter(sorted(set(pkeys)))
        db = self.r.dbs[DB_PATIENTS]
        for pkey in pkeys:
            raw = self.r.txn.get(self.r.tp + pkey.encode(), db=db)
            if raw is None:
                continue
            view = self.r.patient_view(pkey, decode_entry(raw))
            if self.query.matches(view):
                yield view

    def _study_order(self, uids: Iterator[str], ordered: bool) -> Iterator[str]:
        if ordered:
            return uids
        keyed = []
        for uid in set(uids):
            entry = self.r.study(uid)
            if entry is not None:
                keyed.append((index_value(study_order_value(entry["v"])), uid.encode(), uid))
        keyed.sort()
        return iter([uid for _o, _u, uid in keyed])

    def _matching_studies(self, c: _Candidate) -> Iterator[str]:
        for uid in self._study_order(self._targets(c), c.ordered):
            view = self.r.study_view(uid)
            if view is not None and self._study_query.matches(view):
                yield uid

    def _from_studies(self, c: _Candidate) -> Iterator[View]:
        if self.level is Level.STUDY:  # the study part of the query is the whole query here
            for uid in self._matching_studies(c):
                view = self.r.study_view(uid)
                if view is not None:
                    yield view
            return
        # Series and instances are ordered by study UID first, whatever order the studies came in.
        for study_uid in sorted(self._matching_studies(c)):
            yield from self._series_of(study_uid)

    def _series_of(self, study_uid: str) -> Iterator[View]:
        for series_uid in self.r.study_series(study_uid):
            yield from self._one_series(series_uid, study_uid)

    def _one_series(self, series_uid: str, study_uid: str) -> Iterator[View]:
        view = self.r.series_view(series_uid, study_uid)
        if view is None:
            return
        if self.level is Level.SERIES:
            if self.query.matches(view):
                yield view
            return
        if not self._series_query.matches(view):
            return
        for sop_uid in self.r.series_instances(study_uid, series_uid):
            entry = self.r.instance(sop_uid)
            if entry is None:
                continue
            iview = self.r.instance_view(entry)
            if iview is not None and self.query.matches(iview):
                yield iview

    def _walk_series(self) -> Iterator[View]:
        """Every series of the tenant in result order (study UID, SeriesNumber, series UID)."""
        tp = self.r.tp
        head = tp + MEMBER_STUDY_SERIES
        cursor = self.r.txn.cursor(db=self.r.dbs[DB_MEMBERS])
        if not cursor.set_range(head):
            return
        start = len(head)
        last_study: str | None = None
        study_ok = False
        for key, series_uid in cursor:
            if not key.startswith(head):
                return
            study_uid = key[start:key.index(b"\x00", start)].decode()
            if study_uid != last_study:
                last_study = study_uid
                view = self.r.study_view(study_uid)
                study_ok = view is not None and self._study_query.matches(view)
            if study_ok:
                yield from self._one_series(series_uid.decode(), study_uid)

    def _from_series(self, c: _Candidate) -> Iterator[View]:
        keyed = []
        for key in set(self._targets(c)):
            series_uid, _, study_uid = key.partition("\x00")
            entry = self.r.series(series_uid, study_uid)
            if entry is not None:
                keyed.append((study_uid.encode(), number_key(entry["v"], "SeriesNumber"),
                              series_uid.encode(), series_uid, study_uid))
        keyed.sort()
        for _s, _n, _u, series_uid, study_uid in keyed:
            study = self.r.study_view(study_uid)
            if study is not None and self._study_query.matches(study):
                yield from self._one_series(series_uid, study_uid)

    def _from_instances(self, c: _Candidate) -> Iterator[View]:
        keyed = []
        for sop_uid in set(self._targets(c)):
            entry = self.r.instance(sop_uid)
            if entry is None or (self.study_uid is not None and entry["st"] != self.study_uid) or (
                    self.series_uid is not None and entry["se"] != self.series_uid):
                continue
            series = self.r.series(entry["se"], entry["st"])
            series_number = number_key(series["v"], "SeriesNumber") if series is not None else b""
            keyed.append((entry["st"].encode(), series_number, entry["se"].encode(),
                          number_key(entry["v"], "InstanceNumber"), sop_uid.encode(), entry))
        keyed.sort(key=lambda k: k[:5])
        for *_order, entry in keyed:
            view = self.r.instance_view(entry)
            if view is not None and self.query.matches(view):
                yield view

