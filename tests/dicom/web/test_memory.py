"""Streaming proven by memory: a ``mmarchive serve --http`` subprocess retrieves a large study (WADO-RS,
about 315 MB), stores a body of the same size (STOW-RS) and serves one 210 MB multi-frame instance as an
instance and as bulk data, while its resident memory (psutil, sampled every 10 ms) grows by less than
:data:`BOUND` over what it was before each request.

The data are generated in ``tmp_path``: 512x512 16-bit CT-like slices, every one with pixel bytes of its
own (so nothing is shared by content), built as a pydicom header followed by the pixel element. The
archive is filled before the server starts (through :meth:`DicomStore.ingest`) and the server runs in a
process of its own, so that only its memory is measured.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from mmarchive.archive import Archive
from mmarchive.dicom.store import DicomStore
from tests.cli.conftest import start_serve

#: How much the server's resident memory may grow during one large request.
BOUND = 100 << 20
SIDE = 512
SLICE = SIDE * SIDE * 2
#: CT slices in the study retrieved and in the body stored (about 315 MB each).
SLICES = 600
#: Frames of the single large instance (about 210 MB).
FRAMES = 400
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MULTIFRAME_CT = "1.2.840.10008.5.1.4.1.1.2.1"
_TENANT = "default"


def _header(study: str, series: str, sop: str, sop_class: str, frames: int, number: int) -> bytes:
    """A Part 10 file up to and including the pixel element's tag, VR and length (explicit VR little
    endian); the pixel bytes follow it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.StudyDate, ds.Modality = "MEMORY", "LARGE^STUDY", "20261126", "CT"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.Rows = ds.Columns = SIDE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    if frames > 1:
        ds.NumberOfFrames = frames
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue() + b"\xe0\x7f\x10\x00OW\x00\x00" + (frames * SLICE).to_bytes(4, "little")


class _Pixels:
    """CT-like slices (a disc over noise, 12 bits), each made distinct by its number in its first bytes."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:SIDE, 0:SIDE]
        disc = np.where((x - 256) ** 2 + (y - 256) ** 2 < 200 ** 2, 1064, 24)
        self.base = np.clip(disc + rng.normal(0, 20, (SIDE, SIDE)), 0, 4095).astype("<u2").tobytes()

    def slice(self, n: int) -> bytes:
        return n.to_bytes(8, "little") + self.base[8:]


def _study(study: str, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """``count`` CT instances of one series of ``study``, as (name, Part 10 bytes)."""
    pixels, series = _Pixels(seed), generate_uid()
    for n in range(count):
        yield f"ct{n}", _header(study, series, generate_uid(), CT_IMAGE, 1, n + 1) + pixels.slice(n)


@dataclass
class _Archive:
    path: Path
    study: str
    study_bytes: int
    large_path: str  # studies/.../instances/{sop} of the large instance
    large_bytes: int


@dataclass
class _Served:
    url: str
    process: psutil.Process
    archive: _Archive

    @property
    def large_url(self) -> str:
        return f"{self.url}/{self.archive.large_path}"


class _Peak:
    """The largest resident size of ``process`` while the ``with`` block runs, sampled on a thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.before = self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> _Peak:
        self.before = self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.before


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> _Archive:
    """An archive holding a study of :data:`SLICES` CT slices and one instance of :data:`FRAMES` frames."""
    path = tmp_path_factory.mktemp("memory") / "archive"
    Archive.create(path).close()
    study, large_study, large_sop = generate_uid(), generate_uid(), generate_uid()
    pixels = _Pixels(1)
    large = (_header(large_study, generate_uid(), large_sop, MULTIFRAME_CT, FRAMES, 1)
             + b"".join(pixels.slice(n) for n in range(FRAMES)))
    with DicomStore.open(path) as store:
        results = list(store.ingest(_study(study, SLICES, 0), tenant=_TENANT))
        assert all(r.ok for r in results)
        [result] = list(store.ingest([("large", large)], tenant=_TENANT))
        assert result.ok
    return _Archive(path, study, sum(r.size for r in results),
                    f"studies/{large_study}/series/{result.series_instance_uid}/instances/{large_sop}",
                    len(large))


