"""The catalog against a plain model: random adds, corrections, versions, removals, reopens, and queries.

The model keeps only the version history of every SOP instance and which version is current. Everything
a query sees (series, studies and patients, their values, counts, membership) is recomputed from it by
brute force on every check, with the rules the catalog documents: an aggregate takes its values from its
current instance added (or made current) most recently; a study belongs to the patient its newest
instance names; a patient takes its values from its newest study. The answers of the planner and indexes
must equal a plain scan with the same matcher, in the documented order, page by page.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mmarchive.config import IndexConfig, MiB
from mmarchive.dicom.catalog import Catalog, CatalogInstance, VersionRole
from mmarchive.dicom.matching import compile_query, point_of

TENANTS = ("alpha", "beta")
PATIENTS = (("P1", "Smith^John"), ("P2", "SMITH^Jon"), ("P3", "Doe^Jane"), ("P10", "Müller^Jörg"))
STUDIES = tuple(f"1.2.3.{i}" for i in range(5))
SERIES = tuple(f"1.2.4.{i}" for i in range(6))
SOPS = tuple(f"1.2.5.{i}" for i in range(14))
DATES = ("20200101", "20200315", "20200630", "20201231", "")
TIMES = ("", "0930", "10", "235959.5")
MODALITIES = ("CT", "MR", "US")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SMALL = IndexConfig(map_size=1 * MiB)


@dataclass
class Version:
    oid: str
    values: dict[str, tuple[Any, ...]]


@dataclass
class Instance:
    versions: list[Version] = field(default_factory=list)
    current: int | None = None  # index into versions
    seq: int = 0


def make_values(sop: str, study: str, series: str, patient: int, date: str, time: str, modality: str,
                accession: str, number: int | None, series_number: int | None,
                description: str) -> dict[str, tuple[Any, ...]]:
    pid, name = PATIENTS[patient]
    values: dict[str, tuple[Any, ...]] = {
        "PatientID": (pid,), "PatientName": (name,), "StudyInstanceUID": (study,),
        "SeriesInstanceUID": (series,), "SOPInstanceUID": (sop,), "Modality": (modality,),
        "SOPClassUID": (CT_IMAGE if modality == "CT" else MR_IMAGE,), "AccessionNumber": (accession,),
        "StudyDescription": (description,), "PatientSex": ("F" if patient == 2 else "M",),
    }
    if date:
        values["StudyDate"] = (date,)
    if time:
        values["StudyTime"] = (time,)
    if number is not None:
        values["InstanceNumber"] = (number,)
    if series_number is not None:
        values["SeriesNumber"] = (series_number,)
    return values


def _first(values: Mapping[str, Sequence[Any]], keyword: str) -> str:
    v = values.get(keyword)
    return str(v[0]) if v else ""


PATIENT_KW = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_KW = ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "TimezoneOffsetFromUTC",
            "StudyDescription", "StudyInstanceUID", "StudyID", "SpecificCharacterSet")
SERIES_KW = ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "BodyPartExamined",
             "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "SpecificCharacterSet")
INSTANCE_KW = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "ContentDate",
               "ContentTime", "NumberOfFrames", "Rows", "Columns", "BitsAllocated")


def _pick(values: Mapping[str, Sequence[Any]], keywords: Sequence[str]) -> dict[str, Any]:
    return {k: list(values[k]) for k in keywords if k in values}


def _number_order(values: Mapping[str, Sequence[Any]], keyword: str) -> tuple[int, int]:
    v = values.get(keyword)
    return (0, int(v[0])) if v else (1, 0)


class Reference:
    """Views of one tenant's current instances, computed from scratch."""

    def __init__(self, current: list[tuple[str, dict[str, tuple[Any, ...]], int, str]]) -> None:
        # current: (sop, values, seq, transfer syntax)
        self.instances = sorted(current, key=lambda c: c[2])
        series: dict[tuple[str, str], list[Any]] = {}
        studies: dict[str, list[Any]] = {}
        for item in self.instances:  # ascending seq: the last one seen is the newest
            _sop, values, _seq, _ts = item
            series.setdefault((_first(values, "StudyInstanceUID"), _first(values, "SeriesInstanceUID")),
                              []).append(item)
            studies.setdefault(_first(values, "StudyInstanceUID"), []).append(item)
        self.series = series
        self.studies = studies
        patients: dict[str, list[str]] = {}
        for uid, members in studies.items():
            newest = members[-1][1]
            patients.setdefault(_first(newest, "PatientID") + "\x00" + _first(newest, "IssuerOfPatientID"),
                                []).append(uid)
        self.patients = patients
        self.patient_of = {uid: pk for pk, uids in patients.items() for uid in uids}

    def patient_values(self, pkey: str) -> dict[str, Any]:
        newest = max((self.studies[uid][-1] for uid in self.patients[pkey]), key=lambda m: m[2])
        return _pick(newest[1], PATIENT_KW)

    def patient_view(self, pkey: str) -> dict[str, Any]:
        view = self.patient_values(pkey)
        uids = self.patients[pkey]
        view["NumberOfPatientRelatedStudies"] = [len(uids)]
        view["NumberOfPatientRelatedSeries"] = [len({k for k in self.series if k[0] in uids})]
        view["NumberOfPatientRelatedInstances"] = [sum(len(self.studies[u]) for u in uids)]
        return view

    def study_view(self, uid: str) -> dict[str, Any]:
        members = self.studies[uid]
        view = self.patient_values(self.patient_of[uid])
        view.update(_pick(members[-1][1], STUDY_KW))
        keys = [k for k in self.series if k[0] == uid]
        view["ModalitiesInStudy"] = sorted({_first(self.series[k][-1][1], "Modality") for k in keys} - {""})
        view["SOPClassesInStudy"] = sorted({_first(m[1], "SOPClassUID") for m in members})
        view["NumberOfStudyRelatedSeries"] = [len(keys)]
        view["NumberOfStudyRelatedInstances"] = [len(members)]
        return view

    def series_view(self, key: tuple[str, str]) -> dict[str, Any]:
        view = self.study_view(key[0])
        view.update(_pick(self.series[key][-1][1], SERIES_KW))
        view["NumberOfSeriesRelatedInstances"] = [len(self.series[key])]
        return view

    def instance_view(self, item: Any) -> dict[str, Any]:
        _sop, values, _seq, ts = item
        view = self.series_view((_first(values, "StudyInstanceUID"), _first(values, "SeriesInstanceUID")))
        view.update(_pick(values, INSTANCE_KW))
        view["AvailableTransferSyntaxUID"] = [ts]
        return view

    def answer(self, level: str, constraints: dict[str, str], study_uid: str | None,
               series_uid: str | None) -> list[tuple[str, dict[str, Any]]]:
        query = compile_query(constraints)
        if level == "patient":
            rows = [(pk, self.patient_view(pk)) for pk in sorted(self.patients)]
        elif level == "study":
            def order(uid: str) -> tuple[str, int, str]:
                v = self.studies[uid][-1][1]
                t = _first(v, "StudyTime")
                return _first(v, "StudyDate"), (point_of("TM", t) or 0) if t else -1, uid
            rows = [(u, self.study_view(u)) for u in sorted(self.studies, key=order)
                    if study_uid is None or u == study_uid]
        elif level == "series":
            keys = sorted(self.series, key=lambda k: (k[0], _number_order(self.series[k][-1][1],
                                                                             "SeriesNumber"), k[1]))
            rows = [(k[1], self.series_view(k)) for k in keys
                    if (study_uid is None or k[0] == study_uid)
                    and (series_uid is None or k[1] == series_uid)]
        else:
            def iorder(item: Any) -> tuple[Any, ...]:
                v = item[1]
                key = (_first(v, "StudyInstanceUID"), _first(v, "SeriesInstanceUID"))
                return (key[0], _number_order(self.series[key][-1][1], "SeriesNumber"), key[1],
                        _number_order(v, "InstanceNumber"), item[0])
            rows = [(item[0], self.instance_view(item)) for item in sorted(self.instances, key=iorder)
                    if (study_uid is None or _first(item[1], "StudyInstanceUID") == study_uid)
                    and (series_uid is None or _first(item[1], "SeriesInstanceUID") == series_uid)]
        return [(uid, view) for uid, view in rows if query.matches(view)]


