"""``mmarchive serve --http``: a subprocess serving DICOMweb over an archive, logging each request, stopped
by SIGTERM or SIGINT with exit status 0 and the archive left to other writers."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import run_cli, start_serve
from tests.dicom.synthetic import ct_file


def _start(archive: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    proc, line = start_serve(archive, *args)
    assert proc.stderr is not None
    found = re.search(r"serving DICOMweb at (http://\S+)", line)
    if found is None:
        proc.kill()
        raise AssertionError(f"serve did not start: {line}{proc.stderr.read().decode()}")
    return proc, found.group(1)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_stores_and_searches_logs_requests_and_stops_on_a_signal(tmp_path: Path,
                                                                        stop: signal.Signals) -> None:
    archive = tmp_path / "archive"
    assert run_cli("init", "--archive", archive).code == 0
    proc, url = _start(archive, "--tenant", "trust-b")
    try:
        data = ct_file(patient_id="SERVED")
        body = (b"--b1\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b1--\r\n")
        r = httpx.post(url + "/studies", content=body,
                       headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b1'})
        assert r.status_code == 200
        found = httpx.get(url + "/studies", params={"PatientID": "SERVED"})
        assert found.status_code == 200
        assert len(found.json()) == 1
    finally:
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    log = err.decode()
    assert '"POST /dicom-web/studies HTTP/1.1" 200' in log
    assert "GET /dicom-web/studies?PatientID=SERVED HTTP/1.1\" 200" in log
    assert f"stopped ({stop.name})" in log
    assert out == b""
    # the archive is closed and its writer lock released: the CLI sees the instance in tenant trust-b
    query = run_cli("query", "--archive", archive, "--tenant", "trust-b", "--json", "PatientID=SERVED")
    assert query.code == 0
    assert len(query.json_lines()[0]) == 1


def test_serve_with_dimse_answers_echo_and_stores(tmp_path: Path) -> None:
    from pynetdicom import AE

    verification, ct_image_storage = "1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.1.2"

    archive = tmp_path / "archive"
    assert run_cli("init", "--archive", archive).code == 0
    proc, line = start_serve(archive, "--dimse", "0", "--ae", "TESTARCH")
    try:
        found = re.search(r"DIMSE as TESTARCH on 127\.0\.0\.1:(\d+)", line)
        assert found is not None, line
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(verification)
        ae.add_requested_context(ct_image_storage)
        assoc = ae.associate("127.0.0.1", int(found.group(1)), ae_title="TESTARCH")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        from io import BytesIO

        import pydicom

        ds = pydicom.dcmread(BytesIO(ct_file(patient_id="VIA-DIMSE")))
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    query = run_cli("query", "--archive", archive, "--json", "PatientID=VIA-DIMSE")
    assert query.code == 0 and len(query.json_lines()[0]) == 1


def test_serve_refuses_a_bad_address_and_a_taken_port(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    assert run_cli("init", "--archive", archive).code == 0
    assert run_cli("serve", "--archive", archive, "--http", "nohost:port").code == 2
    proc, url = _start(archive)
    try:
        port = url.split(":")[2].split("/")[0]
        taken = run_cli("serve", "--archive", tmp_path / "other", "--http", f"127.0.0.1:{port}")
        assert taken.code != 0
        assert "in use" in taken.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
