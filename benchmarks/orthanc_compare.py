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

With `--dicomweb` it compares the DICOMweb facade instead (issue 5 §5): Debian's `orthanc-dicomweb` plugin
is installed if missing (`apt-get install -y orthanc-dicomweb`), and on the files of the `facade` benchmark
group (`benchmarks.facade_group`: the CT ingest set and the retrieval study of a 400- and a 200-instance
series, same seed, same bytes) each of `--runs` rounds measures, Orthanc and mmarchive one after the other
in the same minutes: STOW-RS of the ingest set from 2 clients in batches of 20 (Orthanc and `mmarchive
serve`, each into fresh storage), then, after the retrieval study is stored (untimed), the same reads as the
group (`facade_group.web_reads`: WADO-RS of the whole study warm, single instances p50/p99, metadata of the
400-instance series, QIDO-RS of the 200-instance series' instances and of studies by PatientID) against
Orthanc, `mmarchive serve` and the application embedded in uvicorn. Orthanc runs with the plugin's default
configuration (metadata read from the stored files) and `transfer-syntax=*` in Accept when it takes it.
Run: `python -m benchmarks.orthanc_compare --dicomweb [--ct N] [--runs R] [--dir PATH]`.
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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks.archive_timing import median, percentile
from benchmarks.dicom_ingest_group import MB, cli_command
from benchmarks.dicomdata import GeneratedSet, write_ct_set, write_small_set
from benchmarks.facade_group import (
    DICOM_ACCEPT,
    FULL_INGEST,
    FULL_SERIES,
    SEED_OFFSET,
    Client,
    ReadFigures,
    RetrievalStudy,
    Served,
    new_archive,
    run_clients,
    stow,
    web_reads,
    write_retrieval_study,
)

ORTHANC: Final = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN: Final = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
HTTP_PORT: Final = 18042
DICOM_PORT: Final = 14242


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


def ensure_dicomweb_plugin(install: bool) -> str:
    """The path of Debian's Orthanc DICOMweb plugin; installs `orthanc-dicomweb` first if it is missing."""
    if os.path.exists(DICOMWEB_PLUGIN):
        return DICOMWEB_PLUGIN
    if not install or os.geteuid() != 0:
        raise SystemExit("the Orthanc DICOMweb plugin is not installed; run `apt-get install -y "
                         "orthanc-dicomweb` as root (or run this without --no-install, as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "orthanc-dicomweb"], check=True, env=env)
    return DICOMWEB_PLUGIN


def orthanc_config(folder: Path, compression: bool, plugins: Sequence[str] = ()) -> Path:
    config: dict[str, object] = {
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
        "Plugins": list(plugins),
        "KeepAlive": True,
        "TcpNoDelay": True,
        "HttpCompressionEnabled": False,
        "SaveJobs": False,
        "StableAge": 3600,
    }
    if plugins:
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": False,
                              "Host": "127.0.0.1", "Ssl": False}
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def _request(connection: http.client.HTTPConnection, method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection.request(method, url, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read()


def start_orthanc(binary: str, folder: Path, compression: bool,
                  plugins: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    config = orthanc_config(folder, compression, plugins)
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
    def post(connection: http.client.HTTPConnection, i: int) -> str | None:
        with open(paths[i], "rb") as f:
            body = f.read()
        status, answer = _request(connection, "POST", "/instances", body,
                                  {"Content-Type": "application/dicom"})
        return None if status == 200 else f"{paths[i]}: HTTP {status} {answer[:200]!r}"

    try:
        return run_clients(len(paths), clients,
                           lambda: http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=120), post,
                           "uploads to Orthanc")
    except RuntimeError as e:
        raise SystemExit(str(e)) from e


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


def _orthanc_accept(root: str, study: RetrievalStudy) -> str:
    """`transfer-syntax=*` in the WADO-RS Accept if Orthanc takes it, else without (Explicit VR: the files'
    own syntax, so nothing is transcoded either way)."""
    client = Client(root)
    try:
        path = f"/studies/{study.study_uid}/series/{study.series_uids[-1]}/instances/{study.sop_uids[-1][0]}"
        status, _size, _body = client.get(path, DICOM_ACCEPT)
    finally:
        client.close()
    return DICOM_ACCEPT if status == 200 else 'multipart/related; type="application/dicom"'


def _stow_untimed(root: str, study: RetrievalStudy) -> None:
    stow(root, study.paths, 2)


def dicomweb_round(binary: str, plugin: str, ingest: GeneratedSet, study: RetrievalStudy, folder: Path,
                   round_: int, seed: int) -> dict[str, dict[str, float]]:
    """One round: STOW-RS (2 clients) into Orthanc and into `mmarchive serve`, then the reads of the study
    from Orthanc, `mmarchive serve` and the embedded app. Figures by server, by measure."""
    repeats, instances, queries = 5, 200, 60
    out: dict[str, dict[str, float]] = {"Orthanc 1.10 + DICOMweb 1.7": {}, "mmarchive serve": {},
                                        "mmarchive, embedded app": {}}
    orthanc_folder = folder / f"orthanc-{round_}"
    orthanc_folder.mkdir()
    process = start_orthanc(binary, orthanc_folder, False, [plugin])
    try:
        root = f"http://127.0.0.1:{HTTP_PORT}/dicom-web"
        seconds = stow(root, ingest.paths, 2)
        out["Orthanc 1.10 + DICOMweb 1.7"]["STOW-RS, 2 clients (inst/s)"] = ingest.instances / seconds
        _stow_untimed(root, study)
        figures = web_reads(root, study, repeats=repeats, instances=instances, queries=queries,
                            seed=seed + round_, dicom_accept=_orthanc_accept(root, study))
        out["Orthanc 1.10 + DICOMweb 1.7"].update(_read_figures(figures))
    finally:
        stop(process)
        shutil.rmtree(orthanc_folder, ignore_errors=True)
    archive = new_archive(folder / f"stow-{round_}")
    with Served(archive) as served:
        seconds = stow(served.url, ingest.paths, 2)
    out["mmarchive serve"]["STOW-RS, 2 clients (inst/s)"] = ingest.instances / seconds
    shutil.rmtree(archive)
    archive = new_archive(folder / f"read-{round_}")
    with Served(archive) as served:
        _stow_untimed(served.url, study)
        out["mmarchive serve"].update(_read_figures(web_reads(
            served.url, study, repeats=repeats, instances=instances, queries=queries, seed=seed + round_)))
    with Served(archive, embedded=True) as served:
        out["mmarchive, embedded app"].update(_read_figures(web_reads(
            served.url, study, repeats=repeats, instances=instances, queries=queries, seed=seed + round_)))
    shutil.rmtree(archive)
    return out


def _read_figures(f: ReadFigures) -> dict[str, float]:
    def pct(values: list[float], q: float) -> float:
        return 1000.0 * percentile(sorted(values), q)

    series, patient = f.qido_series_results, f.qido_patient_results
    return {
        "WADO-RS study, warm (MB/s)": f.study_bytes / median(f.study_seconds) / MB,
        "WADO-RS instance p50 (ms)": pct(f.instance_seconds, 0.5),
        "WADO-RS instance p99 (ms)": pct(f.instance_seconds, 0.99),
        f"WADO-RS series metadata, {f.metadata_instances} instances (ms)": median(f.metadata_seconds) * 1e3,
        f"QIDO-RS instances of a series, {series} results, p50 (ms)": pct(f.qido_series_seconds, 0.5),
        f"QIDO-RS instances of a series, {series} results, p99 (ms)": pct(f.qido_series_seconds, 0.99),
        f"QIDO-RS studies by PatientID, {patient} results, p50 (ms)": pct(f.qido_patient_seconds, 0.5),
    }


def compare_dicomweb(binary: str, plugin: str, scratch: Path, instances: int, runs: int, seed: int) -> None:
    ingest = write_ct_set(scratch / "files-ingest", instances, seed)
    study = write_retrieval_study(scratch / "files-study", FULL_SERIES, seed + SEED_OFFSET)
    os.sync()
    print(f"ingest set: {ingest.describe()}; retrieval study: {study.describe()}", flush=True)
    rounds = []
    for round_ in range(runs):
        print(f"round {round_ + 1} of {runs}", file=sys.stderr, flush=True)
        rounds.append(dicomweb_round(binary, plugin, ingest, study, scratch, round_, seed))
    servers = list(rounds[0])
    measures = list(dict.fromkeys(m for r in rounds for figures in r.values() for m in figures))
    print(f"medians of {runs} rounds")
    print(f"{'measure':<62}" + "".join(f"{s:>30}" for s in servers))
    for measure in measures:
        cells = []
        for server in servers:
            values = [r[server][measure] for r in rounds if measure in r[server]]
            cells.append(f"{median(values):>30,.2f}" if values else f"{'':>30}")
        print(f"{measure:<62}" + "".join(cells), flush=True)
    print(json.dumps({"rounds": rounds}), flush=True)


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
    parser.add_argument("--dicomweb", action="store_true",
                        help="compare the DICOMweb facade (STOW-RS, WADO-RS, metadata, QIDO-RS) instead of "
                             "ingest; --ct is then the STOW-RS set (default 600)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the --dicomweb comparison (3)")
    args = parser.parse_args(argv)
    binary = ensure_orthanc(not args.no_install)
    scratch = Path(tempfile.mkdtemp(prefix=".mmarchive-bench-orthanc-", dir=args.dir))
    if args.dicomweb:
        try:
            plugin = ensure_dicomweb_plugin(not args.no_install)
            instances = args.ct if "--ct" in (argv if argv is not None else sys.argv) else FULL_INGEST
            compare_dicomweb(binary, plugin, scratch, instances, args.runs, args.seed)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return 0
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
