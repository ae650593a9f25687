"""The DIMSE server against pynetdicom SCUs on loopback: echo, store, find, get, move, refusals.

The tests of this module share one server and archive (``dimse_server``); ``test_store_*`` runs first
and stores :data:`SENT_FILES`, which the query and retrieval tests then find and fetch.
"""

from __future__ import annotations

import copy
import threading
import time
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.events import Event

from mmarchive.dicom.dimse import DimseServer, serve_dimse
from mmarchive.dicom.dimse.find import FindHandler
from mmarchive.dicom.dimse.query import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    VERIFICATION,
)
from mmarchive.dicom.dimse.server import TRANSFER_SYNTAXES
from mmarchive.dicom.dimse.storage import IngestBatcher
from mmarchive.dicom.store import DicomStore, IngestResult, IngestStatus
from mmarchive.errors import InvalidInputError, StorageError
from tests.dicom.dimse.conftest import SENT_FILES, SentFile, dataset_bytes

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")


def _scu(title: str = "TESTSCU") -> AE:
    ae = AE(ae_title=title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def _associate(server: DimseServer, ae: AE, **kw: Any) -> Association:
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title, **kw)
    assert assoc.is_established, "association refused"
    return assoc


def _by_sop(sop: str) -> SentFile:
    return next(f for f in SENT_FILES if f.dataset.SOPInstanceUID == sop)


def _find(server: DimseServer, model: str, query: Dataset) -> tuple[list[Dataset], int]:
    ae = _scu()
    ae.add_requested_context(model)
    assoc = _associate(server, ae)
    try:
        found = []
        final = -1
        for status, identifier in assoc.send_c_find(query, model):
            assert status, "no response"
            if status.Status == 0xFF00:
                assert identifier is not None
                found.append(identifier)
            else:
                final = int(status.Status)
        return found, final
    finally:
        assoc.release()


def _query(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# -- association, echo ---------------------------------------------------------------------------------

def test_echo(dimse_server: DimseServer) -> None:
    ae = _scu()
    ae.add_requested_context(VERIFICATION)
    assoc = _associate(dimse_server, ae)
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_an_unknown_calling_ae_is_rejected(dimse_store: DicomStore) -> None:
    with DimseServer(dimse_store, port=0, allowed_calling_aes={"FRIEND"}) as server:
        stranger = _scu("STRANGER")
        stranger.add_requested_context(VERIFICATION)
        assoc = stranger.associate(server.host, server.port, ae_title=server.ae_title)
        assert assoc.is_rejected
        friend = _scu("FRIEND")
        friend.add_requested_context(VERIFICATION)
        assoc = _associate(server, friend)
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()


def test_the_server_binds_loopback_by_default_and_stops(dimse_store: DicomStore) -> None:
    server = serve_dimse(dimse_store, 0)
    assert server.host == "127.0.0.1" and server.port > 0 and server.running
    server.stop()
    server.stop()
    assert not server.running
    ae = _scu()
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.network_timeout = 2
    assert not ae.associate(server.host, server.port).is_established


def test_a_port_in_use_is_refused_with_a_clear_error(dimse_server: DimseServer,
                                                     dimse_store: DicomStore) -> None:
    with pytest.raises(InvalidInputError, match="cannot listen on 127"):
        serve_dimse(dimse_store, dimse_server.port)
    with pytest.raises(InvalidInputError, match="AE title"):
        DimseServer(dimse_store, port=0, ae_title="THIS TITLE IS FAR TOO LONG")


def test_stop_aborts_open_associations(dimse_store: DicomStore) -> None:
    server = serve_dimse(dimse_store, 0)
    ae = _scu()
    ae.add_requested_context(VERIFICATION)
    assoc = _associate(server, ae)
    assert assoc.send_c_echo().Status == 0x0000
    server.stop()
    assoc.join(5)
    assert not assoc.is_established and (assoc.is_aborted or assoc.is_released)


# -- C-STORE -------------------------------------------------------------------------------------------

def test_store_every_transfer_syntax_byte_exact(dimse_server: DimseServer, dimse_store: DicomStore) -> None:
    ae = _scu()
    for f in SENT_FILES:
        ae.add_requested_context(f.dataset.SOPClassUID, f.transfer_syntax)
    assoc = _associate(dimse_server, ae)
    try:
        for f in SENT_FILES:
            status = assoc.send_c_store(f.path)
            assert status.Status == 0x0000, (f.path.name, status)
        # the same bytes again: nothing new, still a success
        assert assoc.send_c_store(SENT_FILES[0].path).Status == 0x0000
    finally:
        assoc.release()
    for f in SENT_FILES:
        stored = dimse_store.retrieve(f.dataset.SOPInstanceUID)
        assert dataset_bytes(stored) == f.raw, f.path.name
        meta = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored), stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == f.transfer_syntax
        # the request's Affected SOP Instance UID (rtplan.dcm's file meta names another than its dataset)
        assert meta.MediaStorageSOPInstanceUID == f.dataset.file_meta.MediaStorageSOPInstanceUID
        assert meta.SourceApplicationEntityTitle == "TESTSCU"
        assert len(dimse_store.versions(f.dataset.SOPInstanceUID)) == 1


