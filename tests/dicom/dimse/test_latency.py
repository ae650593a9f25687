"""C-STORE on one association is not held back by delayed ACKs: the server acknowledges at once, so an SCU
with Nagle's algorithm on (pynetdicom's, most modalities') gets each answer in milliseconds, not ~40 ms."""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import pydicom
from pynetdicom import AE

from mmarchive.archive import Archive
from mmarchive.dicom.dimse import serve_dimse
from mmarchive.dicom.store import DicomStore
from tests.dicom.synthetic import ct_file

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_c_store_answers_are_not_delayed(tmp_path: Path) -> None:
    datasets = [pydicom.dcmread(io.BytesIO(ct_file(instance_number=i))) for i in range(25)]
    Archive.create(tmp_path / "archive").close()
    with DicomStore.open(tmp_path / "archive") as store, serve_dimse(store, 0) as server:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CT_IMAGE_STORAGE, ["1.2.840.10008.1.2.1"])
        assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
        assert assoc.is_established
        times = []
        try:
            for ds in datasets:
                start = time.perf_counter()
                assert assoc.send_c_store(ds).Status == 0x0000
                times.append(time.perf_counter() - start)
        finally:
            assoc.release()
    # Each store commits (fsyncs) before it is answered: a few ms here; a delayed ACK alone is 40 ms.
    assert statistics.median(times[1:]) < 0.035, [round(t * 1000, 1) for t in times]
