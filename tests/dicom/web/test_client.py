"""dicomweb-client against a running server: store, search at every level, retrieve byte for byte, metadata.

What the client sends is what the server must give back: each dataset is encoded here the way the client
encodes it for STOW-RS (``pydicom.dcmwrite``), and every retrieved part is compared with those bytes.
"""

from __future__ import annotations

import io

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from tests.dicom.synthetic import ct_file
from tests.dicom.testfiles import pydicom_test_files
from tests.dicom.web.conftest import TENANT, Server

#: Real files of distinct SOP instances in several transfer syntaxes (explicit and implicit little endian,
#: big endian, JPEG 2000, JPEG baseline, RLE).
_FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm",
          "SC_rgb_rle.dcm", "ExplVR_BigEnd.dcm")


def _read(name: str) -> Dataset:
    path = next(p for p in pydicom_test_files() if p.name == name)
    return pydicom.dcmread(path)


def _encoded(ds: Dataset) -> bytes:
    """The bytes dicomweb-client sends for ``ds``."""
    with io.BytesIO() as b:
        pydicom.dcmwrite(b, ds)
        return b.getvalue()


def _raw(client: DICOMwebClient, url: str) -> list[bytes]:
    """The parts of a WADO-RS response as bytes, decoded by the client's own multipart reader."""
    return list(client._http_get_multipart(url))


@pytest.fixture
def client(server: Server) -> DICOMwebClient:
    return DICOMwebClient(url=server.url)


def _study(n: int, *, patient: str = "P1", modality: str = "CT") -> list[Dataset]:
    """``n`` CT instances of one new study in two series."""
    first = pydicom.dcmread(io.BytesIO(ct_file(patient_id=patient, modality=modality)))
    out: list[Dataset] = [first]
    for i in range(1, n):
        series = first.SeriesInstanceUID if i % 2 == 0 else pydicom.uid.generate_uid()
        out.append(pydicom.dcmread(io.BytesIO(ct_file(
            patient_id=patient, modality=modality, study_uid=first.StudyInstanceUID,
            series_uid=str(series), instance_number=i + 1))))
    return out


def test_real_files_are_stored_and_retrieved_byte_for_byte(server: Server, client: DICOMwebClient) -> None:
    datasets = [_read(name) for name in _FILES]
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    sent = {ds.SOPInstanceUID: _encoded(ds) for ds in datasets}
    response = client.store_instances(datasets)
    assert "FailedSOPSequence" not in response
    assert {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence} == set(sent)
    for ds in datasets:
        study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        url = f"{server.url}/studies/{study}/series/{series}/instances/{sop}"
        assert _raw(client, url) == [sent[sop]]
        got = client.retrieve_instance(study, series, sop)
        assert got.SOPInstanceUID == sop
        assert got.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    for study in {ds.StudyInstanceUID for ds in datasets}:
        parts = _raw(client, f"{server.url}/studies/{study}")
        expected = sorted(sent[ds.SOPInstanceUID] for ds in datasets if ds.StudyInstanceUID == study)
        assert sorted(parts) == expected


def test_study_series_and_instance_retrieval(server: Server, client: DICOMwebClient) -> None:
    datasets = _study(5)
    other = _study(2, patient="P2")
    client.store_instances(datasets + other)
    sent = {ds.SOPInstanceUID: _encoded(ds) for ds in datasets}
    study = datasets[0].StudyInstanceUID
    got = client.retrieve_study(study)
    assert sorted(ds.SOPInstanceUID for ds in got) == sorted(sent)
    assert sorted(_raw(client, f"{server.url}/studies/{study}")) == sorted(sent.values())
    series = datasets[1].SeriesInstanceUID
    in_series = [ds for ds in datasets if ds.SeriesInstanceUID == series]
    assert sorted(_raw(client, f"{server.url}/studies/{study}/series/{series}")) == \
        sorted(sent[ds.SOPInstanceUID] for ds in in_series)
    assert [ds.SOPInstanceUID for ds in client.retrieve_series(study, series)] == \
        [ds.SOPInstanceUID for ds in in_series]


