"""Bad and unusual requests over HTTP (httpx and a raw socket): each gets its status and a reason, the server
keeps serving, and nothing of a refused or interrupted request is stored."""

from __future__ import annotations

import io
import socket
import threading
import time

import httpx
import pydicom
import pytest

from mmarchive.dicom.store import DuplicatePolicy
from tests.dicom.synthetic import ct_file
from tests.dicom.web.conftest import TENANT, Server, data_file, store_file
from tests.dicom.web.test_frames import _parts

DICOM_MULTIPART = 'multipart/related; type="application/dicom"; boundary=XyZ'


def _body(*parts: bytes, boundary: str = "XyZ", content_type: str = "application/dicom") -> bytes:
    out = b""
    for p in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + p + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _stow(server: Server, body: bytes, *, content_type: str = DICOM_MULTIPART, path: str = "/studies"
          ) -> httpx.Response:
    return httpx.post(server.url + path, content=body, headers={"Content-Type": content_type})


def _count(server: Server) -> int:
    return len(server.store.query("instance", {}, tenant=TENANT))


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data))
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def test_stow_with_a_mixed_body_stores_the_dicom_parts_and_reports_the_rest(server: Server) -> None:
    good = ct_file()
    r = _stow(server, _body(good, b"this is not DICOM at all" * 10))
    assert r.status_code == 202
    assert r.headers["content-type"].startswith("application/dicom+json")
    body = r.json()
    assert len(body["00081199"]["Value"]) == 1
    assert body["00081199"]["Value"][0]["00081190"]["Value"][0].startswith(server.url + "/studies/")
    assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert _count(server) == 1


def test_stow_of_nothing_storable_is_a_conflict(server: Server) -> None:
    r = _stow(server, _body(b"\x00" * 300, b"not dicom either"))
    assert r.status_code == 409
    assert len(r.json()["00081198"]["Value"]) == 2
    assert _count(server) == 0
    # a part of another media type is refused as such
    r = _stow(server, _body(b"{}", content_type="application/json"))
    assert r.status_code == 409


def test_stow_all_stored_is_200_with_retrieve_urls(server: Server) -> None:
    files = [ct_file(), ct_file()]
    r = _stow(server, _body(*files))
    assert r.status_code == 200
    assert "00081198" not in r.json()
    for item in r.json()["00081199"]["Value"]:
        got = httpx.get(item["00081190"]["Value"][0])
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("multipart/related")


@pytest.mark.parametrize("body", [
    b"no multipart here at all",
    b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + b"\x00" * 200,  # never closed
    b"--XyZ\r\nContent-Type application/dicom\r\n\r\nabc\r\n--XyZ--\r\n",  # header line without colon
    b"--XyZ--\r\n",  # no part
    b"",
])
def test_malformed_multipart_is_400_and_stores_nothing(server: Server, body: bytes) -> None:
    good = ct_file()
    r = _stow(server, body.replace(b"abc", good))
    assert r.status_code == 400
    assert r.json()["error"]
    assert _count(server) == 0


def test_a_truncated_body_after_good_parts_stores_nothing(server: Server) -> None:
    whole = _body(ct_file(), ct_file())
    r = _stow(server, whole[:-20])
    assert r.status_code == 400
    assert _count(server) == 0


@pytest.mark.parametrize("content_type", [
    "application/dicom",
    "application/json",
    'multipart/related; type="application/dicom+json"; boundary=XyZ',
    "",
])
def test_unsupported_stow_media_types_are_415(server: Server, content_type: str) -> None:
    r = _stow(server, _body(ct_file()), content_type=content_type)
    assert r.status_code == 415
    assert "error" in r.json()
    assert _count(server) == 0


def test_missing_boundary_is_400(server: Server) -> None:
    r = _stow(server, _body(ct_file()), content_type='multipart/related; type="application/dicom"')
    assert r.status_code == 400


def test_unknown_uids_are_404(server: Server) -> None:
    study, series, sop = _uids(data := ct_file())
    assert _stow(server, _body(data)).status_code == 200
    base = server.url + "/studies"
    for path in ("/1.2.3", "/1.2.3/metadata", f"/{study}/series/1.2.3", f"/{study}/series/1.2.3/metadata",
                 f"/{study}/series/{series}/instances/1.2.3",
                 f"/{study}/series/{series}/instances/1.2.3/metadata"):
        r = httpx.get(base + path)
        assert r.status_code == 404, path
        assert r.json()["error"]
    assert httpx.get(f"{base}/{study}/series/{series}/instances/{sop}").status_code == 200


