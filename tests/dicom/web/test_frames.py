"""WADO-RS frames: real multi-frame and single-frame files stored, frames retrieved through dicomweb-client
and httpx, each compared with the raw frame bytes pydicom gives from the same file (never decoded pixels)."""

from __future__ import annotations

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from mmarchive.dicom.web.multipart import media_type
from tests.dicom.web.conftest import Server, data_file, split_multipart, store_file

#: name -> the media type its frames are served as.
NATIVE = ("emri_small.dcm", "rtdose.dcm", "SC_rgb_2frame.dcm", "CT_small.dcm")
ENCAPSULATED = {"examples_ybr_color.dcm": "image/jpeg", "emri_small_jpeg_2k_lossless.dcm": "image/jp2",
                "emri_small_jpeg_ls_lossless.dcm": "image/jls", "emri_small_RLE.dcm": "image/dicom-rle",
                "JPEG2000.dcm": "image/jp2", "SC_rgb_rle_2frame.dcm": "image/dicom-rle"}


def _store(server: Server, name: str) -> tuple[Dataset, str]:
    """Store the test file ``name``; its dataset (pixel data read) and its instance URL."""
    return store_file(server, data_file(name))


def _expected(ds: Dataset, number: int) -> bytes:
    """Frame ``number`` (1-based) as pydicom reads it from the file: a slice of native pixel data or the
    frame's compressed bytes."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return get_frame(ds.PixelData, number - 1, number_of_frames=frames)
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return bytes(ds.PixelData[(number - 1) * size:number * size])


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    return [(fields["Content-Type"], data) for fields, data in split_multipart(response)]


@pytest.mark.parametrize("name", NATIVE)
def test_native_frames_through_dicomweb_client(server: Server, name: str) -> None:
    ds, _ = _store(server, name)
    client = DICOMwebClient(url=server.url)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    wanted = sorted({1, n, (n + 1) // 2})
    got = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                          frame_numbers=wanted, media_types=("application/octet-stream",))
    assert got == [_expected(ds, k) for k in wanted]


def test_native_frames_with_dicomweb_clients_default_accept(server: Server) -> None:
    ds, _ = _store(server, "emri_small.dcm")
    client = DICOMwebClient(url=server.url)
    got = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                          frame_numbers=[10, 2])
    assert got == [_expected(ds, 10), _expected(ds, 2)]


@pytest.mark.parametrize("name", sorted(ENCAPSULATED))
def test_encapsulated_frames_are_the_stored_compressed_bytes(server: Server, name: str) -> None:
    ds, url = _store(server, name)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    wanted = list(range(1, n + 1))[::-1]
    syntax = str(ds.file_meta.TransferSyntaxUID)
    served = ENCAPSULATED[name]
    for accept in ("*/*", f'multipart/related; type="{served}"',
                   f'multipart/related; type="{served}"; transfer-syntax={syntax}'):
        r = httpx.get(f"{url}/frames/{','.join(map(str, wanted))}", headers={"Accept": accept})
        assert r.status_code == 200, r.text
        assert media_type(r.headers["content-type"])[1]["type"] == served
        parts = _parts(r)
        assert [c for c, _ in parts] == [f"{served}; transfer-syntax={syntax}"] * n
        assert [b for _, b in parts] == [_expected(ds, k) for k in wanted]
    client = DICOMwebClient(url=server.url)
    got = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                          frame_numbers=[n], media_types=((served, syntax),))
    assert got == [_expected(ds, n)]


def test_native_parts_are_octet_stream_in_explicit_little_endian(server: Server) -> None:
    ds, url = _store(server, "rtdose.dcm")  # implicit VR little endian: the same frame bytes
    r = httpx.get(f"{url}/frames/3,3,15")
    assert r.status_code == 200
    assert media_type(r.headers["content-type"])[1]["type"] == "application/octet-stream"
    parts = _parts(r)
    assert [c for c, _ in parts] == ["application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"] * 3
    assert [b for _, b in parts] == [_expected(ds, 3), _expected(ds, 3), _expected(ds, 15)]


@pytest.mark.parametrize(("frames", "status"), [("0", 400), ("11", 400), ("1,11", 400), ("a", 400),
                                                ("1,,2", 400), ("-1", 400), ("1.5", 400)])
def test_bad_frame_lists_are_400(server: Server, frames: str, status: int) -> None:
    _, url = _store(server, "emri_small.dcm")
    r = httpx.get(f"{url}/frames/{frames}")
    assert r.status_code == status, r.text
    assert r.json()["status"] == status


def test_unknown_instance_is_404(server: Server) -> None:
    ds, _ = _store(server, "emri_small.dcm")
    r = httpx.get(f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                  f"/instances/1.2.3.4/frames/1")
    assert r.status_code == 404


@pytest.mark.parametrize("name", ["test-SR.dcm", "rtplan.dcm"])
def test_instance_without_pixel_data_is_400(server: Server, name: str) -> None:
    _, url = _store(server, name)
    r = httpx.get(f"{url}/frames/1")
    assert r.status_code == 400
    assert "pixel data" in r.json()["error"]


@pytest.mark.parametrize("name", ["liver.dcm", "emri_small_big_endian.dcm"])
def test_frames_not_served_faithfully_are_refused(server: Server, name: str) -> None:
    _, url = _store(server, name)
    r = httpx.get(f"{url}/frames/1")
    assert r.status_code == 400
    assert "not served" in r.json()["error"]


_OCTETS = 'multipart/related; type="application/octet-stream"'
_JPEG = 'multipart/related; type="image/jpeg"'


@pytest.mark.parametrize(("name", "accept"), [
    ("emri_small.dcm", "application/dicom"),
    ("emri_small.dcm", 'multipart/related; type="application/dicom"'),
    ("emri_small.dcm", 'multipart/related; type="image/jpeg"'),
    ("emri_small.dcm", f"{_OCTETS}; transfer-syntax=1.2.840.10008.1.2"),
    ("emri_small.dcm", "*/*; q=0"),
    ("examples_ybr_color.dcm", 'multipart/related; type="application/octet-stream"'),
    ("examples_ybr_color.dcm", 'multipart/related; type="image/jp2"'),
    ("examples_ybr_color.dcm", f"{_JPEG}; transfer-syntax=1.2.840.10008.1.2.4.90"),
])
def test_unacceptable_accept_is_406(server: Server, name: str, accept: str) -> None:
    _, url = _store(server, name)
    r = httpx.get(f"{url}/frames/1", headers={"Accept": accept})
    assert r.status_code == 406, r.text


@pytest.mark.parametrize("accept", ['multipart/related; type="application/octet-stream"; transfer-syntax=*',
                                    'multipart/related; type="application/*"', "multipart/*",
                                    'image/jpeg, multipart/related; type="application/octet-stream"'])
def test_acceptable_accept_for_native_frames(server: Server, accept: str) -> None:
    ds, url = _store(server, "emri_small.dcm")
    r = httpx.get(f"{url}/frames/4", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert [b for _, b in _parts(r)] == [_expected(ds, 4)]
