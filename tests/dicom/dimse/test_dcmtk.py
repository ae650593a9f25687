"""The DIMSE server against Debian's dcmtk tools (echoscu, storescu, findscu, getscu, movescu) on loopback.

Skipped when dcmtk is not installed (``apt-get install dcmtk``; CI installs it). The module has a server
and archive of its own; the tests run in order: store first, then find and retrieve what was stored.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mmarchive.archive import Archive
from mmarchive.dicom.dimse import DimseServer, serve_dimse
from mmarchive.dicom.store import DicomStore
from tests.dicom.dimse.conftest import SENT_FILES, SentFile

TOOLS = ("echoscu", "storescu", "findscu", "getscu", "movescu")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="dcmtk is not installed (apt-get install dcmtk gives echoscu, storescu, findscu, getscu, movescu)")

#: file name -> the storescu option that proposes its transfer syntax
STORED = {"CT_small.dcm": "-xe", "SC_rgb_jpeg_dcmtk.dcm": "-xy", "JPEG2000.dcm": "-xw"}


_TRAILING_PADDING = 0xFFFCFFFC


def _sent(name: str) -> SentFile:
    return next(f for f in SENT_FILES if f.path.name == name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def receiver_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver_port: int) -> Iterator[DimseServer]:
    path = tmp_path_factory.mktemp("dcmtk") / "archive"
    Archive.create(path).close()
    destinations = {"DCMTK": ("127.0.0.1", receiver_port)}
    with DicomStore.open(path) as store, serve_dimse(store, 0, move_destinations=destinations) as s:
        yield s


def _run(server: DimseServer, tool: str, *args: str | Path,
         files: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [tool, "-aet", "DCMTK", "-aec", server.ae_title, *map(str, args), server.host, str(server.port),
               *map(str, files)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stdout}{done.stderr}"
    return done


def test_echoscu(server: DimseServer) -> None:
    _run(server, "echoscu")


def test_storescu_uncompressed_and_compressed(server: DimseServer) -> None:
    for name, option in STORED.items():
        f = _sent(name)
        _run(server, "storescu", option, files=(f.path,))
    for name in STORED:
        f = _sent(name)
        stored = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_stored(server, f.dataset.SOPInstanceUID)))
        assert stored.file_meta.TransferSyntaxUID == f.transfer_syntax
        # dcmtk re-encodes what it reads (it drops Data Set Trailing Padding): compare element by element
        original = pydicom.dcmread(f.path)
        assert {e.tag for e in stored} == {e.tag for e in original if e.tag != _TRAILING_PADDING}, name
        assert all(e.value == original[e.tag].value for e in stored), name


def _stored(server: DimseServer, sop: str) -> bytes:
    return server.store.retrieve(sop)


def test_findscu_studies_and_images(server: DimseServer, tmp_path: Path) -> None:
    _run(server, "findscu", "-S", "-X", "-od", tmp_path, "-k", "QueryRetrieveLevel=STUDY",
         "-k", "PatientName=CompressedSamples*", "-k", "StudyInstanceUID", "-k", "StudyDate=20040101-",
         "-k", "PatientID")
    found = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    expected = {_sent(n).dataset.StudyInstanceUID for n in ("CT_small.dcm", "JPEG2000.dcm")}
    assert {d.StudyInstanceUID for d in found} == expected
    for p in tmp_path.glob("rsp*.dcm"):
        p.unlink()
    sc = _sent("SC_rgb_jpeg_dcmtk.dcm").dataset
    _run(server, "findscu", "-P", "-X", "-od", tmp_path, "-k", "QueryRetrieveLevel=IMAGE",
         "-k", f"PatientID={sc.PatientID}", "-k", f"StudyInstanceUID={sc.StudyInstanceUID}",
         "-k", f"SeriesInstanceUID={sc.SeriesInstanceUID}", "-k", "SOPInstanceUID", "-k", "Rows")
    found = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert [(d.SOPInstanceUID, d.Rows) for d in found] == [(sc.SOPInstanceUID, sc.Rows)]


def _received(folder: Path) -> dict[str, pydicom.Dataset]:
    """What getscu / movescu wrote. They write datasets again (sequences get undefined lengths, for one),
    so they are compared element by element; the pynetdicom tests compare the bytes on the wire."""
    out: dict[str, pydicom.Dataset] = {}
    for p in folder.iterdir():
        ds = pydicom.dcmread(p)
        out[str(ds.SOPInstanceUID)] = ds
    return out


def _assert_same(received: pydicom.Dataset, stored: bytes) -> None:
    original = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored))
    assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert {e.tag for e in received} == {e.tag for e in original}
    assert all(e.value == original[e.tag].value for e in received)


def test_getscu_a_study(server: DimseServer, tmp_path: Path) -> None:
    ct = _sent("CT_small.dcm")
    _run(server, "getscu", "-S", "-od", tmp_path, "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={ct.dataset.StudyInstanceUID}")
    sop = ct.dataset.SOPInstanceUID
    received = _received(tmp_path)
    assert list(received) == [sop]
    _assert_same(received[sop], _stored(server, sop))


def test_movescu_to_itself(server: DimseServer, receiver_port: int, tmp_path: Path) -> None:
    j2k = _sent("JPEG2000.dcm")
    _run(server, "movescu", "-S", "-aem", "DCMTK", "--port", str(receiver_port), "+xa", "-od", tmp_path,
         "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={j2k.dataset.StudyInstanceUID}",
         "-k", f"SeriesInstanceUID={j2k.dataset.SeriesInstanceUID}")
    sop = j2k.dataset.SOPInstanceUID
    received = _received(tmp_path)
    assert list(received) == [sop]
    _assert_same(received[sop], _stored(server, sop))