def test_qido_without_a_match_is_204_and_bad_parameters_400(server: Server) -> None:
    assert httpx.get(server.url + "/studies").status_code == 204
    assert httpx.get(server.url + "/studies", params={"limit": "-1"}).status_code == 400
    assert httpx.get(server.url + "/studies", params={"offset": "x"}).status_code == 400
    assert httpx.get(server.url + "/studies", params={"NoSuchKeyword": "1"}).status_code == 400
    assert httpx.get(server.url + "/studies", params={"FFFF0001": "1"}).status_code == 400
    assert httpx.get(server.url + "/studies", headers={"Accept": "text/html"}).status_code == 406
    _stow(server, _body(ct_file(patient_id="Q1")))
    r = httpx.get(server.url + "/studies", params={"00100020": "Q1"},
                  headers={"Accept": "application/dicom+json"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/dicom+json")
    assert len(r.json()) == 1


@pytest.mark.parametrize(("accept", "status"), [
    ("*/*", 200),
    ("multipart/related", 200),
    ('multipart/related; type="application/dicom"', 200),
    ('multipart/related; type="application/dicom"; transfer-syntax=*', 200),
    ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1', 200),
    ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50', 406),
    ('image/jpeg, multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50', 406),
    ('multipart/related; type="application/octet-stream"', 406),
    ("application/dicom+json", 406),
    ('image/jpeg, multipart/related; type="application/dicom"', 200),
])
def test_retrieve_accept_negotiation(server: Server, accept: str, status: int) -> None:
    data = ct_file()
    study, _series, _sop = _uids(data)
    _stow(server, _body(data))
    r = httpx.get(f"{server.url}/studies/{study}", headers={"Accept": accept})
    assert r.status_code == status
    if status == 406:
        assert "transfer syntax" in r.json()["error"]
    else:
        assert data in r.content
        assert "transfer-syntax=1.2.840.10008.1.2.1" in r.text[:400]


def test_a_stow_client_that_disconnects_halfway_stores_nothing_and_the_server_keeps_serving(
        server: Server) -> None:
    body = _body(ct_file(), ct_file(), ct_file())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Type: {DICOM_MULTIPART}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
        time.sleep(0.2)
    time.sleep(0.2)
    assert httpx.get(server.url + "/studies").status_code == 204
    assert _count(server) == 0
    assert _stow(server, _body(ct_file())).status_code == 200


def test_a_retrieve_client_that_disconnects_halfway_leaves_the_server_serving(server: Server) -> None:
    first = ct_file(rows=256, cols=256)
    study = _uids(first)[0]
    files = [first] + [ct_file(rows=256, cols=256, study_uid=study, instance_number=i) for i in range(2, 12)]
    assert _stow(server, _body(*files)).status_code == 200
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"GET /dicom-web/studies/{study} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    with httpx.Client() as client:
        with client.stream("GET", f"{server.url}/studies/{study}") as r:
            next(r.iter_bytes())
        whole = client.get(f"{server.url}/studies/{study}")
    assert whole.status_code == 200
    assert all(f in whole.content for f in files)
    assert _count(server) == len(files)


def test_a_part_refused_by_the_duplicate_policy_is_a_failed_entry(server: Server) -> None:
    first = ct_file()
    _study, _series, sop = _uids(first)
    assert _stow(server, _body(first)).status_code == 200
    server.store.policy = DuplicatePolicy.REJECT
    other_bytes = ct_file(sop_uid=sop, patient_id="OTHER")
    r = _stow(server, _body(other_bytes, ct_file()))
    assert r.status_code == 202
    failed = r.json()["00081198"]["Value"]
    assert failed[0]["00081155"]["Value"] == [sop]
    assert failed[0]["00081197"]["Value"] == [0x0111]
    assert server.store.query("instance", {"PatientID": "OTHER"}, tenant=TENANT) == []


def test_concurrent_retrievals_and_stores(server: Server) -> None:
    first = ct_file(rows=256, cols=256)
    study = _uids(first)[0]
    files = [first] + [ct_file(rows=256, cols=256, study_uid=study, instance_number=i) for i in range(2, 8)]
    assert _stow(server, _body(*files)).status_code == 200
    errors: list[str] = []

    def retrieve() -> None:
        with httpx.Client() as client:
            for _ in range(3):
                r = client.get(f"{server.url}/studies/{study}")
                if r.status_code != 200 or not all(f in r.content for f in files):
                    errors.append(f"retrieve: {r.status_code}")

    def store() -> None:
        for _ in range(3):
            r = _stow(server, _body(ct_file(), ct_file(rows=200, cols=200)))
            if r.status_code != 200:
                errors.append(f"store: {r.status_code} {r.text}")

    threads = [threading.Thread(target=retrieve) for _ in range(4)] + \
        [threading.Thread(target=store) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert _count(server) == len(files) + 12


def test_stow_into_a_named_study_all_stored_is_200(server: Server) -> None:
    first = ct_file()
    study = _uids(first)[0]
    files = [first, ct_file(study_uid=study, instance_number=2)]
    r = _stow(server, _body(*files), path=f"/studies/{study}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert "00081198" not in body
    assert body["00081190"]["Value"] == [f"{server.url}/studies/{study}"]
    assert {i["00081155"]["Value"][0] for i in body["00081199"]["Value"]} == {_uids(f)[2] for f in files}
    assert _count(server) == 2


@pytest.mark.parametrize(("name", "syntax"), [("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),
                                              ("SC_rgb_rle.dcm", "1.2.840.10008.1.2.5"),
                                              ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),
                                              ("MR_small_implicit.dcm", "1.2.840.10008.1.2")])
def test_instances_are_served_in_their_stored_transfer_syntax(server: Server, name: str, syntax: str) -> None:
    """At study, series and instance level each part is the stored file in its own transfer syntax, named
    in the part's Content-Type; an Accept asking for that syntax gets it, one asking for another is 406
    (nothing is transcoded)."""
    ds, url = store_file(server, data_file(name))
    assert ds.file_meta.TransferSyntaxUID == syntax
    stored = data_file(name).read_bytes()
    study = url.split("/series/")[0]
    for level in (study, url.split("/instances/")[0], url):
        for accept in ("*/*", f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'):
            r = httpx.get(level, headers={"Accept": accept})
            assert r.status_code == 200, r.text
            assert _parts(r) == [(f"application/dicom; transfer-syntax={syntax}", stored)]
        other = "1.2.840.10008.1.2.4.50" if syntax != "1.2.840.10008.1.2.4.50" else "1.2.840.10008.1.2.1"
        r = httpx.get(level, headers={
            "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={other}'})
        assert r.status_code == 406
        assert syntax in r.json()["error"]


def test_bad_requests_in_a_row_each_get_their_status_and_the_server_keeps_serving(server: Server) -> None:
    """One server through every kind of bad request: each gets its status and a reason, nothing of any is
    stored, and a good store and retrieval still work after them all."""
    good = ct_file(patient_id="KEPT")
    study, series, sop = _uids(good)
    assert _stow(server, _body(good)).status_code == 200
    instance = f"{server.url}/studies/{study}/series/{series}/instances/{sop}"
    new = [ct_file(patient_id="NEVER"), ct_file(patient_id="NEVER")]
    checks = [
        (_stow(server, b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + new[0]), 400),  # never closed
        (_stow(server, _body(*new), content_type='multipart/related; type="application/dicom"'), 400),
        (_stow(server, _body(*new)[:-20]), 400),
        (_stow(server, _body(*new), content_type="application/dicom"), 415),
        (_stow(server, _body(b"not DICOM", b"\x00" * 200)), 409),
        (_stow(server, _body(new[0]), path="/studies/1.2.3"), 409),  # a part of another study
        (httpx.get(f"{server.url}/studies/1.2.3"), 404),
        (httpx.get(f"{server.url}/studies/{study}/series/{series}/instances/1.2.3/frames/1"), 404),
        (httpx.get(instance, headers={"Accept": "application/dicom+json"}), 406),
        (httpx.get(f"{instance}/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'}), 406),
        (httpx.get(f"{instance}/rendered", headers={"Accept": "image/gif"}), 406),
        (httpx.get(f"{instance}/frames/2"), 400),
        (httpx.get(f"{server.url}/studies", params={"limit": "x"}), 400),
    ]
    for r, status in checks:
        assert r.status_code == status, (r.request.method, r.request.url, r.text)
        reason = r.json().get("error") if status not in (409,) else r.json()["00081198"]
        assert reason, r.text
    # a client that goes away halfway through a body
    body = _body(*new)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Type: {DICOM_MULTIPART}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
    time.sleep(0.3)
    assert server.store.query("instance", {"PatientID": "NEVER"}, tenant=TENANT) == []
    assert _count(server) == 1
    r = httpx.get(instance)
    assert r.status_code == 200 and good in r.content
    another = ct_file(patient_id="KEPT")
    assert _stow(server, _body(another)).status_code == 200
    assert _count(server) == 2
