"""C-GET gives back every stored pydicom test file byte for byte, whatever pydicom would make of it.

Each of pydicom's test files that the archive stores (malformed ones, odd lengths, group lengths, deflated,
big endian, files without a file meta, compressed pixel data...) goes into one archive; then every current
instance is fetched by one pynetdicom C-GET that proposes exactly the stored (SOP class, transfer syntax)
pairs, and the dataset bytes that arrive must be the stored ones (what follows the stored file meta).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from mmarchive.archive import Archive
from mmarchive.dicom.dimse import DimseServer, serve_dimse
from mmarchive.dicom.dimse.query import STUDY_ROOT_GET
from mmarchive.dicom.scan import file_meta
from mmarchive.dicom.store import DicomStore
from mmarchive.errors import ArchiveError
from tests.dicom.testfiles import pydicom_test_files


@pytest.fixture(scope="module")
def every_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DimseServer]:
    path = tmp_path_factory.mktemp("exact") / "archive"
    Archive.create(path).close()
    with DicomStore.open(path) as store, serve_dimse(store, 0) as server:
        for p in pydicom_test_files():
            try:
                list(store.ingest([(p.name, p.read_bytes())]))
            except ArchiveError:
                continue
        yield server


def test_every_stored_test_file_comes_back_byte_exact(every_file: DimseServer) -> None:
    server = every_file
    found = server.store.query("instance", {}, include=["AvailableTransferSyntaxUID"])
    assert len(found) > 100
    stored: dict[str, tuple[bytes, str, str]] = {}  # SOP -> dataset bytes, SOP class, transfer syntax
    for f in found:
        sop = f["00080018"]["Value"][0]
        part10 = server.store.retrieve(sop)
        meta, offset = file_meta(part10)
        syntax = meta.get(0x0010) or f["00083002"]["Value"][0]
        stored[sop] = (part10[offset:], f["00080016"]["Value"][0], syntax)
    received: dict[str, bytes] = {}

    def on_store(event: Event) -> int:
        received[str(cast(C_STORE, event.request).AffectedSOPInstanceUID)] = \
            event.encoded_dataset(include_meta=False)
        return 0x0000

    ae = AE("EXACT")
    ae.add_requested_context(STUDY_ROOT_GET)
    pairs = sorted({(sop_class, syntax) for _, sop_class, syntax in stored.values()})
    assert len(pairs) < 127
    for sop_class, syntax in pairs:  # one context each: exactly the stored syntax
        ae.add_requested_context(sop_class, [syntax])
    roles = [build_role(c, scp_role=True) for c in sorted({c for c, _ in pairs})]
    assoc = ae.associate(server.host, server.port, ext_neg=list[Any](roles),
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = sorted(stored)
    try:
        final = [status for status, _ in assoc.send_c_get(query, STUDY_ROOT_GET)][-1]
    finally:
        assoc.release()
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == len(stored)
    assert sorted(received) == sorted(stored)
    assert [sop for sop in stored if received[sop] != stored[sop][0]] == []