@pytest.fixture
def served(archive: _Archive, tmp_path: Path) -> Iterator[_Served]:
    """A fresh ``mmarchive serve`` process over the archive for each test, so that no test's peak is
    hidden by memory an earlier request left to the process's allocator."""
    log = (tmp_path / "serve.log").open("wb")
    proc, line = start_serve(archive.path, stdout=subprocess.DEVNULL)
    try:
        found = re.search(r"serving DICOMweb at (http://\S+)", line)
        assert found is not None, line
        # the rest of the request log goes to a file, so that a full pipe never blocks the server
        drain = threading.Thread(target=lambda: log.write(proc.stderr.read()) if proc.stderr else None,
                                 daemon=True)
        drain.start()
        yield _Served(found.group(1), psutil.Process(proc.pid), archive)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def _warm(served: _Served) -> None:
    """One small request of each kind first, so that imports and pools are not counted as growth."""
    assert httpx.get(f"{served.url}/studies", params={"PatientID": "MEMORY"}).status_code == 200
    with httpx.stream("GET", f"{served.large_url}/bulkdata/7FE00010", headers={"Range": "bytes=0-99"}) as r:
        assert r.status_code == 206
        r.read()


def _drain(url: str, headers: dict[str, str] | None = None) -> int:
    """Stream a GET's body to nowhere; its length."""
    total = 0
    with httpx.stream("GET", url, headers=headers, timeout=120) as r:
        assert r.status_code == 200, r.read()[:300]
        for chunk in r.iter_raw(1 << 20):
            total += len(chunk)
    return total


def test_retrieving_a_large_study_keeps_memory_bounded(served: _Served) -> None:
    _warm(served)
    with _Peak(served.process) as peak:
        got = _drain(f"{served.url}/studies/{served.archive.study}")
    stored = served.archive.study_bytes
    assert stored <= got <= stored + 200 * SLICES  # the instances and their part headers
    assert stored > 3 * BOUND
    assert peak.growth < BOUND, f"RSS grew {peak.growth >> 20} MB retrieving {got >> 20} MB"


@pytest.mark.parametrize(("resource", "accept"), [
    ("", None),  # multipart/related; type="application/dicom"
    ("/bulkdata/7FE00010", "application/octet-stream"),  # single part (the multipart form streams alike)
])
def test_retrieving_a_large_instance_keeps_memory_bounded(served: _Served, resource: str,
                                                          accept: str | None) -> None:
    _warm(served)
    with _Peak(served.process) as peak:
        got = _drain(served.large_url + resource, {"Accept": accept} if accept else None)
    wanted = served.archive.large_bytes if not resource else FRAMES * SLICE
    assert wanted <= got <= wanted + 300
    assert wanted >= 2 * BOUND
    assert peak.growth < BOUND, f"RSS grew {peak.growth >> 20} MB retrieving {got >> 20} MB"


def test_storing_a_large_body_keeps_memory_bounded(served: _Served) -> None:
    _warm(served)
    study = generate_uid()
    boundary = "mmarchive-memory-test"

    def body() -> Iterator[bytes]:
        for _, data in _study(study, SLICES, 2):
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    with _Peak(served.process) as peak:
        r = httpx.post(f"{served.url}/studies/{study}", content=body(), timeout=120, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 200, r.text[:500]
    assert len(r.json()["00081199"]["Value"]) == SLICES
    assert peak.growth < BOUND, f"RSS grew {peak.growth >> 20} MB storing {SLICES} instances"
    found = httpx.get(f"{served.url}/studies/{study}/instances", params={"limit": "1000"})
    assert len(found.json()) == SLICES
