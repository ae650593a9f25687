"""Changing the DICOM catalog inside one LMDB write transaction: instances, versions and the aggregates.

A :class:`CatalogWriter` lives for one write transaction. Instance and version entries are written as
each call comes; the patient, study and series entries (the aggregates) are loaded once into the writer,
changed in memory and written by :meth:`CatalogWriter.flush` together with their member and lookup keys,
so a batch of many instances of one study writes that study once.

The rules the aggregates keep (``seq`` is a catalog-wide counter taken each time an instance becomes
current): a series or study takes its attribute values from its current instance of highest ``seq`` (the
one most recently added) and counts its current instances; a study belongs to the patient named by that
instance; a patient takes its values from its study of highest ``seq`` and sums its studies' counts. When
the instance a value came from goes away, the writer marks the aggregate *lost* and, at flush, recomputes
it from the members that remain (reading them: rare, and once per batch). Entry bodies (JSON):

- instance: ``st`` study UID, ``se`` series UID, ``v`` values, ``seq``, ``ver`` version number, ``oid``,
  ``size``, ``ts`` transfer syntax, ``at`` stored at, ``why`` reason;
- version: ``oid``, ``at``, ``why``, ``size``, ``ts``, and ``v`` (values) once it is not current;
- series: ``v``, ``seq``, ``ni`` instances;
- study: ``v`` study values, ``sp`` patient values of its source instance, ``pv`` its patient's current
  values (a copy, for matching and results), ``pk`` patient key, ``seq``, ``ns`` series, ``ni``
  instances, ``mods`` {Modality: series}, ``cls`` {SOPClassUID: instances};
- patient: ``v``, ``seq``, ``ns`` studies, ``ne`` series, ``ni`` instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmarchive.dicom.catalog_keys import (
    DB_INSTANCES,
    DB_LOOKUP,
    DB_MEMBERS,
    DB_META,
    DB_PATIENTS,
    DB_SERIES,
    DB_STUDIES,
    DB_VERSIONS,
    META_SEQ,
    PATIENT_KEYWORDS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    decode_entry,
    encode_entry,
    first_text,
    instance_member_key,
    instance_member_prefix,
    patient_key,
    patient_lookup_keys,
    patient_member_key,
    patient_member_prefix,
    required_uid,
    select,
    series_db_key,
    series_lookup_keys,
    series_member_key,
    study_lookup_keys,
    tenant_key,
    version_key,
    version_number,
)
from mmarchive.dicom.catalog_records import AddOutcome, CatalogInstance, VersionRole
from mmarchive.errors import InvalidInputError, NotFoundError

Entry = dict[str, Any]


class _Loaded:
    """An aggregate loaded into the writer: stored bytes, a working copy, whether it lost its source."""

    __slots__ = ("entry", "lost", "original", "raw")

    def __init__(self, raw: bytes | None, fresh: Entry) -> None:
        self.raw = raw
        self.original: Entry | None = decode_entry(raw) if raw is not None else None
        self.entry: Entry = decode_entry(raw) if raw is not None else fresh
        self.lost = False


def _new_study() -> Entry:
    return {"v": {}, "sp": {}, "pv": {}, "pk": "", "seq": 0, "ns": 0, "ni": 0, "mods": {}, "cls": {}}


def _new_series() -> Entry:
    return {"v": {}, "seq": 0, "ni": 0}


def _new_patient() -> Entry:
    return {"v": {}, "seq": 0, "ns": 0, "ne": 0, "ni": 0}


def study_modalities(study: Entry) -> list[str]:
    return sorted(m for m, n in study["mods"].items() if n > 0 and m)


def _bump(counts: dict[str, int], key: str, delta: int) -> None:
    n = counts.get(key, 0) + delta
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


def _check_instance(item: CatalogInstance) -> None:
    if not isinstance(item.object_id, str) or not item.object_id:
        raise InvalidInputError(f"object_id must be a non-empty string, not {item.object_id!r}")
    if not isinstance(item.size, int) or item.size < 0:
        raise InvalidInputError(f"size must be a non-negative integer, not {item.size!r}")
    if not isinstance(item.values, Mapping):
        raise InvalidInputError("values must map attribute keywords to tuples of values")
    if not isinstance(item.reason, str) or len(item.reason) > 64:
        raise InvalidInputError("reason must be a short string (at most 64 characters)")
    if not isinstance(item.role, VersionRole):
        raise InvalidInputError(f"role must be a VersionRole, not {item.role!r}")


class CatalogWriter:
    """Applies adds and removals in one write transaction; call :meth:`flush` before committing."""

    def __init__(self, txn: Any, dbs: Mapping[bytes, Any]) -> None:
        self.txn = txn
        self._meta = dbs[DB_META]
        self._patients_db = dbs[DB_PATIENTS]
        self._studies_db = dbs[DB_STUDIES]
        self._series_db = dbs[DB_SERIES]
        self._instances_db = dbs[DB_INSTANCES]
        self._versions_db = dbs[DB_VERSIONS]
        self._members_db = dbs[DB_MEMBERS]
        self._lookup_db = dbs[DB_LOOKUP]
        raw = txn.get(META_SEQ, db=self._meta)
        self.seq = int(raw) if raw else 0
        self._studies: dict[tuple[bytes, str], _Loaded] = {}
        self._series: dict[tuple[bytes, str, str], _Loaded] = {}
        self._patients: dict[tuple[bytes, str], _Loaded] = {}

    # -- loading aggregates -----------------------------------------------------------------------

    def _study(self, tp: bytes, study_uid: str) -> _Loaded:
        key = (tp, study_uid)
        loaded = self._studies.get(key)
        if loaded is None:
            loaded = _Loaded(self.txn.get(tp + study_uid.encode(), db=self._studies_db), _new_study())
            self._studies[key] = loaded
        return loaded

    def _one_series(self, tp: bytes, series_uid: str, study_uid: str) -> _Loaded:
        key = (tp, series_uid, study_uid)
        loaded = self._series.get(key)
        if loaded is None:
            loaded = _Loaded(self.txn.get(series_db_key(tp, series_uid, study_uid), db=self._series_db),
                             _new_series())
            self._series[key] = loaded
        return loaded

    def _patient(self, tp: bytes, pkey: str) -> _Loaded:
        key = (tp, pkey)
        loaded = self._patients.get(key)
        if loaded is None:
            loaded = _Loaded(self.txn.get(tp + pkey.encode(), db=self._patients_db), _new_patient())
            self._patients[key] = loaded
        return loaded

    # -- versions -----------------------------------------------------------------------------------

    def _versions(self, tp: bytes, sop_uid: str) -> list[tuple[int, Entry]]:
        prefix = tp + sop_uid.encode() + b"\x00"
        out: list[tuple[int, Entry]] = []
        cursor = self.txn.cursor(db=self._versions_db)
        if cursor.set_range(prefix):
            for key, raw in cursor:
                if not key.startswith(prefix):
                    break
                out.append((version_number(key), decode_entry(raw)))
        return out

    # -- the operations -----------------------------------------------------------------------------

    def add(self, item: CatalogInstance) -> AddOutcome:
        """Index one object as the current or a non-current version of its SOP instance."""
        _check_instance(item)
        tp = tenant_key(item.tenant)
        values = item.values
        sop_uid = required_uid(values, "SOPInstanceUID")
        required_uid(values, "StudyInstanceUID")
        required_uid(values, "SeriesInstanceUID")
        ikey = tp + sop_uid.encode()
        raw = self.txn.get(ikey, db=self._instances_db)
        current = decode_entry(raw) if raw is not None else None
        if current is not None and current["oid"] == item.object_id:
            return AddOutcome.UNCHANGED
        versions = self._versions(tp, sop_uid)
        same = next((n for n, v in versions if v["oid"] == item.object_id), None)
        want_current = item.role is VersionRole.CURRENT
        if same is not None and not want_current:
            return AddOutcome.UNCHANGED
        number = same if same is not None else (versions[-1][0] + 1 if versions else 1)
        version: Entry = {"oid": item.object_id, "at": float(item.stored_at), "why": item.reason,
                          "size": item.size, "ts": item.transfer_syntax}
        if not want_current:
            version["v"] = dict(values)
            self._put(self._versions_db, version_key(tp, sop_uid, number), version)
            return AddOutcome.RECORDED
        if current is not None:
            self._retire(tp, sop_uid, current)
        if same is not None:  # an earlier version made current again: keep its first record
            version = dict(next(v for n, v in versions if n == same))
            version.pop("v", None)
        self._put(self._versions_db, version_key(tp, sop_uid, number), version)
        self._attach(tp, sop_uid, values, number, version)
        if same is not None:
            return AddOutcome.RESTORED
        return AddOutcome.REPLACED if current is not None else AddOutcome.ADDED

    def set_current(self, tenant: str, sop_uid: str, object_id: str) -> AddOutcome:
        """Make the version with this object id current again (its values as stored with it)."""
        tp = tenant_key(tenant)
        raw = self.txn.get(tp + sop_uid.encode(), db=self._instances_db)
        current = decode_entry(raw) if raw is not None else None
        if current is not None and current["oid"] == object_id:
            return AddOutcome.UNCHANGED
        for number, version in self._versions(tp, sop_uid):
            if version["oid"] == object_id:
                if "v" not in version:
                    raise NotFoundError(f"version {number} of {sop_uid} in tenant {tenant} has no "
                                        "values recorded")
                values = version.pop("v")
                if current is not None:
                    self._retire(tp, sop_uid, current)
                self._put(self._versions_db, version_key(tp, sop_uid, number), version)
                self._attach(tp, sop_uid, values, number, version)
                return AddOutcome.RESTORED
        raise NotFoundError(f"tenant {tenant} has no version of SOP instance {sop_uid} with object id "
                            f"{object_id}; see Catalog.versions() for the ones it has")

    def remove(self, tenant: str, sop_uid: str) -> bool:
        """Drop an instance and its whole version history; False if the catalog did not hold it."""
        tp = tenant_key(tenant)
        ikey = tp + sop_uid.encode()
        raw = self.txn.get(ikey, db=self._instances_db)
        found = False
        if raw is not None:
            self._detach(tp, sop_uid, decode_entry(raw))
            self.txn.delete(ikey, db=self._instances_db)
            found = True
        prefix = ikey + b"\x00"
        cursor = self.txn.cursor(db=self._versions_db)
        if cursor.set_range(prefix):
            while cursor.key().startswith(prefix):
                found = True
                if not cursor.delete():
                    break
        return found

    # -- instances in and out of the aggregates ------------------------------------------------------

    def _retire(self, tp: bytes, sop_uid: str, current: Entry) -> None:
        """The current version stops being current: keep its values in its version entry."""
        self._detach(tp, sop_uid, current)
        vkey = version_key(tp, sop_uid, current["ver"])
        raw = self.txn.get(vkey, db=self._versions_db)
        version = decode_entry(raw) if raw is not None else {
            "oid": current["oid"], "at": current["at"], "why": current["why"], "size": current["size"],
            "ts": current["ts"]}
        version["v"] = current["v"]
        self._put(self._versions_db, vkey, version)
        self.txn.delete(tp + sop_uid.encode(), db=self._instances_db)

    def _detach(self, tp: bytes, sop_uid: str, current: Entry) -> None:
        study_uid, series_uid, seq, values = current["st"], current["se"], current["seq"], current["v"]
        series = self._one_series(tp, series_uid, study_uid)
        series.entry["ni"] -= 1
        if series.entry["seq"] == seq:
            series.lost = True
        study = self._study(tp, study_uid)
        e = study.entry
        e["ni"] -= 1
        _bump(e["cls"], first_text(values, "SOPClassUID"), -1)
        if e["seq"] == seq:
            study.lost = True
        self.txn.delete(instance_member_key(tp, study_uid, series_uid, sop_uid, values), db=self._members_db)

    def _attach(self, tp: bytes, sop_uid: str, values: Mapping[str, Any], number: int,
                version: Entry) -> None:
        study_uid = required_uid(values, "StudyInstanceUID")
        series_uid = required_uid(values, "SeriesInstanceUID")
        self.seq += 1
        seq = self.seq
        series = self._one_series(tp, series_uid, study_uid)
        s = series.entry
        s["ni"] += 1
        s["v"] = select(values, SERIES_KEYWORDS)
        s["seq"] = seq
        series.lost = False
        study = self._study(tp, study_uid)
        e = study.entry
        e["ni"] += 1
        _bump(e["cls"], first_text(values, "SOPClassUID"), 1)
        e["v"] = select(values, STUDY_KEYWORDS)
        e["sp"] = select(values, PATIENT_KEYWORDS)
        e["pk"] = patient_key(values)
        e["seq"] = seq
        study.lost = False
        stored = {k: list(v) for k, v in values.items()}
        try:
            body = encode_entry({"st": study_uid, "se": series_uid, "v": stored, "seq": seq, "ver": number,
                                 "oid": version["oid"], "size": version["size"], "ts": version["ts"],
                                 "at": version["at"], "why": version["why"]})
        except TypeError as exc:
            raise InvalidInputError(f"instance {sop_uid}: values must be str, int or float ({exc})") from exc
        self.txn.put(tp + sop_uid.encode(), body, db=self._instances_db)
        self.txn.put(instance_member_key(tp, study_uid, series_uid, sop_uid, values), sop_uid.encode(),
                     db=self._members_db)

    def _put(self, db: Any, key: bytes, entry: Entry) -> None:
        try:
            self.txn.put(key, encode_entry(entry), db=db)
        except TypeError as exc:
            raise InvalidInputError(f"values must be str, int or float ({exc})") from exc

    # -- flush: aggregates, members and lookups ---------------------------------------------------------

    def _newest_member(self, prefix: bytes, tp: bytes) -> Entry | None:
        """The current instance of highest seq among the instance members under ``prefix``."""
        best: Entry | None = None
        cursor = self.txn.cursor(db=self._members_db)
        if cursor.set_range(prefix):
            for key, sop in cursor:
                if not key.startswith(prefix):
                    break
                raw = self.txn.get(tp + sop, db=self._instances_db)
                if raw is None:
                    continue
                entry = decode_entry(raw)
                if best is None or entry["seq"] > best["seq"]:
                    best = entry
        return best

    def flush(self) -> None:
        """Resolve lost sources, then write every changed aggregate with its member and lookup keys."""
        txn, members = self.txn, self._members_db
        for (tp, series_uid, study_uid), loaded in self._series.items():
            if loaded.lost and loaded.entry["ni"] > 0:
                newest = self._newest_member(instance_member_prefix(tp, study_uid, series_uid), tp)
                if newest is not None:
                    loaded.entry["v"] = select(newest["v"], SERIES_KEYWORDS)
                    loaded.entry["seq"] = newest["seq"]
        for (tp, study_uid), loaded in self._studies.items():
            if loaded.lost and loaded.entry["ni"] > 0:
                newest = self._newest_member(instance_member_prefix(tp, study_uid), tp)
                if newest is not None:
                    e = loaded.entry
                    e["v"] = select(newest["v"], STUDY_KEYWORDS)
                    e["sp"] = select(newest["v"], PATIENT_KEYWORDS)
                    e["pk"] = patient_key(newest["v"])
                    e["seq"] = newest["seq"]

        # Series: their own keys, and what the study counts of them.
        for (tp, series_uid, study_uid), loaded in self._series.items():
            old, new = loaded.original, loaded.entry
            after = new["ni"] > 0
            study = self._studies[(tp, study_uid)].entry
            skey = series_db_key(tp, series_uid, study_uid)
            series_key = series_uid + "\x00" + study_uid
            old_keys: set[bytes] = set()
            old_member = new_member = None
            if old is not None:
                study["ns"] -= 1
                _bump(study["mods"], first_text(old["v"], "Modality"), -1)
                old_keys = series_lookup_keys(tp, series_key, old["v"])
                old_member = series_member_key(tp, study_uid, series_uid, old["v"])
            new_keys: set[bytes] = set()
            if after:
                study["ns"] += 1
                _bump(study["mods"], first_text(new["v"], "Modality"), 1)
                new_keys = series_lookup_keys(tp, series_key, new["v"])
                new_member = series_member_key(tp, study_uid, series_uid, new["v"])
                body = encode_entry(new)
                if body != loaded.raw:
                    txn.put(skey, body, db=self._series_db)
            elif old is not None:
                txn.delete(skey, db=self._series_db)
            self._move_key(members, old_member, new_member, series_uid.encode())
            self._diff_keys(old_keys, new_keys, series_key.encode())

        # Studies: what their patients count of them, and which patient holds them.
        best: dict[tuple[bytes, str], Entry] = {}
        for (tp, study_uid), loaded in self._studies.items():
            old, new = loaded.original, loaded.entry
            after = new["ni"] > 0
            old_member = new_member = None
            if old is not None:
                patient = self._patient(tp, old["pk"])
                p = patient.entry
                p["ns"] -= 1
                p["ne"] -= old["ns"]
                p["ni"] -= old["ni"]
                old_member = patient_member_key(tp, old["pk"], study_uid)
                kept = after and new["pk"] == old["pk"] and new["seq"] >= old["seq"]
                if patient.original is not None and patient.original["seq"] == old["seq"] and not kept:
                    patient.lost = True
            if after:
                p = self._patient(tp, new["pk"]).entry
                p["ns"] += 1
                p["ne"] += new["ns"]
                p["ni"] += new["ni"]
                new_member = patient_member_key(tp, new["pk"], study_uid)
                top = best.get((tp, new["pk"]))
                if top is None or new["seq"] > top["seq"]:
                    best[(tp, new["pk"])] = new
            self._move_key(members, old_member, new_member, study_uid.encode())

        # Patients: their values come from their newest study.
        changed_patients: list[tuple[bytes, str]] = []
        for (tp, pkey), patient in list(self._patients.items()):
            p = patient.entry
            if p["ns"] <= 0:
                continue
            top = best.get((tp, pkey))
            base_seq = patient.original["seq"] if patient.original is not None else 0
            if patient.lost and (top is None or top["seq"] <= base_seq):
                top = self._newest_study(tp, pkey)
            if top is not None and (patient.lost or top["seq"] > p["seq"]):
                p["v"] = top["sp"]
                p["seq"] = top["seq"]
            if patient.original is None or patient.original["v"] != p["v"]:
                changed_patients.append((tp, pkey))
        for tp, pkey in changed_patients:
            prefix = patient_member_prefix(tp, pkey)
            cursor = txn.cursor(db=members)
            if cursor.set_range(prefix):
                for key, study_uid in cursor:
                    if not key.startswith(prefix):
                        break
                    self._study(tp, study_uid.decode())
        for (tp, _study_uid), loaded in self._studies.items():
            new = loaded.entry
            if new["ni"] > 0:
                new["pv"] = self._patients[(tp, new["pk"])].entry["v"]

        for (tp, study_uid), loaded in self._studies.items():
            old, new = loaded.original, loaded.entry
            key = tp + study_uid.encode()
            old_keys = set() if old is None else study_lookup_keys(
                tp, study_uid, old["pv"], old["v"], study_modalities(old))
            new_keys = set()
            if new["ni"] > 0:
                new_keys = study_lookup_keys(tp, study_uid, new["pv"], new["v"], study_modalities(new))
                body = encode_entry(new)
                if body != loaded.raw:
                    txn.put(key, body, db=self._studies_db)
            elif old is not None:
                txn.delete(key, db=self._studies_db)
            self._diff_keys(old_keys, new_keys, study_uid.encode())

        for (tp, pkey), patient in self._patients.items():
            old, new = patient.original, patient.entry
            key = tp + pkey.encode()
            old_keys = set() if old is None else patient_lookup_keys(tp, pkey, old["v"])
            new_keys = set()
            if new["ns"] > 0:
                new_keys = patient_lookup_keys(tp, pkey, new["v"])
                body = encode_entry(new)
                if body != patient.raw:
                    txn.put(key, body, db=self._patients_db)
            elif old is not None:
                txn.delete(key, db=self._patients_db)
            self._diff_keys(old_keys, new_keys, pkey.encode())

        txn.put(META_SEQ, str(self.seq).encode(), db=self._meta)
        self._studies.clear()
        self._series.clear()
        self._patients.clear()

    def _newest_study(self, tp: bytes, pkey: str) -> Entry | None:
        best: Entry | None = None
        prefix = patient_member_prefix(tp, pkey)
        cursor = self.txn.cursor(db=self._members_db)
        if cursor.set_range(prefix):
            for key, study_uid in cursor:
                if not key.startswith(prefix):
                    break
                entry = self._study(tp, study_uid.decode()).entry
                if entry["ni"] > 0 and (best is None or entry["seq"] > best["seq"]):
                    best = entry
        return best

    def _move_key(self, db: Any, old: bytes | None, new: bytes | None, value: bytes) -> None:
        if old == new:
            return
        if old is not None:
            self.txn.delete(old, db=db)
        if new is not None:
            self.txn.put(new, value, db=db)

    def _diff_keys(self, old: set[bytes], new: set[bytes], target: bytes) -> None:
        if old == new:
            return
        txn, db = self.txn, self._lookup_db
        for key in old - new:
            txn.delete(key, db=db)
        for key in new - old:
            txn.put(key, target, db=db)

