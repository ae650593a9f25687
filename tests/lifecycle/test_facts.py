"""Lifecycle facts: what layers record in object metadata at ingest, and how the planner reads it back."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mmarchive.archive import Archive
from mmarchive.dicom.store import DicomStore
from mmarchive.lifecycle.facts import FactsReader, dicom_date, facts_metadata
from mmarchive.pack.format import encode_metadata


def test_facts_round_trip_through_canonical_metadata() -> None:
    meta = {"dicom": {"sop": "1.2", "header": 300},
            **facts_metadata("dicom", study_date=date(2024, 5, 1), patient_birth_date=date(2016, 2, 29),
                             patient_id="P}1", study_uid="1.2.3", modality="CT")}
    reader = FactsReader()
    f = reader.facts("t", "ab" * 32, 10, 1_700_000_000 * 10**9, encode_metadata(meta), "ssd")
    assert (f.kind, f.study_date, f.patient_birth_date, f.patient_id, f.study_uid, f.modality) == (
        "dicom", date(2024, 5, 1), date(2016, 2, 29), "P}1", "1.2.3", "CT")
    assert f.series_uid is None and f.sop_class_uid is None
    assert f.ingested == datetime.fromtimestamp(1_700_000_000, tz=UTC)


def test_objects_without_facts_are_other_or_their_content_type() -> None:
    reader = FactsReader()
    assert reader.partial(b"")["kind"] == "other"
    assert reader.partial(encode_metadata({"name": "x"}))["kind"] == "other"
    assert reader.partial(encode_metadata({"content_type": "image/jpeg"}))["kind"] == "photo"
    assert reader.partial(encode_metadata({"content_type": "video/mp4"}))["kind"] == "video"
    assert reader.partial(encode_metadata({"content_type": "application/pdf"}))["kind"] == "pdf"
    bad = encode_metadata({"lifecycle": {"kind": "tape", "study_date": "yesterday"}})
    assert reader.partial(bad) == {"kind": "other", "study_date": None, "patient_birth_date": None,
                                   "patient_id": None, "study_uid": None, "series_uid": None,
                                   "modality": None, "sop_class_uid": None}


def test_identical_facts_are_parsed_once() -> None:
    reader = FactsReader()
    facts = facts_metadata("dicom", study_uid="1.2.3", modality="MR")
    for sop in range(100):
        reader.partial(encode_metadata({"dicom": {"sop": f"1.{sop}"}, **facts}))
    assert len(reader._parsed) == 1


@pytest.mark.parametrize("value, expected", [("20240501", date(2024, 5, 1)), ("2024.05.01", date(2024, 5, 1)),
                                             ("20240230", None), ("2024", None), ("", None), (None, None)])
def test_dicom_dates(value: str | None, expected: date | None) -> None:
    assert dicom_date(value) == expected


def test_dicom_ingest_records_the_facts(tmp_path: Path) -> None:
    path = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    ds = pydicom.dcmread(path)
    with Archive.create(tmp_path / "a") as archive:
        store = DicomStore(archive)
        (result,) = store.ingest([path])
        assert result.object_id is not None
        info = archive.stat(result.object_id)
        facts = json.loads(info.metadata_json)["lifecycle"]
        assert facts["kind"] == "dicom"
        assert facts["study_uid"] == ds.StudyInstanceUID and facts["modality"] == ds.Modality
        assert facts["sop_class_uid"] == ds.SOPClassUID and facts["patient_id"] == ds.PatientID
        assert facts["study_date"] == dicom_date(ds.StudyDate).isoformat()  # type: ignore[union-attr]
        store.close()
