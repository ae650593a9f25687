"""WADO-RS bulk data: BulkDataURIs in the metadata of real files, and the values behind them fetched
through dicomweb-client and httpx (whole, multipart and single part, with HTTP ranges), each compared
with the value pydicom reads from the same file."""

from __future__ import annotations

import io
import warnings
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from mmarchive.dicom.web.bulkdata import CHUNK, BulkValue, stream
from mmarchive.dicom.web.multipart import media_type
from tests.dicom.web.conftest import Server, data_file, split_multipart, store_file

OCTETS = "application/octet-stream"


def _metadata(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/metadata")
    assert r.status_code == 200, r.text
    [meta] = r.json()
    assert isinstance(meta, dict)
    return meta


def _parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    assert media_type(response.headers["content-type"])[1]["type"] == OCTETS
    return split_multipart(response)


def _uris(meta: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Tag path -> BulkDataURI of every element (nested ones included) given by URI."""
    out = {}
    for tag, elem in meta.items():
        if "BulkDataURI" in elem:
            out[prefix + tag] = elem["BulkDataURI"]
        if elem["vr"] == "SQ":
            for i, item in enumerate(elem.get("Value", [])):
                out.update(_uris(item, f"{prefix}{tag}/{i}/"))
    return out


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtdose.dcm", "emri_small.dcm", "examples_ybr_color.dcm",
                                  "emri_small_jpeg_ls_lossless.dcm"])
def test_pixel_data_uri_gives_pydicoms_pixel_data_value(server: Server, name: str) -> None:
    ds, url = store_file(server, data_file(name))
    meta = _metadata(url)
    assert meta["7FE00010"]["BulkDataURI"] == f"{url}/bulkdata/7FE00010"
    assert meta["7FE00010"]["vr"] in ("OB", "OW")
    assert "InlineBinary" not in meta["7FE00010"]
    client = DICOMwebClient(url=server.url)
    assert client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"]) == [ds.PixelData]
    single = httpx.get(meta["7FE00010"]["BulkDataURI"], headers={"Accept": OCTETS})
    assert single.status_code == 200
    assert single.content == ds.PixelData
    assert single.headers["content-length"] == str(len(ds.PixelData))
    assert single.headers["accept-ranges"] == "bytes"
    syntax = str(ds.file_meta.TransferSyntaxUID)
    served = "1.2.840.10008.1.2.1" if syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1") else syntax
    assert single.headers["content-type"] == f"{OCTETS}; transfer-syntax={served}"


def test_large_header_values_nested_ones_included_are_uris(server: Server) -> None:
    ds, url = store_file(server, data_file("examples_overlay.dcm"))
    meta = _metadata(url)
    uris = _uris(meta)
    # overlay data, a private OB, the icon image's pixel data in a sequence item, and the pixel data
    assert set(uris) == {"60003000", "00291110", "00880200/0/7FE00010", "7FE00010"}
    assert all(uri == f"{url}/bulkdata/{path}" for path, uri in uris.items())
    client = DICOMwebClient(url=server.url)
    assert client.retrieve_bulkdata(uris["60003000"]) == [ds[0x60003000].value]
    assert client.retrieve_bulkdata(uris["00291110"]) == [ds[0x00291110].value]
    icon = httpx.get(uris["00880200/0/7FE00010"], headers={"Accept": OCTETS})
    assert icon.content == ds.IconImageSequence[0].PixelData
    assert icon.headers["content-type"] == OCTETS
    # small binary values stay inline
    inline = [t for t, e in meta.items() if "InlineBinary" in e]
    assert all(len(meta[t]["InlineBinary"]) <= 1024 for t in inline)


def test_metadata_of_an_instance_without_pixel_data_has_no_pixel_uri(server: Server) -> None:
    _, url = store_file(server, data_file("test-SR.dcm"))
    assert "7FE00010" not in _metadata(url)


def test_range_on_single_part_bulk_data(server: Server) -> None:
    ds, url = store_file(server, data_file("CT_small.dcm"))  # 32 KiB of pixel data
    value = bytes(ds.PixelData)
    assert len(value) == 32768
    with httpx.Client(headers={"Accept": OCTETS}) as http:
        for header, start, stop in [("bytes=10-99", 10, 100), ("bytes=0-0", 0, 1), ("bytes=100-", 100, None),
                                    ("bytes=-50", -50, None), ("bytes=8000-999999", 8000, None),
                                    ("bytes=-999999", 0, None)]:
            r = http.get(f"{url}/bulkdata/7FE00010", headers={"Range": header})
            assert r.status_code == 206, (header, r.text)
            expected = value[start:stop]
            assert r.content == expected, header
            first = start if start >= 0 else len(value) + start
            assert r.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/32768"
            assert r.headers["content-length"] == str(len(expected))
        for header in ["bytes=32768-", "bytes=99999-100000", "bytes=-0"]:
            r = http.get(f"{url}/bulkdata/7FE00010", headers={"Range": header})
            assert r.status_code == 416, header
            assert r.headers["content-range"] == "bytes */32768"
        # what RFC 9110 lets a server ignore is ignored: the whole value, 200
        for header in ["bytes=0-5,10-20", "items=0-5", "bytes=9-3", "bytes=a-b", "bytes=5"]:
            r = http.get(f"{url}/bulkdata/7FE00010", headers={"Range": header})
            assert r.status_code == 200, header
            assert r.content == value


def test_range_through_dicomweb_client_multipart(server: Server) -> None:
    ds, url = store_file(server, data_file("examples_ybr_color.dcm"))
    client = DICOMwebClient(url=server.url)
    assert client.retrieve_bulkdata(f"{url}/bulkdata/7FE00010", byte_range=(1000, 4999)) == \
        [ds.PixelData[1000:5000]]
    r = httpx.get(f"{url}/bulkdata/7FE00010", headers={"Range": "bytes=-10"})
    assert r.status_code == 206
    [(fields, data)] = _parts(r)
    assert data == ds.PixelData[-10:]
    total = len(ds.PixelData)
    assert fields["Content-Range"] == f"bytes {total - 10}-{total - 1}/{total}"


def test_an_empty_value_and_a_nested_value_read_back(server: Server) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(data_file("CT_small.dcm"))
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    item = Dataset()
    item.add_new(0x00420011, "OB", bytes(range(256)) * 8)  # EncapsulatedDocument, 2 KiB
    ds.add_new(0x00400555, "SQ", [Dataset(), item])  # AcquisitionContextSequence
    ds.add_new(0x00282000, "OB", b"")  # ICCProfile, empty
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    _, url = store_file(server, ("nested.dcm", out.getvalue()))
    meta = _metadata(url)
    uri = meta["00400555"]["Value"][1]["00420011"]["BulkDataURI"]
    assert uri == f"{url}/bulkdata/00400555/1/00420011"
    assert httpx.get(uri, headers={"Accept": OCTETS}).content == bytes(range(256)) * 8
    assert "BulkDataURI" not in meta["00282000"]
    empty = httpx.get(f"{url}/bulkdata/00282000", headers={"Accept": OCTETS})
    assert empty.status_code == 200 and empty.content == b""
    r = httpx.get(f"{url}/bulkdata/00282000", headers={"Accept": OCTETS, "Range": "bytes=0-"})
    assert r.status_code == 416


def test_bad_bulk_data_paths(server: Server) -> None:
    _, url = store_file(server, data_file("CT_small.dcm"))
    for path, status in [
        ("00100010", 404),  # PatientName: not a binary value
        ("00991000", 404),  # absent
        ("00400555/0/00420011", 404), ("7FE00010/0/00100010", 404), ("00080005/x/00100010", 400),
        ("7FE0001", 400), ("pixel", 400),
    ]:
        r = httpx.get(f"{url}/bulkdata/{path}", headers={"Accept": OCTETS})
        assert r.status_code == status, (path, r.text)
        assert r.json()["status"] == status


def test_pixel_data_of_an_instance_without_it_is_404(server: Server) -> None:
    _, url = store_file(server, data_file("test-SR.dcm"))
    assert httpx.get(f"{url}/bulkdata/7FE00010").status_code == 404


def test_unknown_instance_is_404(server: Server) -> None:
    ds, _ = store_file(server, data_file("CT_small.dcm"))
    r = httpx.get(f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                  "/instances/1.2.3.4/bulkdata/7FE00010")
    assert r.status_code == 404


def test_unacceptable_accept_is_406(server: Server) -> None:
    _, url = store_file(server, data_file("CT_small.dcm"))
    for accept in ["application/dicom", 'multipart/related; type="application/dicom"', "image/jpeg",
                   f"{OCTETS}; q=0"]:
        assert httpx.get(f"{url}/bulkdata/7FE00010", headers={"Accept": accept}).status_code == 406, accept


def test_multipart_is_the_default(server: Server) -> None:
    ds, url = store_file(server, data_file("CT_small.dcm"))
    for accept in ["*/*", "multipart/*", f'multipart/related; type="{OCTETS}"', "multipart/related",
                   f"image/jpeg, multipart/related; type={OCTETS}"]:
        r = httpx.get(f"{url}/bulkdata/7FE00010", headers={"Accept": accept})
        assert r.status_code == 200, accept
        [(fields, data)] = _parts(r)
        assert fields["Content-Type"] == f"{OCTETS}; transfer-syntax=1.2.840.10008.1.2.1"
        assert data == ds.PixelData


class _CountingReader(io.BytesIO):
    """A seekable reader that records the size of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.reads.append(len(data))
        return data


def test_a_value_streams_in_bounded_reads_of_only_the_asked_bytes() -> None:
    data = bytes(range(256)) * (5 * CHUNK // 256 + 3)  # a value of a little over 5 chunks at offset 100
    reader = _CountingReader(b"h" * 100 + data + b"t" * 50)
    value = BulkValue(100, len(data), None, True)
    start, stop = 12345, len(data) - 7
    chunks = list(stream(reader, value, start, stop))
    assert b"".join(chunks) == data[start:stop]
    assert len(chunks) > 1 and max(reader.reads) <= CHUNK
    assert sum(reader.reads) == stop - start  # nothing read beyond the range