def test_parallel_associations_store_everything(dimse_server: DimseServer, dimse_store: DicomStore) -> None:
    base = pydicom.dcmread(SENT_FILES[0].path)
    study = generate_uid()[:60]  # room for the series suffix within 64 characters
    failures: list[str] = []

    def send(n: int) -> None:
        ae = _scu(f"SENDER{n}")
        ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
        assoc = _associate(dimse_server, ae)
        try:
            for i in range(8):
                ds = copy.deepcopy(base)  # Dataset.copy() is shallow: the threads would share elements
                ds.PatientID = "PARALLEL"
                ds.PatientName = "Parallel^Test"
                ds.StudyInstanceUID = study
                ds.SeriesInstanceUID = f"{study}.{n}"
                ds.InstanceNumber = i + 1
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                status = assoc.send_c_store(ds)
                if status.Status != 0x0000:
                    failures.append(f"{n}/{i}: {status}")
        finally:
            assoc.release()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert len(dimse_store.instances(study)) == 24
    found, final = _find(dimse_server, STUDY_ROOT_FIND,
                         _query("SERIES", StudyInstanceUID=study, SeriesInstanceUID="",
                                NumberOfSeriesRelatedInstances=""))
    assert final == 0x0000
    assert sorted((d.SeriesInstanceUID, int(d.NumberOfSeriesRelatedInstances)) for d in found) == \
        [(f"{study}.{n}", 8) for n in range(3)]


def _bad_dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "BROKEN"  # no Study or Series Instance UID: the archive cannot file it
    return ds


def test_a_malformed_dataset_fails_and_nothing_is_stored(dimse_server: DimseServer, dimse_store: DicomStore,
                                                         tmp_path: Path) -> None:
    before = dimse_store.catalog.counts("default")
    ae = _scu()
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    assoc = _associate(dimse_server, ae)
    try:
        ds = _bad_dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        status = assoc.send_c_store(ds)
        assert 0xC000 <= status.Status <= 0xCFFF
        assert "StudyInstanceUID" in status.ErrorComment or "Study" in status.ErrorComment
        # bytes that are no dataset at all, behind a valid file meta
        garbage = tmp_path / "garbage.dcm"
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        good = Dataset()
        good.file_meta = meta
        good.save_as(garbage, enforce_file_format=True)
        garbage.write_bytes(garbage.read_bytes() + b"\x08\x00\x18\x00UI\xff\x7fnot a dicom dataset")
        status = assoc.send_c_store(garbage)
        assert 0xC000 <= status.Status <= 0xCFFF, status
        assert dimse_store.versions(sop) == [] and dimse_store.versions(ds.SOPInstanceUID) == []
        # the association is still usable
        assert assoc.send_c_store(SENT_FILES[0].path).Status == 0x0000
    finally:
        assoc.release()
    assert dimse_store.catalog.counts("default") == before


def test_a_duplicate_refused_by_the_policy_fails_with_a_comment(dimse_server: DimseServer,
                                                                dimse_store: DicomStore,
                                                                tmp_path: Path) -> None:
    original = SENT_FILES[0]
    changed = pydicom.dcmread(original.path)
    changed.PatientName = "Other^Name"
    other = tmp_path / "other.dcm"
    changed.save_as(other)
    before = dimse_store.versions(original.dataset.SOPInstanceUID)
    ae = _scu()
    ae.add_requested_context(CT_IMAGE_STORAGE, original.transfer_syntax)
    policy = dimse_store.policy
    dimse_store.policy = type(policy)("reject")
    try:
        assoc = _associate(dimse_server, ae)
        status = assoc.send_c_store(other)
        assoc.release()
    finally:
        dimse_store.policy = policy
    assert status.Status == 0x0111 and status.ErrorComment
    assert dimse_store.versions(original.dataset.SOPInstanceUID) == before