UID_TAG = {"patient": "00100020", "study": "0020000D", "series": "0020000E", "instance": "00080018"}
COMPARED = {"00100010": "PatientName", "00100020": "PatientID", "00080061": "ModalitiesInStudy",
            "00201206": "NumberOfStudyRelatedSeries", "00201208": "NumberOfStudyRelatedInstances",
            "00201209": "NumberOfSeriesRelatedInstances", "00201200": "NumberOfPatientRelatedStudies",
            "00201204": "NumberOfPatientRelatedInstances", "00081030": "StudyDescription",
            "00080060": "Modality", "00080020": "StudyDate"}


def _values(element: dict[str, Any]) -> list[Any]:
    out = []
    for v in element.get("Value", []):
        out.append(v["Alphabetic"] if isinstance(v, dict) else v)
    return out


class CatalogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="catalog-model-"))
        self.catalog = Catalog(self.folder / "catalog", SMALL)
        self.model: dict[tuple[str, str], Instance] = {}
        self.seq = 0
        self.oids = 0
        self.queries = 0

    def teardown(self) -> None:
        self.catalog.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _new_oid(self) -> str:
        self.oids += 1
        return f"{self.oids:064x}"

    def _feed(self, tenant: str, sop: str, version: Version, role: VersionRole) -> None:
        self.catalog.add_many([CatalogInstance(tenant, version.values, version.oid, 10, "1.2.840.10008.1.2.1",
                                               float(self.oids), "version", role)])

    def _record(self, tenant: str, sop: str, study: str, series: str, patient: int, date: str, time: str,
                modality: str, number: int | None, series_number: int | None, description: str,
                current: bool) -> CatalogInstance:
        """Apply one new version to the model; the record that feeds it to the catalog."""
        values = make_values(sop, study, series, patient, date, time, modality, f"ACC{study[-1]}", number,
                             series_number, description)
        version = Version(self._new_oid(), values)
        inst = self.model.setdefault((tenant, sop), Instance())
        inst.versions.append(version)
        if current:
            inst.current = len(inst.versions) - 1
            self.seq += 1
            inst.seq = self.seq
        return CatalogInstance(tenant, values, version.oid, 10, "1.2.840.10008.1.2.1", float(self.oids),
                               "version", VersionRole.CURRENT if current else VersionRole.NON_CURRENT)

    @rule(specs=st.lists(st.tuples(
        st.sampled_from(TENANTS), st.sampled_from(SOPS), st.sampled_from(STUDIES), st.sampled_from(SERIES),
        st.integers(0, len(PATIENTS) - 1), st.sampled_from(DATES), st.sampled_from(TIMES),
        st.sampled_from(MODALITIES), st.one_of(st.none(), st.integers(1, 5)),
        st.one_of(st.none(), st.integers(1, 3)), st.sampled_from(("CHEST", "HEAD", "")),
        st.integers(0, 4).map(lambda n: n > 0)), min_size=1, max_size=8))
    def add(self, specs: list[tuple[Any, ...]]) -> None:
        """One add_many transaction of several instances (new ones, new versions, non-current ones)."""
        self.catalog.add_many([self._record(*spec) for spec in specs])

    @precondition(lambda self: any(i.current is not None for i in self.model.values()))
    @rule(data=st.data())
    def correct_patient(self, data: st.DataObject) -> None:
        """A correction of the current version: another patient (a merge) or a fixed name."""
        key = data.draw(st.sampled_from(sorted(k for k, i in self.model.items() if i.current is not None)))
        inst = self.model[key]
        assert inst.current is not None
        values = dict(inst.versions[inst.current].values)
        pid, name = PATIENTS[data.draw(st.integers(0, len(PATIENTS) - 1))]
        values["PatientID"] = (pid,)
        values["PatientName"] = (data.draw(st.sampled_from((name, name.upper(), "Smith^John^^"))),)
        if data.draw(st.booleans()):
            values["StudyInstanceUID"] = (data.draw(st.sampled_from(STUDIES)),)
        version = Version(self._new_oid(), values)
        inst.versions.append(version)
        inst.current = len(inst.versions) - 1
        self.seq += 1
        inst.seq = self.seq
        self._feed(key[0], key[1], version, VersionRole.CURRENT)

    @precondition(lambda self: any(len(i.versions) > 1 for i in self.model.values()))
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, i in self.model.items() if len(i.versions) > 1)))
        inst = self.model[key]
        index = data.draw(st.integers(0, len(inst.versions) - 1))
        again = data.draw(st.booleans())
        if inst.current != index:
            inst.current = index
            self.seq += 1
            inst.seq = self.seq
        version = inst.versions[index]
        if again:  # the same object fed again as current: restores it (or changes nothing)
            self._feed(key[0], key[1], version, VersionRole.CURRENT)
        else:
            self.catalog.set_current(key[0], key[1], version.oid)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def feed_again(self, data: st.DataObject) -> None:
        """Feeding a version it already has changes nothing (idempotent)."""
        key = data.draw(st.sampled_from(sorted(self.model)))
        inst = self.model[key]
        if inst.current is None:
            return
        before = self.catalog.versions(*key)
        self._feed(key[0], key[1], inst.versions[inst.current], VersionRole.CURRENT)
        self._feed(key[0], key[1], inst.versions[0], VersionRole.NON_CURRENT)
        assert self.catalog.versions(*key) == before

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        del self.model[key]
        assert self.catalog.remove(*key)
        assert not self.catalog.remove(*key)

    @rule()
    def reopen(self) -> None:
        self.catalog.close()
        self.catalog = Catalog(self.folder / "catalog", SMALL)

    def _reference(self, tenant: str) -> Reference:
        current = [(sop, i.versions[i.current].values, i.seq, "1.2.840.10008.1.2.1")
                   for (t, sop), i in self.model.items() if t == tenant and i.current is not None]
        return Reference(current)

    @invariant()
    def versions_match(self) -> None:
        for (tenant, sop), inst in self.model.items():
            got = self.catalog.versions(tenant, sop)
            assert [v.object_id for v in got] == [v.oid for v in inst.versions]
            assert [v.current for v in got] == [i == inst.current for i in range(len(inst.versions))]

    @invariant()
    def counts_match(self) -> None:
        for tenant in TENANTS:
            ref = self._reference(tenant)
            assert self.catalog.counts(tenant) == {"patients": len(ref.patients), "studies": len(ref.studies),
                                                   "series": len(ref.series), "instances": len(ref.instances)}

    @invariant()
    def every_study_matches(self) -> None:
        """All studies of each tenant, with their patient and counts, after every step."""
        for tenant in TENANTS:
            expected = self._reference(tenant).answer("study", {}, None, None)
            got = self.catalog.query(tenant, "study", {})
            assert [_values(r["0020000D"])[0] for r in got] == [uid for uid, _ in expected]
            for result, (_uid, view) in zip(got, expected, strict=True):
                for key, keyword in COMPARED.items():
                    if key in result:
                        assert _values(result[key]) == list(view.get(keyword, [])), keyword

    @precondition(lambda self: any(i.current is not None for i in self.model.values()))
    @rule(data=st.data())
    def query(self, data: st.DataObject) -> None:
        tenant = data.draw(st.sampled_from(sorted({t for (t, _s), i in self.model.items()
                                                    if i.current is not None})))
        ref = self._reference(tenant)
        for _ in range(4):
            self._one_query(ref, tenant, data)

    def _one_query(self, ref: Reference, tenant: str, data: st.DataObject) -> None:
        level = data.draw(st.sampled_from(("patient", "study", "study", "series", "instance")))
        choices: list[dict[str, str]] = [{}, {"PatientID": "P1"}, {"PatientID": "P1*"},
                                         {"PatientName": "smith*"}, {"PatientName": "SMITH^JOHN"},
                                         {"PatientName": "*j*"}]
        if level != "patient":
            choices += [{"StudyDate": "20200101-20200630"}, {"StudyDate": "-20200315"},
                        {"StudyDate": "20200630-"}, {"StudyDate": "20201231"}, {"AccessionNumber": "ACC2"},
                        {"ModalitiesInStudy": "MR"}, {"StudyInstanceUID": "1.2.3.1\\1.2.3.4"},
                        {"StudyTime": "10-2359"}, {"PatientName": "smith*", "StudyDate": "20200315-"},
                        {"StudyDescription": "CH*"}, {"StudyDate": '""'}]
        if level in ("series", "instance"):
            choices += [{"Modality": "CT"}, {"SeriesInstanceUID": "1.2.4.2"}, {"Modality": "US",
                                                                                  "PatientID": "P2"}]
        if level == "instance":
            choices += [{"SOPInstanceUID": "1.2.5.1\\1.2.5.3\\1.2.5.7"}, {"InstanceNumber": "2"},
                        {"SOPClassUID": MR_IMAGE}]
        constraints = data.draw(st.sampled_from(choices))
        study_uid = series_uid = None
        if level in ("series", "instance") and data.draw(st.booleans()):
            study_uid = data.draw(st.sampled_from(STUDIES))
            if level == "instance" and data.draw(st.booleans()):
                series_uid = data.draw(st.sampled_from(SERIES))
        expected = ref.answer(level, constraints, study_uid, series_uid)
        limit = data.draw(st.one_of(st.none(), st.integers(1, 4)))
        offset = data.draw(st.integers(0, 3))
        got = self.catalog.query(tenant, level, constraints, limit=limit, offset=offset,
                                 study_uid=study_uid, series_uid=series_uid,
                                 include=("StudyDescription",) if level != "patient" else ())
        page = expected[offset:offset + limit if limit is not None else None]
        tag = UID_TAG[level]
        assert [_values(r[tag])[0] for r in got] == [uid if level != "patient" else uid.split("\x00")[0]
                                                    for uid, _ in page], (level, constraints)
        for result, (_uid, view) in zip(got, page, strict=True):
            for key, keyword in COMPARED.items():
                if key in result:
                    assert _values(result[key]) == list(view.get(keyword, [])), (keyword, constraints)
        self.queries += 1


CatalogMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestCatalogModel = CatalogMachine.TestCase
