"""The DIMSE server against Debian's dcmtk tools (echoscu, storescu, findscu, getscu, movescu) on loopback.

Skipped when dcmtk is not installed (``apt-get install dcmtk``; CI installs it). The module has a server
and archive of its own; the tests run in order: store first, then find and retrieve what was stored.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mmarchive.archive import Archive
from mmarchive.dicom.dimse import DimseServer, serve_dimse
from mmarchive.dicom.store import DicomStore
from tests.dicom.dimse.conftest import SENT_FILES, SentFile, dataset_bytes

TOOLS = ("echoscu", "storescu", "findscu", "getscu", "movescu")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="dcmtk is not installed (apt-get install dcmtk gives echoscu, storescu, findscu, getscu, movescu)")

#: file name -> the storescu option that proposes its transfer syntax
STORED = {"CT_small.dcm": "-xe", "SC_rgb_jpeg_dcmtk.dcm": "-xy", "JPEG2000.dcm": "-xw", "rtplan.dcm": "-xi"}
#: file name -> the getscu option that makes it propose the stored transfer syntax first (getscu proposes
#: Explicit VR first for storage whatever its options: Implicit VR data comes re-encoded, see below)
GET_OPTION = {"CT_small.dcm": "+xe"}


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
def storescp_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver_port: int,
           storescp_port: int) -> Iterator[DimseServer]:
    path = tmp_path_factory.mktemp("dcmtk") / "archive"
    Archive.create(path).close()
    destinations = {"DCMTK": ("127.0.0.1", receiver_port), "STORESCP": ("127.0.0.1", storescp_port)}
    with DicomStore.open(path) as store, serve_dimse(store, 0, move_destinations=destinations) as s:
        yield s


def _run(server: DimseServer, tool: str, *args: str | Path, files: tuple[Path, ...] = (),
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool against the server (in ``cwd``: getscu and movescu write there with ``+B``, whatever
    ``-od`` says)."""
    command = [tool, "-aet", "DCMTK", "-aec", server.ae_title, *map(str, args), server.host, str(server.port),
               *map(str, files)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=cwd)
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


def _received(folder: Path) -> dict[str, tuple[pydicom.Dataset, bytes]]:
    """What getscu / movescu / storescp wrote with ``+B`` (bit preserving: the dataset as received after
    a file meta of their own), by SOP Instance UID: the file read, and its dataset bytes."""
    out: dict[str, tuple[pydicom.Dataset, bytes]] = {}
    for p in folder.iterdir():
        ds = pydicom.dcmread(p)
        out[str(ds.SOPInstanceUID)] = (ds, dataset_bytes(p.read_bytes()))
    return out


def _assert_as_stored(received: dict[str, tuple[pydicom.Dataset, bytes]], server: DimseServer,
                      sop: str) -> None:
    """The dataset arrived byte for byte as stored, in its stored syntax, named by its stored SOP class."""
    ds, raw = received[sop]
    stored = _stored(server, sop)
    assert raw == dataset_bytes(stored)
    original = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored), stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert ds.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == sop


def test_getscu_a_study(server: DimseServer, tmp_path: Path) -> None:
    ct = _sent("CT_small.dcm")
    _run(server, "getscu", "-S", "+B", "-od", tmp_path, "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={ct.dataset.StudyInstanceUID}", cwd=tmp_path)
    sop = ct.dataset.SOPInstanceUID
    received = _received(tmp_path)
    assert list(received) == [sop]
    _assert_as_stored(received, server, sop)


@pytest.mark.parametrize("name", sorted(GET_OPTION))
def test_getscu_every_stored_syntax_byte_exact(server: DimseServer, tmp_path: Path, name: str) -> None:
    f = _sent(name)
    _run(server, "getscu", "-S", "+B", GET_OPTION[name], "-od", tmp_path, "-k", "QueryRetrieveLevel=IMAGE",
         "-k", f"StudyInstanceUID={f.dataset.StudyInstanceUID}",
         "-k", f"SeriesInstanceUID={f.dataset.SeriesInstanceUID}",
         "-k", f"SOPInstanceUID={f.dataset.SOPInstanceUID}", cwd=tmp_path)
    received = _received(tmp_path)
    assert list(received) == [f.dataset.SOPInstanceUID]
    _assert_as_stored(received, server, f.dataset.SOPInstanceUID)


