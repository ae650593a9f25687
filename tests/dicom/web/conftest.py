"""Fixtures for the DICOMweb tests: a real uvicorn server on a free loopback port, over a fresh archive.

Each test gets its own archive and server (a thread running ``uvicorn.Server`` on a socket bound to port
0, so no port is guessed), stopped and joined at the end; starting one takes a few tens of milliseconds.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
import uvicorn
from pydicom.dataset import Dataset

from mmarchive.archive import Archive
from mmarchive.dicom.store import DicomStore
from mmarchive.dicom.web.app import create_app
from mmarchive.dicom.web.multipart import media_type
from tests.dicom.testfiles import all_test_files

TENANT = "trust-a"
#: Small, so that STOW-RS parts of 256x256 test images wait in temporary files and 64x64 ones in memory.
SPOOL_BYTES = 16 << 10


@dataclass(frozen=True)
class Server:
    """A running DICOMweb server: its base URL and the store behind it."""

    url: str
    store: DicomStore
    port: int

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    Archive.create(tmp_path / "archive").close()
    store = DicomStore.open(tmp_path / "archive")
    app = create_app(store, tenant=TENANT, spool_bytes=SPOOL_BYTES)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.01)
    try:
        yield Server(f"http://127.0.0.1:{port}/dicom-web", store, port)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()


def store_file(server: Server, source: Path | tuple[str, bytes]) -> tuple[Dataset, str]:
    """Ingest a test file (a path, or a name and its bytes) into the server's store; the dataset pydicom
    reads from it (pixel data included) and the instance's WADO-RS URL."""
    [result] = list(server.store.ingest([source], tenant=TENANT))
    assert result.ok, result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(source if isinstance(source, Path) else io.BytesIO(source[1]))
    url = (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    return ds, url


def data_file(name: str) -> Path:
    """The path of one of pydicom's (or pydicom-data's) test files, by file name."""
    return next(p for p in all_test_files() if p.name == name)


def split_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related response, each as (its header fields, its bytes), checked to be
    delimited and closed as RFC 2046 says."""
    mtype, params = media_type(response.headers["content-type"])
    assert mtype == "multipart/related"
    delimiter = b"\r\n--" + params["boundary"].encode()
    body = b"\r\n" + response.content
    assert body.endswith(delimiter + b"--\r\n")
    out = []
    for piece in body[:-len(delimiter) - 4].split(delimiter)[1:]:
        head, _, data = piece.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
        out.append((fields, data))
    return out
