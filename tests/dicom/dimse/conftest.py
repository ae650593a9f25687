"""Fixtures of the DIMSE tests: a store with a running server on a free loopback port, the files sent to it.

One server per test module (``dimse_server``), over its own archive. :data:`SENT_FILES` are pydicom test
files with distinct SOP Instance UIDs covering explicit and implicit VR little endian, deflated, JPEG
baseline, JPEG 2000 and RLE. SCUs send them raw (``STORE_SEND_CHUNKED_DATASET``: the file's dataset bytes
go out as they are), so what the archive keeps can be compared byte for byte with what was sent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pydicom
import pytest
from pynetdicom import _config

from mmarchive.archive import Archive
from mmarchive.dicom.dimse import DimseServer, serve_dimse
from mmarchive.dicom.store import DicomStore
from tests.dicom.testfiles import pydicom_test_files

SENT_NAMES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm",
              "rtplan.dcm", "image_dfl.dcm")


class SentFile(NamedTuple):
    path: Path
    dataset: pydicom.Dataset  # read stop_before_pixels: for expected values
    transfer_syntax: str
    raw: bytes  # the encoded dataset after the file meta


def dataset_bytes(part10: bytes) -> bytes:
    """The encoded dataset of a Part 10 file: what follows the file meta group."""
    assert part10[128:132] == b"DICM" and part10[132:136] == b"\x02\x00\x00\x00", "no group length"
    (meta_length,) = struct.unpack("<I", part10[140:144])
    return part10[144 + meta_length:]


def _sent_files() -> list[SentFile]:
    by_name = {p.name: p for p in pydicom_test_files()}
    out = []
    for name in SENT_NAMES:
        path = by_name[name]
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out.append(SentFile(path, ds, str(ds.file_meta.TransferSyntaxUID), dataset_bytes(path.read_bytes())))
    assert len({f.dataset.SOPInstanceUID for f in out}) == len(out)
    return out


SENT_FILES = _sent_files()


@pytest.fixture(scope="module")
def raw_sending() -> Iterator[None]:
    """SCUs send files as they are (no decode and re-encode)."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = before


@pytest.fixture(scope="module")
def dimse_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomStore]:
    path = tmp_path_factory.mktemp("dimse") / "archive"
    Archive.create(path).close()
    with DicomStore.open(path) as store:
        yield store


@pytest.fixture(scope="module")
def dimse_server(dimse_store: DicomStore, raw_sending: None) -> Iterator[DimseServer]:
    server = serve_dimse(dimse_store, 0, "MMARCHIVE", move_destinations={})
    try:
        yield server
    finally:
        server.stop()