# -- C-FIND --------------------------------------------------------------------------------------------

def test_find_studies_with_wildcards_and_ranges(dimse_server: DimseServer) -> None:
    found, final = _find(dimse_server, STUDY_ROOT_FIND,
                         _query("STUDY", PatientName="compressedsamples^*", StudyDate="20040101-20041231",
                                StudyInstanceUID="", PatientID="", StudyDescription="",
                                NumberOfStudyRelatedInstances="", ModalitiesInStudy="", PatientComments=""))
    assert final == 0x0000
    expected = {f.dataset.StudyInstanceUID for f in SENT_FILES
                if str(f.dataset.PatientName).startswith("CompressedSamples")}
    assert {d.StudyInstanceUID for d in found} == expected and len(found) == len(expected)
    for d in found:
        assert d.QueryRetrieveLevel == "STUDY"
        assert d.PatientComments in ("", None)  # a key the archive does not hold comes back empty
        assert int(d.NumberOfStudyRelatedInstances) >= 1
        assert "StudyDescription" in d and "ModalitiesInStudy" in d
    by_uid = {d.StudyInstanceUID: d for d in found}
    ct = SENT_FILES[0].dataset
    assert by_uid[ct.StudyInstanceUID].PatientID == ct.PatientID
    assert by_uid[ct.StudyInstanceUID].ModalitiesInStudy == "CT"


def test_find_patients_in_patient_root(dimse_server: DimseServer) -> None:
    found, final = _find(dimse_server, PATIENT_ROOT_FIND,
                         _query("PATIENT", PatientID="ID?", PatientName="", PatientBirthDate=""))
    assert final == 0x0000
    assert [d.PatientID for d in found] == ["ID1"]
    assert str(found[0].PatientName) == "Lestrade^G"


def test_find_series_and_images_of_a_study(dimse_server: DimseServer) -> None:
    rgb = [f for f in SENT_FILES if f.dataset.PatientID == "ID1"]
    study = rgb[0].dataset.StudyInstanceUID
    series, final = _find(dimse_server, STUDY_ROOT_FIND,
                          _query("SERIES", StudyInstanceUID=study, SeriesInstanceUID="", Modality="",
                                 NumberOfSeriesRelatedInstances=""))
    assert final == 0x0000
    assert {d.SeriesInstanceUID for d in series} == {f.dataset.SeriesInstanceUID for f in rgb}
    assert all(d.Modality == "OT" for d in series)
    sops = [f.dataset.SOPInstanceUID for f in rgb[:2]]
    images, final = _find(dimse_server, PATIENT_ROOT_FIND,
                          _query("IMAGE", PatientID="ID1", StudyInstanceUID=study,
                                 SOPInstanceUID="\\".join(sops), SOPClassUID="", InstanceNumber="",
                                 Rows=None))
    assert final == 0x0000
    assert sorted(d.SOPInstanceUID for d in images) == sorted(sops)
    for d in images:
        assert d.QueryRetrieveLevel == "IMAGE"
        assert d.SOPClassUID == _by_sop(d.SOPInstanceUID).dataset.SOPClassUID
        assert int(d.Rows) == int(_by_sop(d.SOPInstanceUID).dataset.Rows)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # the malformed date is the point
def test_find_refusals(dimse_server: DimseServer) -> None:
    _found, final = _find(dimse_server, STUDY_ROOT_FIND, _query("PATIENT", PatientID="ID1"))
    assert final == 0xA900  # no PATIENT level in Study Root
    _found, final = _find(dimse_server, STUDY_ROOT_FIND, _query("WARD", PatientID="ID1"))
    assert final == 0xA900
    found, final = _find(dimse_server, STUDY_ROOT_FIND, _query("STUDY", StudyDate="2004-garbage"))
    assert (found, final) == ([], 0xC000)


