"""WADO-RS frames against pydicom over every real test file: for each pydicom bundled test file and
pydicom-data file the store keeps with its pixel value as separate content, every frame /frames serves is
the frame pydicom gives from the same file (``get_frame`` for encapsulated pixel data, a slice of the
native pixel data), or the request is refused with a 4xx/5xx naming the problem: never different bytes.

One server serves the whole sweep (about a hundred instances); the frames of each instance are asked for in
one request, and a refused request is then asked frame by frame, so that a frame pydicom cannot find is
refused while the others still come back equal.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from mmarchive.dicom.store import METADATA_KEY
from mmarchive.dicom.web.rendered import codestream_size
from tests.dicom.testfiles import all_test_files
from tests.dicom.web.conftest import TENANT, Server
from tests.dicom.web.test_frames import _parts

_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def _read(path: Path) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path)
        except Exception:  # not DICOM, or not readable by pydicom: the store refuses those too
            return None


def _pydicom_frames(ds: Dataset) -> list[bytes | None]:
    """Each frame as pydicom gives it (None where pydicom cannot find the frame); ``[None]`` when pydicom
    cannot tell the frames apart at all (an invalid Number of Frames, Rows or Columns)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _frames(ds)
    except (AttributeError, TypeError, ValueError):
        return [None]


def _frames(ds: Dataset) -> list[bytes | None]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        extended = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            extended = (bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths))
        out: list[bytes | None] = []
        for k in range(n):
            try:
                out.append(get_frame(ds.PixelData, k, number_of_frames=n, extended_offsets=extended))
            except Exception:
                out.append(None)
        return out
    size = ds.Rows * ds.Columns * int(ds.get("SamplesPerPixel", 1) or 1) * ds.BitsAllocated // 8
    data = bytes(ds.PixelData)
    return [data[k * size:(k + 1) * size] if (k + 1) * size <= len(data) else None for k in range(n)]


def _check(url: str, numbers: list[int], expected: list[bytes | None]) -> tuple[list[str], int]:
    """Problems with one request for ``numbers``; and how many frames came back equal."""
    r = httpx.get(f"{url}/frames/{','.join(map(str, numbers))}", timeout=60)
    if r.status_code != 200:
        body = r.json()
        if not (400 <= r.status_code < 600 and body.get("status") == r.status_code and body.get("error")):
            return [f"frames {numbers}: refused without a reason: {r.status_code} {r.text[:200]}"], 0
        return [], 0
    got = [data for _, data in _parts(r)]
    if len(got) != len(numbers):
        return [f"frames {numbers}: {len(got)} parts"], 0
    problems = []
    for n, data, want in zip(numbers, got, expected, strict=True):
        if want is None:
            problems.append(f"frame {n}: served ({len(data)} bytes) where pydicom finds no frame")
        elif data != want:
            problems.append(f"frame {n}: served {len(data)} bytes that differ from pydicom's {len(want)}")
    return problems, len(got) - len(problems)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the deliberately invalid test files
def test_every_stored_frame_is_pydicoms_frame_or_refused(server: Server) -> None:
    problems: dict[str, list[str]] = {}
    checked = {"native": 0, "encapsulated": 0}
    served_frames = 0
    for path in all_test_files():
        ds = _read(path)
        if ds is None or "PixelData" not in ds or "TransferSyntaxUID" not in ds.file_meta:
            continue
        [result] = list(server.store.ingest([path], tenant=TENANT))
        if not result.ok or result.object_id is None:
            continue
        info = server.store.archive.stat(result.object_id, tenant=TENANT)
        dicom = info.metadata.get(METADATA_KEY)
        header_end = dicom.get("header") if isinstance(dicom, Mapping) else None
        if not isinstance(header_end, int) or header_end >= info.size:
            continue  # stored whole: no separate pixel content
        syntax = str(ds.file_meta.TransferSyntaxUID)
        encapsulated = ds.file_meta.TransferSyntaxUID.is_encapsulated
        if not encapsulated and syntax not in _NATIVE:
            continue  # big endian / deflated: refused by their own tests
        checked["encapsulated" if encapsulated else "native"] += 1
        expected = _pydicom_frames(ds)
        url = (f"{server.url}/studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
               f"/instances/{result.sop_instance_uid}")
        numbers = list(range(1, len(expected) + 1))
        found, equal = _check(url, numbers, expected)
        if equal == 0 and not found:  # refused as a whole: ask frame by frame
            for n in numbers[:64]:
                one, ok = _check(url, [n], [expected[n - 1]])
                found += one
                equal += ok
        served_frames += equal
        if found:
            problems[path.name] = found
    assert not problems, problems
    # The sweep really covered both kinds (pydicom 3.0 and pydicom-data 1.0 hold dozens of each).
    assert checked["native"] >= 20 and checked["encapsulated"] >= 20, checked
    assert served_frames >= 100


@pytest.mark.parametrize("name", ["JPEG2000-embedded-sequence-delimiter.dcm"])
def test_embedded_sequence_delimiter_frame_is_the_whole_fragment(server: Server, name: str) -> None:
    """The fragment holds the bytes of a sequence delimiter (FFFE,E0DD) inside its codestream: the frame
    is still the whole fragment (250 bytes), as pydicom reads it."""
    path = next(p for p in all_test_files() if p.name == name)
    ds = _read(path)
    assert ds is not None
    [result] = list(server.store.ingest([path], tenant=TENANT))
    assert result.ok
    url = (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    r = httpx.get(f"{url}/frames/1")
    assert r.status_code == 200, r.text
    [(_, data)] = _parts(r)
    want = get_frame(ds.PixelData, 0, number_of_frames=1)
    assert len(want) == 250 and b"\xfe\xff\xdd\xe0" in want
    assert data == want
    assert path.read_bytes().find(want) > 0
    # The codestream itself is damaged (the delimiter's bytes overwrote its SIZ segment, which now declares
    # 3722445056 columns): rendering refuses it, naming the mismatch, without handing it to a decoder.
    r = httpx.get(f"{url}/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 500
    error = r.json()["error"]
    assert "SIZ" in error and "3722445056x1024" in error and "256x1024" in error, error


def test_codestream_sizes_of_real_jpeg_and_jpeg2000_frames_match_rows_and_columns() -> None:
    """The size check rendering makes reads the real files' codestreams right (every JPEG, JPEG-LS and
    JPEG 2000 test file with a codestream header agrees with its Rows and Columns, but the damaged one)."""
    seen = set()
    for path in all_test_files():
        ds = _read(path)
        if ds is None or "PixelData" not in ds or "TransferSyntaxUID" not in ds.file_meta:
            continue
        if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
            continue
        try:
            frame = get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1))
        except Exception:
            continue
        declared = codestream_size(frame)
        if declared is None:
            continue
        what, rows, columns = declared
        seen.add(what)
        agrees = (rows, columns) == (ds.Rows, ds.Columns)
        assert agrees == (path.name != "JPEG2000-embedded-sequence-delimiter.dcm"), (path.name, declared)
    assert seen == {"JPEG 2000 codestream's SIZ segment", "JPEG start of frame", "JPEG-LS start of frame"}