def test_getscu_of_compressed_data_fails_as_the_server_accepts_uncompressed_first(server: DimseServer,
                                                                                  tmp_path: Path) -> None:
    """getscu proposes a compressed syntax with the uncompressed ones in one context; the server accepts the
    uncompressed one (conformance.md §3), and compressed data is never transcoded: a failed sub-operation.
    pynetdicom SCUs, which can propose the compressed syntax in a context of its own, get the bytes."""
    j2k = _sent("JPEG2000.dcm")
    done = _run(server, "getscu", "-v", "-S", "+B", "+xw", "-od", tmp_path, "-k", "QueryRetrieveLevel=IMAGE",
                "-k", f"StudyInstanceUID={j2k.dataset.StudyInstanceUID}",
                "-k", f"SOPInstanceUID={j2k.dataset.SOPInstanceUID}", cwd=tmp_path)
    assert "Number of Failed Suboperations    : 1" in done.stdout + done.stderr
    assert _received(tmp_path) == {}


def test_getscu_preferring_explicit_vr_gets_implicit_data_re_encoded(server: DimseServer,
                                                                      tmp_path: Path) -> None:
    """getscu's default proposes the uncompressed syntaxes in one context and we accept Explicit VR: data
    stored as Implicit VR is re-encoded (same values, not the same bytes)."""
    rt = _sent("rtplan.dcm")
    _run(server, "getscu", "-S", "+B", "-od", tmp_path, "-k", "QueryRetrieveLevel=IMAGE",
         "-k", f"StudyInstanceUID={rt.dataset.StudyInstanceUID}",
         "-k", f"SOPInstanceUID={rt.dataset.SOPInstanceUID}", cwd=tmp_path)
    (received, _raw), = _received(tmp_path).values()
    assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    original = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_stored(server, rt.dataset.SOPInstanceUID)))
    assert {e.tag for e in received} == {e.tag for e in original}
    assert all(e.value == original[e.tag].value for e in received)


def test_movescu_to_itself(server: DimseServer, receiver_port: int, tmp_path: Path) -> None:
    j2k = _sent("JPEG2000.dcm")
    _run(server, "movescu", "-S", "-aem", "DCMTK", "--port", str(receiver_port), "+xa", "+B", "-od", tmp_path,
         "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={j2k.dataset.StudyInstanceUID}",
         "-k", f"SeriesInstanceUID={j2k.dataset.SeriesInstanceUID}", cwd=tmp_path)
    sop = j2k.dataset.SOPInstanceUID
    received = _received(tmp_path)
    assert list(received) == [sop]
    _assert_as_stored(received, server, sop)


@pytest.fixture
def storescp(storescp_port: int, tmp_path: Path) -> Iterator[Path]:
    """dcmtk's storescp, bit preserving, accepting every syntax: the C-MOVE destination STORESCP."""
    folder = tmp_path / "storescp"
    folder.mkdir()
    process = subprocess.Popen(["storescp", "-aet", "STORESCP", "+xa", "+B", "-od", str(folder),
                                str(storescp_port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", storescp_port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "storescp did not start"
                time.sleep(0.05)
        yield folder
    finally:
        process.terminate()
        process.wait(10)


def test_movescu_to_storescp_every_stored_instance_byte_exact(server: DimseServer, storescp: Path) -> None:
    studies = sorted({str(_sent(name).dataset.StudyInstanceUID) for name in STORED})
    for study in studies:
        _run(server, "movescu", "-S", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={study}")
    received = _received(storescp)
    assert set(received) == {_sent(name).dataset.SOPInstanceUID for name in STORED}
    for sop in received:
        _assert_as_stored(received, server, sop)