def test_find_stops_at_a_cancel(dimse_store: DicomStore) -> None:
    """A C-CANCEL is honoured between matches (over the network all 7 go out before a cancel arrives)."""
    handler = FindHandler(dimse_store, "default", "MMARCHIVE")
    cancelled = [False]

    class _Event:
        request = SimpleNamespace(AffectedSOPClassUID=STUDY_ROOT_FIND)
        identifier = _query("IMAGE", SOPInstanceUID="")
        assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="TESTSCU"))

        @property
        def is_cancelled(self) -> bool:
            return cancelled[0]

    responses = handler(cast(Event, _Event()))
    status, identifier = next(responses)
    assert status == 0xFF00 and identifier is not None
    cancelled[0] = True
    assert list(responses) == [(0xFE00, None)]


# -- C-GET ---------------------------------------------------------------------------------------------

class _Received(dict[str, bytes]):
    """What a storage SCP received, by Affected SOP Instance UID: the dataset bytes as they arrived (the
    file meta, built by pynetdicom from the request and its context, in :attr:`meta`)."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, FileMetaDataset] = {}
        self.lock = threading.Lock()

    def on_store(self, event: Event) -> int:
        with self.lock:
            sop = str(cast(C_STORE, event.request).AffectedSOPInstanceUID)
            self[sop] = event.encoded_dataset(include_meta=False)
            self.meta[sop] = event.file_meta
        return 0x0000


def _assert_as_stored(received: _Received, files: list[SentFile]) -> None:
    """Every file came back byte for byte as sent (= as stored), in the syntax it was stored in."""
    assert set(received) == {f.dataset.SOPInstanceUID for f in files}
    for f in files:
        sop = f.dataset.SOPInstanceUID
        assert received[sop] == f.raw, f.path.name
        assert received.meta[sop].TransferSyntaxUID == f.transfer_syntax, f.path.name
        assert received.meta[sop].MediaStorageSOPClassUID == f.dataset.SOPClassUID, f.path.name


def _get(server: DimseServer, model: str, query: Dataset,
         contexts: list[tuple[str, list[str]]] | None = None) -> tuple[_Received, Dataset]:
    """C-GET with pynetdicom; by default one storage context per (SOP class, transfer syntax) sent."""
    received = _Received()
    ae = _scu()
    ae.add_requested_context(model)
    if contexts is None:
        contexts = []
        for sop_class in sorted({str(f.dataset.SOPClassUID) for f in SENT_FILES}):
            # one context per transfer syntax: the acceptor picks one syntax per context
            for ts in sorted({f.transfer_syntax for f in SENT_FILES if f.dataset.SOPClassUID == sop_class}):
                contexts.append((sop_class, [ts]))
            contexts.append((sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes)
    roles = [build_role(sop_class, scp_role=True) for sop_class in dict.fromkeys(c for c, _ in contexts)]
    assoc = _associate(server, ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, received.on_store)])
    try:
        statuses = [s for s, _ in assoc.send_c_get(query, model)]
    finally:
        assoc.release()
    return received, statuses[-1]


def _image(f: SentFile) -> Dataset:
    return _query("IMAGE", StudyInstanceUID=f.dataset.StudyInstanceUID,
                  SeriesInstanceUID=f.dataset.SeriesInstanceUID, SOPInstanceUID=f.dataset.SOPInstanceUID)


def test_get_a_study_byte_exact(dimse_server: DimseServer) -> None:
    rgb = [f for f in SENT_FILES if f.dataset.PatientID == "ID1"]
    received, final = _get(dimse_server, STUDY_ROOT_GET,
                           _query("STUDY", StudyInstanceUID=rgb[0].dataset.StudyInstanceUID))
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == len(rgb)
    _assert_as_stored(received, rgb)


def test_get_every_instance_of_a_patient_and_one_image(dimse_server: DimseServer) -> None:
    ct = SENT_FILES[0]
    received, final = _get(dimse_server, PATIENT_ROOT_GET, _query("PATIENT", PatientID=ct.dataset.PatientID))
    assert final.Status == 0x0000
    _assert_as_stored(received, [ct])
    for f in SENT_FILES:  # every syntax, deflated included: the stored bytes, never written again
        received, final = _get(dimse_server, STUDY_ROOT_GET, _image(f))
        assert final.Status == 0x0000, f.path.name
        _assert_as_stored(received, [f])


def test_get_every_study_in_one_association_byte_exact(dimse_server: DimseServer) -> None:
    studies = sorted({str(f.dataset.StudyInstanceUID) for f in SENT_FILES})
    received, final = _get(dimse_server, STUDY_ROOT_GET, _query("STUDY", StudyInstanceUID=studies))
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations >= len(SENT_FILES)
    for f in SENT_FILES:
        assert received[f.dataset.SOPInstanceUID] == f.raw, f.path.name


def test_get_in_another_uncompressed_syntax_re_encodes(dimse_server: DimseServer) -> None:
    """The requestor accepted only Implicit VR for data stored as Explicit VR: pydicom re-encodes it."""
    ct = SENT_FILES[0]
    assert ct.transfer_syntax == ExplicitVRLittleEndian
    received, final = _get(dimse_server, STUDY_ROOT_GET, _image(ct),
                           contexts=[(CT_IMAGE_STORAGE, [ImplicitVRLittleEndian])])
    assert final.Status == 0x0000
    sop = ct.dataset.SOPInstanceUID
    assert received.meta[sop].TransferSyntaxUID == ImplicitVRLittleEndian
    got = decode(BytesIO(received[sop]), True, True)
    original = pydicom.dcmread(ct.path)
    assert got.PixelData == original.PixelData and got.PatientName == original.PatientName


def test_get_refused_syntax_fails_the_sub_operation(dimse_server: DimseServer) -> None:
    """Compressed data whose syntax the requestor did not accept is not transcoded: a failed sub-operation."""
    j2k = next(f for f in SENT_FILES if f.path.name == "JPEG2000.dcm")
    received, final = _get(dimse_server, STUDY_ROOT_GET, _image(j2k),
                           contexts=[(SECONDARY_CAPTURE, [ExplicitVRLittleEndian])])
    assert received == {}
    assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 1
    assert final.NumberOfCompletedSuboperations == 0


def test_get_without_the_unique_key_is_refused(dimse_server: DimseServer) -> None:
    received, final = _get(dimse_server, STUDY_ROOT_GET, _query("STUDY", PatientID="ID1"))
    assert received == {} and final.Status == 0xA900


# -- C-MOVE --------------------------------------------------------------------------------------------

class _Receiver(_Received):
    """A storage SCP of the test's own, the C-MOVE destination."""

    def __init__(self) -> None:
        super().__init__()
        ae = AE(ae_title="RECEIVER")
        for cx in AllStoragePresentationContexts:
            assert cx.abstract_syntax is not None
            ae.add_supported_context(cx.abstract_syntax, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(VERIFICATION)
        server = ae.start_server(("127.0.0.1", 0), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, self.on_store)])
        assert server is not None
        self.server = server
        self.port = int(server.server_address[1])


