"""An embedding service mounts the DICOMweb application under a sub-path of its own starlette application
(served by uvicorn beside the service's own routes): every kind of resource answers there, and the URLs the
application hands out (STOW-RS RetrieveURLs, BulkDataURIs) carry the mount's prefix, so a client can follow
them."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
import uvicorn
from dicomweb_client.api import DICOMwebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from mmarchive.archive import Archive
from mmarchive.dicom.store import DicomStore
from mmarchive.dicom.web.app import create_app
from tests.dicom.synthetic import ct_file

PREFIX = "/services/imaging"


async def _health(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    """The embedding service's root URL; the DICOMweb root is ``PREFIX + /dicom-web`` under it."""
    Archive.create(tmp_path / "archive").close()
    store = DicomStore.open(tmp_path / "archive")
    service = Starlette(routes=[Route("/health", _health),
                                Mount(PREFIX, app=create_app(store, tenant="embedded"))])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(service, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()


def test_mounted_under_a_sub_path_it_serves_every_kind_of_resource(embedded: str) -> None:
    root = f"{embedded}{PREFIX}/dicom-web"
    data = ct_file(patient_id="EMBEDDED")
    ds = pydicom.dcmread(io.BytesIO(data))
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    stored = httpx.post(f"{root}/studies/{study}", content=(
        b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert stored.status_code == 200, stored.text
    instance = f"{root}/studies/{study}/series/{series}/instances/{sop}"
    assert stored.json()["00081199"]["Value"][0]["00081190"]["Value"] == [instance]
    assert stored.json()["00081190"]["Value"] == [f"{root}/studies/{study}"]
    # the service's own routes still answer, and the application is only under its prefix
    assert httpx.get(f"{embedded}/health").text == "ok"
    assert httpx.get(f"{embedded}/dicom-web/studies").status_code == 404
    client = DICOMwebClient(url=root)
    assert [s["00100020"]["Value"] for s in client.search_for_studies()] == [["EMBEDDED"]]
    assert len(client.search_for_instances(study, series)) == 1
    assert list(client._http_get_multipart(instance)) == [data]
    assert client.retrieve_instance_frames(study, series, sop, frame_numbers=[1]) == [bytes(ds.PixelData)]
    png = client.retrieve_instance_rendered(study, series, sop, media_types=("image/png",))
    assert png.startswith(b"\x89PNG")
    # the BulkDataURI the metadata gives (built from the request's Host) leads back to the pixel data
    [meta] = httpx.get(f"{instance}/metadata").json()
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri == f"{instance}/bulkdata/7FE00010"
    bulk = httpx.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=0-9"})
    assert bulk.status_code == 206
    assert bulk.content == bytes(ds.PixelData)[:10]
    assert httpx.get(f"{root}/studies/1.2.3").status_code == 404