def test_search_at_every_level(server: Server, client: DICOMwebClient) -> None:
    a = _study(4, patient="PA")
    b = _study(3, patient="PB", modality="MR")
    client.store_instances(a + b)
    study_a = a[0].StudyInstanceUID
    studies = client.search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in studies} == {study_a, b[0].StudyInstanceUID}
    found = client.search_for_studies(search_filters={"PatientID": "PA"})
    assert [s["0020000D"]["Value"][0] for s in found] == [study_a]
    assert client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})[0]["00100020"]["Value"] \
        == ["PB"]
    assert client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []
    both = client.search_for_studies(search_filters={
        "StudyInstanceUID": f"{study_a},{b[0].StudyInstanceUID},1.2.3"})
    assert len(both) == 2
    series_a = client.search_for_series(study_a)
    assert {s["0020000E"]["Value"][0] for s in series_a} == {ds.SeriesInstanceUID for ds in a}
    assert len(client.search_for_series()) == len({ds.SeriesInstanceUID for ds in a + b})
    assert len(client.search_for_series(search_filters={"Modality": "MR"})) == \
        len({ds.SeriesInstanceUID for ds in b})
    assert len(client.search_for_instances()) == 7
    assert {i["00080018"]["Value"][0] for i in client.search_for_instances(study_a)} == \
        {ds.SOPInstanceUID for ds in a}
    one_series = a[1].SeriesInstanceUID
    got = client.search_for_instances(study_a, one_series)
    assert [i["00080018"]["Value"][0] for i in got] == \
        [ds.SOPInstanceUID for ds in a if ds.SeriesInstanceUID == one_series]
    # paging, includefield (by keyword, by tag, all) and fuzzy matching
    page = client.search_for_instances(limit=2, offset=1)
    every = client.search_for_instances()
    assert page == every[1:3]
    with_field = client.search_for_studies(fields=["StudyDescription"], search_filters={"PatientID": "PA"})
    assert with_field[0]["00081030"]["Value"] == ["CT HEAD"]
    with_tag = client.search_for_series(study_a, fields=["0008103E"])
    assert with_tag[0]["0008103E"]["Value"] == ["AXIAL 5MM"]
    assert "00280010" in client.search_for_instances(study_a, fields=["all"])[0]
    fuzzy = client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "doe"})
    assert len(fuzzy) == 2
    assert client.search_for_studies(search_filters={"PatientName": "doe"}) == []  # exact without it


def test_metadata_at_every_level(server: Server, client: DICOMwebClient) -> None:
    datasets = _study(3)
    client.store_instances(datasets)
    first = datasets[0]
    study, series, sop = first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID
    study_meta = client.retrieve_study_metadata(study)
    assert sorted(m["00080018"]["Value"][0] for m in study_meta) == \
        sorted(ds.SOPInstanceUID for ds in datasets)
    for m in study_meta:  # pixel data as a BulkDataURI under the instance's URL, never inline
        instance = f"/dicom-web/studies/{study}/series/{m['0020000E']['Value'][0]}" \
                   f"/instances/{m['00080018']['Value'][0]}"
        # dicomweb-client sends a Host header without the port, and the URI is built from the Host
        assert m["7FE00010"]["BulkDataURI"] == f"http://127.0.0.1{instance}/bulkdata/7FE00010"
        assert "InlineBinary" not in m["7FE00010"]
    series_meta = client.retrieve_series_metadata(study, series)
    assert {m["00080018"]["Value"][0] for m in series_meta} == \
        {ds.SOPInstanceUID for ds in datasets if ds.SeriesInstanceUID == series}
    instance_meta = client.retrieve_instance_metadata(study, series, sop)
    assert instance_meta["00080018"]["Value"] == [sop]
    assert instance_meta["00100020"]["Value"] == ["P1"]


def test_store_into_a_named_study_refuses_parts_of_other_studies(server: Server,
                                                                client: DICOMwebClient) -> None:
    mine, theirs = _study(2), _study(1, patient="P9")
    response = client.store_instances(mine + theirs, study_instance_uid=mine[0].StudyInstanceUID)
    assert [i.ReferencedSOPInstanceUID for i in response.ReferencedSOPSequence] == \
        [ds.SOPInstanceUID for ds in mine]
    failed = response.FailedSOPSequence
    assert [i.ReferencedSOPInstanceUID for i in failed] == [theirs[0].SOPInstanceUID]
    assert failed[0].FailureReason == 0xA900
    assert server.store.query("study", {"PatientID": "P9"}, tenant=TENANT) == []


def test_a_second_store_of_the_same_instances_succeeds_and_stores_nothing_new(
        server: Server, client: DICOMwebClient) -> None:
    datasets = _study(2)
    client.store_instances(datasets)
    again = client.store_instances(datasets)
    assert len(again.ReferencedSOPSequence) == 2
    assert len(client.search_for_instances()) == 2