@pytest.fixture
def receiver(dimse_server: DimseServer) -> Iterator[_Receiver]:
    r = _Receiver()
    dimse_server.move_destinations["RECEIVER"] = ("127.0.0.1", r.port)
    try:
        yield r
    finally:
        del dimse_server.move_destinations["RECEIVER"]
        r.server.shutdown()


def _move(server: DimseServer, model: str, query: Dataset, destination: str) -> Dataset:
    ae = _scu()
    ae.add_requested_context(model)
    assoc = _associate(server, ae)
    try:
        statuses = [s for s, _ in assoc.send_c_move(query, destination, model)]
    finally:
        assoc.release()
    return statuses[-1]


def test_move_series_and_studies_byte_exact(dimse_server: DimseServer, receiver: _Receiver) -> None:
    nm = next(f for f in SENT_FILES if f.path.name == "JPEG2000.dcm")
    final = _move(dimse_server, STUDY_ROOT_MOVE,
                  _query("SERIES", StudyInstanceUID=nm.dataset.StudyInstanceUID,
                         SeriesInstanceUID=nm.dataset.SeriesInstanceUID), "RECEIVER")
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1
    _assert_as_stored(receiver, [nm])
    receiver.clear()
    wanted = [f for f in SENT_FILES if f.dataset.PatientID in ("ID1", "id00001")]
    for patient in ("ID1", "id00001"):
        final = _move(dimse_server, PATIENT_ROOT_MOVE, _query("PATIENT", PatientID=patient), "RECEIVER")
        assert final.Status == 0x0000
    _assert_as_stored(receiver, wanted)


