"""The DICOM catalog by example: tenants, hierarchy and counts, versions, removal, results, plans, errors.

A small catalog of two tenants is built through ``add_many`` on a real LMDB environment. The model-based
test (test_catalog_model.py) checks the answers at random; these tests pin down each documented behaviour
with values one can read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmarchive.config import IndexConfig, MiB
from mmarchive.dicom.catalog import AddOutcome, Catalog, CatalogInstance, VersionRole
from mmarchive.errors import InvalidInputError, NotFoundError

SMALL = IndexConfig(map_size=1 * MiB)
TS = "1.2.840.10008.1.2.1"


def instance(tenant: str, sop: str, study: str, series: str, *, pid: str = "P1", name: str = "Smith^John",
             date: str = "20200101", modality: str = "CT", number: int = 1, series_number: int = 1,
             oid: str | None = None, role: VersionRole = VersionRole.CURRENT, reason: str = "initial",
             **extra: Any) -> CatalogInstance:
    values: dict[str, tuple[Any, ...]] = {
        "PatientID": (pid,), "PatientName": (name,), "StudyInstanceUID": (study,),
        "SeriesInstanceUID": (series,), "SOPInstanceUID": (sop,), "StudyDate": (date,),
        "Modality": (modality,), "InstanceNumber": (number,), "SeriesNumber": (series_number,),
        "SOPClassUID": ("1.2.840.10008.5.1.4.1.1.2",), "AccessionNumber": ("ACC" + study.rsplit(".", 1)[1],),
        "Rows": (512,), "SpecificCharacterSet": ("ISO_IR 100",),
    }
    values.update({k: tuple(v) for k, v in extra.items()})
    return CatalogInstance(tenant, values, oid or f"obj-{sop}", 1000, TS, 1.5, reason, role)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(tmp_path / "catalog", SMALL) as c:
        c.add_many([
            instance("a", "1.1.1", "1.9.1", "1.8.1", number=2),
            instance("a", "1.1.2", "1.9.1", "1.8.1", number=1),
            instance("a", "1.1.3", "1.9.1", "1.8.2", modality="MR", series_number=2),
            instance("a", "1.2.1", "1.9.2", "1.8.3", pid="P2", name="Doe^Jane", date="20210315"),
            instance("b", "2.1.1", "2.9.1", "2.8.1", pid="P1", name="Other^Person", date="20200101"),
        ], mark=b"feed:5")
        yield c


def uids(results: list[dict[str, Any]], tag: str) -> list[str]:
    return [r[tag]["Value"][0] for r in results]


STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"


def test_tenants_never_see_each_other(catalog: Catalog) -> None:
    assert uids(catalog.query("a", "study", {"PatientID": "P1"}), STUDY) == ["1.9.1"]
    assert uids(catalog.query("b", "study", {"PatientID": "P1"}), STUDY) == ["2.9.1"]
    assert uids(catalog.query("b", "study", {}), STUDY) == ["2.9.1"]
    assert catalog.query("b", "instance", {"SOPInstanceUID": "1.1.1"}) == []
    assert catalog.query("c", "study", {}) == []
    assert catalog.counts("a") == {"patients": 2, "studies": 2, "series": 3, "instances": 4}
    assert catalog.counts("b") == {"patients": 1, "studies": 1, "series": 1, "instances": 1}
    with pytest.raises(InvalidInputError, match="tenant"):
        catalog.query("no such/tenant", "study", {})


def test_study_results_are_dicom_json_with_the_qido_defaults_and_counts(catalog: Catalog) -> None:
    (study,) = catalog.query("a", "study", {"PatientName": "SMITH*"})
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Smith^John"}]}
    assert study["0020000D"] == {"vr": "UI", "Value": ["1.9.1"]}
    assert study["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert study["00201206"] == {"vr": "IS", "Value": [2]}
    assert study["00201208"] == {"vr": "IS", "Value": [3]}
    assert study["00080030"] == {"vr": "TM"}  # a default return attribute without a value
    assert "00081030" not in study and "00080062" not in study  # not defaults
    assert list(study) == sorted(study)


def test_include_adds_attributes_and_refuses_lower_levels(catalog: Catalog) -> None:
    (study,) = catalog.query("a", "study", {"PatientID": "P2"}, include=["SOPClassesInStudy", "00100021"])
    assert study["00080062"] == {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}
    assert study["00100021"] == {"vr": "LO"}
    everything = catalog.query("a", "study", {"PatientID": "P2"}, include="all")[0]
    assert "00081030" in everything and "00080060" not in everything
    with pytest.raises(InvalidInputError, match="series-level"):
        catalog.query("a", "study", {}, include=["Modality"])
    with pytest.raises(InvalidInputError, match="unknown attribute"):
        catalog.query("a", "study", {}, include=["Modalty"])


def test_series_and_instances_take_constraints_of_the_levels_above(catalog: Catalog) -> None:
    series = catalog.query("a", "series", {"PatientName": "smith^john", "Modality": "MR"})
    assert uids(series, SERIES) == ["1.8.2"]
    assert series[0]["00201209"] == {"vr": "IS", "Value": [1]}
    assert "00100020" in series[0]  # not scoped to a study: the study attributes come along
    scoped = catalog.query("a", "series", {}, study_uid="1.9.1")
    assert uids(scoped, SERIES) == ["1.8.1", "1.8.2"]  # SeriesNumber order
    assert "00100020" not in scoped[0] and scoped[0][STUDY]["Value"] == ["1.9.1"]
    instances = catalog.query("a", "instance", {"StudyDate": "20200101"}, study_uid="1.9.1",
                              series_uid="1.8.1")
    assert uids(instances, SOP) == ["1.1.2", "1.1.1"]  # InstanceNumber order
    assert instances[0]["00280010"] == {"vr": "US", "Value": [512]}
    with pytest.raises(InvalidInputError, match="instance-level"):
        catalog.query("a", "series", {"SOPInstanceUID": "1.1.1"})
    with pytest.raises(InvalidInputError, match="study-level"):
        catalog.query("a", "patient", {"StudyDate": "20200101"})


def test_patient_level(catalog: Catalog) -> None:
    patients = catalog.query("a", "patient", {"PatientName": "*j*"})
    assert [p["00100020"]["Value"][0] for p in patients] == ["P1", "P2"]
    assert patients[0]["00201200"] == {"vr": "IS", "Value": [1]}
    assert patients[0]["00201204"] == {"vr": "IS", "Value": [3]}


def test_limit_offset_and_their_validation(catalog: Catalog) -> None:
    every = uids(catalog.query("a", "instance", {}), SOP)
    assert every == ["1.1.2", "1.1.1", "1.1.3", "1.2.1"]
    assert uids(catalog.query("a", "instance", {}, limit=2), SOP) == every[:2]
    assert uids(catalog.query("a", "instance", {}, limit=2, offset=3), SOP) == every[3:]
    assert catalog.query("a", "instance", {}, offset=10) == []
    for bad in ({"limit": 0}, {"limit": -1}, {"offset": -1}, {"limit": True}, {"offset": 1.5}):
        with pytest.raises(InvalidInputError, match=r"limit|offset"):
            catalog.query("a", "study", {}, **bad)
    with pytest.raises(InvalidInputError, match="level"):
        catalog.query("a", "frame", {})


def test_unknown_or_malformed_constraints_are_refused(catalog: Catalog) -> None:
    with pytest.raises(InvalidInputError, match="PatientNme"):
        catalog.query("a", "study", {"PatientNme": "x"})
    with pytest.raises(InvalidInputError, match="StudyDate='2020'"):
        catalog.query("a", "study", {"StudyDate": "2020"})
    with pytest.raises(InvalidInputError, match="wildcards are not allowed in a UID"):
        catalog.query("a", "study", {"StudyInstanceUID": "1.9.*"})


def test_the_planner_scans_the_selective_index(catalog: Catalog) -> None:
    assert catalog.explain("a", "study", {"PatientID": "P1", "StudyDate": "20190101-"}).source == "PatientID"
    assert catalog.explain("a", "study", {"AccessionNumber": "ACC2"}).source == "AccessionNumber"
    assert catalog.explain("a", "study", {"PatientName": "doe*"}).source == "PatientName"
    assert catalog.explain("a", "study", {"StudyDate": "20210101-"}).source == "StudyDate"
    assert catalog.explain("a", "study", {"StudyDescription": "X*"}).source == "walk"
    assert catalog.explain("a", "series", {"Modality": "MR"}).source in ("Modality", "walk")
    assert catalog.explain("a", "instance", {"SOPInstanceUID": "1.1.3"}).source == "SOPInstanceUID"
    assert catalog.explain("a", "series", {}, study_uid="1.9.1").source == "scope"


def test_versions_replace_keep_and_restore(catalog: Catalog) -> None:
    # A resend with other bytes kept as a non-current version: queries still see the first.
    resend = instance("a", "1.1.1", "1.9.1", "1.8.1", oid="resend", number=2, role=VersionRole.NON_CURRENT,
                      reason="version")
    assert catalog.add_many([resend]) == [AddOutcome.RECORDED]
    # A correction of the patient's name becomes current.
    fixed = instance("a", "1.1.1", "1.9.1", "1.8.1", oid="fixed", number=2, name="Smith^Johnathan",
                     reason="correction")
    assert catalog.add_many([fixed]) == [AddOutcome.REPLACED]
    assert catalog.add_many([fixed]) == [AddOutcome.UNCHANGED]  # idempotent
    history = catalog.versions("a", "1.1.1")
    assert [(v.number, v.object_id, v.reason, v.current) for v in history] == [
        (1, "obj-1.1.1", "initial", False), (2, "resend", "version", False), (3, "fixed", "correction", True)]
    (study,) = catalog.query("a", "study", {"PatientID": "P1"})
    assert study["00100010"]["Value"] == [{"Alphabetic": "Smith^Johnathan"}]
    assert study["00201208"]["Value"] == [3]  # still three current instances
    assert catalog.query("a", "study", {"PatientName": "smith^john"}) == []  # the old name left the index
    # The first version made current again: its values come back.
    assert catalog.set_current("a", "1.1.1", "obj-1.1.1") == AddOutcome.RESTORED
    assert catalog.query("a", "study", {"PatientName": "smith^john"}) != []
    assert [v.current for v in catalog.versions("a", "1.1.1")] == [True, False, False]
    with pytest.raises(NotFoundError, match="versions"):
        catalog.set_current("a", "1.1.1", "no-such-object")


def test_a_correction_moves_a_study_to_another_patient(catalog: Catalog) -> None:
    merged = [instance("a", sop, "1.9.1", se, pid="P2", name="Doe^Jane", oid=f"merged-{sop}", number=n,
                       modality=m, series_number=sn)
              for sop, se, n, m, sn in (("1.1.1", "1.8.1", 2, "CT", 1), ("1.1.2", "1.8.1", 1, "CT", 1),
                                        ("1.1.3", "1.8.2", 1, "MR", 2))]
    catalog.add_many(merged)
    assert catalog.query("a", "study", {"PatientID": "P1"}) == []
    assert uids(catalog.query("a", "study", {"PatientID": "P2"}), STUDY) == ["1.9.1", "1.9.2"]
    (patient,) = catalog.query("a", "patient", {})
    assert patient["00201200"]["Value"] == [2] and patient["00201204"]["Value"] == [4]


def test_a_moved_study_uid_moves_the_instance(catalog: Catalog) -> None:
    catalog.add_many([instance("a", "1.1.3", "1.9.3", "1.8.2", oid="moved", modality="MR")])
    assert catalog.query("a", "study", {"StudyInstanceUID": "1.9.1"})[0]["00080061"]["Value"] == ["CT"]
    assert uids(catalog.query("a", "instance", {}, study_uid="1.9.3"), SOP) == ["1.1.3"]
    assert catalog.counts("a")["studies"] == 3


def test_remove_drops_counts_and_empty_levels(catalog: Catalog) -> None:
    assert catalog.remove("a", "1.1.3")
    (study,) = catalog.query("a", "study", {"StudyInstanceUID": "1.9.1"})
    assert study["00080061"]["Value"] == ["CT"] and study["00201206"]["Value"] == [1]
    assert catalog.query("a", "study", {"ModalitiesInStudy": "MR"}) == []
    assert catalog.remove("a", "1.2.1")
    assert catalog.counts("a") == {"patients": 1, "studies": 1, "series": 1, "instances": 2}
    assert catalog.query("a", "study", {"PatientID": "P2"}) == []
    assert catalog.versions("a", "1.2.1") == []
    assert not catalog.remove("a", "1.2.1")


def test_instances_in_series_then_instance_order(catalog: Catalog) -> None:
    entries = list(catalog.instances("a", "1.9.1"))
    assert [e.sop_instance_uid for e in entries] == ["1.1.2", "1.1.1", "1.1.3"]
    assert entries[0].object_id == "obj-1.1.2" and entries[0].transfer_syntax == TS
    assert entries[0].values["PatientID"] == ("P1",)
    assert [e.sop_instance_uid for e in catalog.instances("a", "1.9.1", "1.8.2")] == ["1.1.3"]
    assert list(catalog.instances("b", "1.9.1")) == []


def test_mark_clear_and_reopen(tmp_path: Path, catalog: Catalog) -> None:
    assert catalog.mark() == b"feed:5"
    path = catalog.path
    catalog.close()
    with Catalog(path, SMALL, readonly=True) as again:
        assert again.mark() == b"feed:5"
        assert uids(again.query("a", "study", {}), STUDY) == ["1.9.1", "1.9.2"]
    with Catalog(path, SMALL) as again:
        again.clear("a")
        assert again.counts("a")["instances"] == 0 and again.counts("b")["instances"] == 1
        assert again.mark() == b"feed:5"
        again.clear()
        assert again.counts("b")["instances"] == 0 and again.mark() is None


def test_bad_input_is_refused(catalog: Catalog) -> None:
    no_uid = instance("a", "1.5.1", "1.9.5", "1.8.5")
    del no_uid.values["SeriesInstanceUID"]
    with pytest.raises(InvalidInputError, match="SeriesInstanceUID"):
        catalog.add_many([no_uid])
    with pytest.raises(InvalidInputError, match="object_id"):
        catalog.add_many([instance("a", "1.5.1", "1.9.5", "1.8.5")._replace(object_id="")])
    with pytest.raises(InvalidInputError, match="mark"):
        catalog.add_many([], mark="text")  # type: ignore[arg-type]
    assert catalog.counts("a")["instances"] == 4  # nothing of a refused batch was written
