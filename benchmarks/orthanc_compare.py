"""Optional: Debian's Orthanc beside `mmarchive ingest` on the same synthetic DICOM files (no test runs it).

This module owns the side-by-side comparison of issue 3, section 7: it makes sure Debian's `orthanc`
package is installed (`apt-get install -y orthanc`, which needs root; with `--no-install` it only checks),
writes the CT set and the small set with `benchmarks.dicomdata`, and for each set starts a fresh Orthanc
on loopback with its own JSON configuration in a temporary folder (storage and index there, HTTP port
18042, its DICOM server off, `RemoteAccessAllowed` false, `StorageCompression` false unless
`--compression`, `SyncStorageArea` left at its default true, no plugins), uploads every file through
`POST /instances` from `--clients` concurrent HTTP keep-alive connections (default 2), and times it from
the first request to the last answer. Then it runs `mmarchive ingest DIR --archive A` on the same files into
a fresh archive (raw, or `compression=auto` with `--compression`), timed as a whole process, and prints
instances/s and MB/s of both. Orthanc is stopped by its process id; the temporary folder is removed.
Run: `python -m benchmarks.orthanc_compare [--compression] [--ct N] [--small M] [--dir PATH]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks.dicom_ingest_group import cli_command
from benchmarks.dicomdata import GeneratedSet, write_ct_set, write_small_set

ORTHANC: Final = "/usr/sbin/Orthanc"
HTTP_PORT: Final = 18042
DICOM_PORT: Final = 14242
MB: Final = 1e6


@dataclass(frozen=True)
class Timing:
    who: str
    seconds: float
    instances: int
    bytes: int

    def line(self) -> str:
        return (f"{self.who:<52} {self.instances:>7,} inst in {self.seconds:7.2f} s: "
                f"{self.instances / self.seconds:8,.0f} inst/s {self.bytes / self.seconds / MB:8,.1f} MB/s")


def ensure_orthanc(install: bool) -> str:
    """The Orthanc binary's path; installs Debian's package first if it is missing and `install` is set."""
    found = shutil.which("Orthanc") or (ORTHANC if os.path.exists(ORTHANC) else None)
    if found:
        return found
    if not install:
        raise SystemExit("Orthanc is not installed; run without --no-install (as root), or install the "
                         "orthanc package")
    if os.geteuid() != 0:
        raise SystemExit("installing Debian's orthanc needs root: run `apt-get install -y orthanc` as root "
                         "first")
    # Debian's postinst starts the service unless /usr/sbin/policy-rc.d forbids it; we start our own.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "orthanc"], check=True, env=env)
    return ORTHANC


def orthanc_config(folder: Path, compression: bool) -> Path:
    config = {
        "Name": "mmarchive-bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "StorageCompression": compression,
        "HttpServerEnabled": True,
        "HttpPort": HTTP_PORT,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,  # uploads go through REST; no listening DICOM port is needed
        "DicomPort": DICOM_PORT,
        "Plugins": [],
        "KeepAlive": True,
        "TcpNoDelay": True,
        "HttpCompressionEnabled": False,
        "SaveJobs": False,
        "StableAge": 3600,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def _request(connection: http.client.HTTPConnection, method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection.request(method, url, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read()


def start_orthanc(binary: str, folder: Path, compression: bool) -> subprocess.Popen[bytes]:
    config = orthanc_config(folder, compression)
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - kept open for the process's life
    process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"Orthanc exited with {process.returncode}; see {folder / 'orthanc.log'}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=5)
            status, _ = _request(connection, "GET", "/system")
            connection.close()
            if status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    stop(process)
    raise SystemExit("Orthanc did not answer on port 18042 within 60 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop Orthanc by its pid: SIGTERM, then SIGKILL if it has not gone after 30 s."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def upload(paths: Sequence[Path], clients: int) -> float:
    """POST every file to /instances from `clients` keep-alive connections; seconds of the whole upload."""
    next_index = 0
    lock = threading.Lock()
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        nonlocal next_index
        connection = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=120)
        barrier.wait()
        try:
            while True:
                with lock:
                    i = next_index
                    next_index += 1
                if i >= len(paths) or errors:
                    return
                with open(paths[i], "rb") as f:
                    body = f.read()
                status, answer = _request(connection, "POST", "/instances", body,
                                          {"Content-Type": "application/dicom"})
                if status != 200:
                    errors.append(f"{paths[i]}: HTTP {status} {answer[:200]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} uploads failed, first: {errors[0]}")
    return seconds


def orthanc_ingest(binary: str, set_: GeneratedSet, folder: Path, compression: bool, clients: int) -> Timing:
    folder.mkdir()
    process = start_orthanc(binary, folder, compression)
    try:
        seconds = upload(set_.paths, clients)
        connection = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=30)
        _status, body = _request(connection, "GET", "/statistics")
        connection.close()
        stored = int(json.loads(body)["CountInstances"])
        if stored != set_.instances:
            raise SystemExit(f"Orthanc holds {stored} instances, expected {set_.instances}")
    finally:
        stop(process)
    label = f"Orthanc 1.10, {clients} clients" + (", compressed" if compression else "")
    return Timing(label, seconds, set_.instances, set_.total_bytes)


def mmarchive_ingest(set_: GeneratedSet, archive: Path, compression: bool) -> Timing:
    command = cli_command()
    mode = "auto" if compression else "none"
    subprocess.run([*command, "init", "--archive", str(archive), "--compression", mode], check=True,
                   capture_output=True)
    started = time.perf_counter()
    subprocess.run([*command, "ingest", str(set_.directory), "--archive", str(archive), "--json"],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return Timing(f"mmarchive ingest (compression={mode}, whole process)", seconds, set_.instances,
                  set_.total_bytes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.orthanc_compare",
                                     description="Debian's Orthanc beside mmarchive ingest, same files.")
    parser.add_argument("--compression", action="store_true",
                        help="Orthanc StorageCompression true, mmarchive compression=auto")
    parser.add_argument("--ct", type=int, default=2000, help="CT instances (default 2000, ~1 GB)")
    parser.add_argument("--small", type=int, default=5000, help="small instances (default 5000)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent upload connections (2)")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the scratch folder goes")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    binary = ensure_orthanc(not args.no_install)
    scratch = Path(tempfile.mkdtemp(prefix=".mmarchive-bench-orthanc-", dir=args.dir))
    try:
        sets = [("CT", write_ct_set(scratch / "ct", args.ct, args.seed)),
                ("small", write_small_set(scratch / "small", args.small, args.seed))]
        os.sync()
        for name, set_ in sets:
            if set_.instances == 0:
                continue
            print(f"{name}: {set_.describe()}", flush=True)
            ours = mmarchive_ingest(set_, scratch / f"archive-{name}", args.compression)
            theirs = orthanc_ingest(binary, set_, scratch / f"orthanc-{name}", args.compression, args.clients)
            print("  " + theirs.line(), flush=True)
            print("  " + ours.line(), flush=True)
            print(f"  mmarchive / Orthanc: {theirs.seconds / ours.seconds:.1f}x", flush=True)
            shutil.rmtree(scratch / f"archive-{name}", ignore_errors=True)
            shutil.rmtree(scratch / f"orthanc-{name}", ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