def test_move_every_sent_file_byte_exact(dimse_server: DimseServer, receiver: _Receiver) -> None:
    for f in SENT_FILES:  # every syntax, deflated included
        receiver.clear()
        final = _move(dimse_server, STUDY_ROOT_MOVE, _image(f), "RECEIVER")
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1, f.path.name
        _assert_as_stored(receiver, [f])


def test_move_to_an_unknown_destination_is_refused(dimse_server: DimseServer) -> None:
    ct = SENT_FILES[0]
    query = _query("STUDY", StudyInstanceUID=ct.dataset.StudyInstanceUID)
    final = _move(dimse_server, STUDY_ROOT_MOVE, query, "NOWHERE")
    assert final.Status == 0xA801


def test_move_of_nothing_completes(dimse_server: DimseServer, receiver: _Receiver) -> None:
    final = _move(dimse_server, STUDY_ROOT_MOVE, _query("STUDY", StudyInstanceUID="1.2.3.4.5"), "RECEIVER")
    assert final.Status == 0x0000 and receiver == {}


# -- character sets, deflated retrieval ----------------------------------------------------------------

def test_find_matches_and_returns_non_ascii_names(dimse_server: DimseServer, dimse_store: DicomStore) -> None:
    ds = pydicom.dcmread(SENT_FILES[0].path)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jörg"
    ds.PatientID = "LATIN1"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ae = _scu()
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    assoc = _associate(dimse_server, ae)
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    query = _query("STUDY", PatientName="MÜLLER*", PatientID="", StudyInstanceUID="")
    query.SpecificCharacterSet = "ISO_IR 192"
    found, final = _find(dimse_server, STUDY_ROOT_FIND, query)
    assert final == 0x0000
    assert [(str(d.PatientName), d.PatientID) for d in found] == [("Müller^Jörg", "LATIN1")]


def test_get_a_deflated_instance_gives_the_stored_bytes(dimse_server: DimseServer) -> None:
    f = next(f for f in SENT_FILES if f.path.name == "image_dfl.dcm")
    received, final = _get(dimse_server, STUDY_ROOT_GET,
                           _query("IMAGE", StudyInstanceUID=f.dataset.StudyInstanceUID,
                                  SOPInstanceUID=f.dataset.SOPInstanceUID))
    assert final.Status == 0x0000
    # the deflated bytes as stored (pynetdicom would deflate a re-encoded dataset again: other bytes)
    _assert_as_stored(received, [f])
    assert zlib.decompress(received[f.dataset.SOPInstanceUID], -15) == zlib.decompress(f.raw, -15)


# -- batching of concurrent C-STOREs -------------------------------------------------------------------

class _SlowStore:
    """Stands in for a DicomStore: its first ingest waits until told, the later ones record their sizes."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.entered = threading.Event()

    def ingest(self, sources: list[tuple[str, bytes]], *, tenant: str) -> Iterator[IngestResult]:
        names = [name for name, _data in sources]
        self.entered.set()
        if not self.batches:
            self.release.wait(10)
        self.batches.append(names)
        if "boom" in names:
            raise StorageError("disk full")
        for name in names:
            yield IngestResult(name, IngestStatus.STORED, tenant)


def test_files_received_together_are_ingested_in_one_call() -> None:
    fake = _SlowStore()
    batcher = IngestBatcher(cast(DicomStore, fake), "default")
    results: dict[str, str] = {}

    def submit(name: str) -> None:
        try:
            results[name] = str(batcher.ingest(name, b"x").status)
        except StorageError as e:
            results[name] = f"error: {e}"

    first = threading.Thread(target=submit, args=("first",))
    first.start()
    assert fake.entered.wait(10)  # the first file is being ingested
    others = [threading.Thread(target=submit, args=(f"f{i}",)) for i in range(5)]
    for t in others:
        t.start()
    while batcher._queue.qsize() < 5:
        time.sleep(0.001)
    fake.release.set()
    for t in [first, *others]:
        t.join(10)
    assert fake.batches[0] == ["first"] and sorted(fake.batches[1]) == [f"f{i}" for i in range(5)]
    assert set(results.values()) == {"stored"} and len(results) == 6
    submit("boom")
    assert results["boom"] == "error: disk full"
    batcher.close()
