"""``mmarchive serve`` as a process: it answers requests on a keep-alive connection without Nagle's delay
(each response goes out at once instead of waiting for the client's delayed ACK, about 40 ms a request on
Linux), and a SIGTERM sent as soon as it shows its address stops it cleanly."""

from __future__ import annotations

import http.client
import re
import signal
import statistics
import subprocess
import time
from pathlib import Path

from tests.cli.conftest import run_cli, start_serve


def test_keep_alive_requests_are_not_held_back(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    assert run_cli("init", "--archive", archive).code == 0
    proc, line = start_serve(archive)
    try:
        found = re.search(r"serving DICOMweb at http://127\.0\.0\.1:(\d+)(\S+)", line)
        assert found is not None, line
        connection = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=10)
        times = []
        for _ in range(21):
            start = time.perf_counter()
            # An answer with a body (headers and body are two writes): a study that is not there.
            connection.request("GET", found.group(2) + "/studies/1.2.3.4/metadata")
            response = connection.getresponse()
            assert response.read() and response.status == 404
            times.append(time.perf_counter() - start)
        connection.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    # The first request opens the connection; with Nagle's algorithm every later one takes >= 40 ms.
    assert statistics.median(times[1:]) < 0.025, [round(t * 1000, 1) for t in times]


def test_a_signal_right_after_the_address_is_shown_stops_the_server(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    assert run_cli("init", "--archive", archive).code == 0
    for _ in range(4):
        proc, line = start_serve(archive)
        assert "serving DICOMweb at" in line
        proc.send_signal(signal.SIGTERM)  # before uvicorn may have started
        try:
            _out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("serve kept running after SIGTERM") from None
        assert proc.returncode == 0, err.decode()
        assert "stopped (SIGTERM)" in err.decode()
