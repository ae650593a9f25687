"""The `facade` group: the DICOMweb and DIMSE facade beside the Python API, on the same files in the same run.

This module owns the figures of issue 5 §5. It writes synthetic CT files with `benchmarks.dicomdata`: an
ingest set (`write_ct_set`: 600 512x512 16-bit images, about 315 MB; 24 with `--quick`) and one retrieval
study of two series, 400 and 200 instances (20 and 10 with `--quick`), then `sync`s them and leaves them in
the page cache. Servers are what `mmarchive serve --http 127.0.0.1:0 --dimse 0 --json` starts, as a child
process (its own interpreter and GIL; the clients run in this process or in child processes), over a fresh
archive for each ingest pass and over one archive holding the retrieval study for the reads (archives with
the default configuration: `compression="auto"`, shuffle + zstd-3, for the API passes too). Each run
measures, each beside the same operation through the Python API (`DicomStore` and its catalog) in the same
run, on the same files:

- STOW-RS of the ingest set in multipart/related batches of 20 instances, from 1 and from 2 concurrent
  keep-alive HTTP connections (http.client), against `DicomStore.ingest` of the same paths into a fresh
  archive (the clock runs to the end of `close()`);
- C-STORE of the first 200 files (12 with `--quick`) from 1 and from 2 pynetdicom associations, each in a
  child process of its own (`python -m benchmarks.facade_group cstore-client`, sending the files' datasets
  as they are), against the API ingest of those files;
- WADO-RS of the whole study (one multipart response, warm: after one untimed retrieval) in MB/s, against
  `DicomStore.retrieve` of each of its instances;
- WADO-RS of single instances (p50/p99 over a sample), against `DicomStore.retrieve`;
- WADO-RS metadata of the 400-instance series, against `DicomStore.metadata(study, series_uid=...)`;
- QIDO-RS: the instances of the 200-instance series and a study search by PatientID, against
  `DicomStore.query` with the same constraints.

The ratio of each row is facade / API (above 1 is faster for throughputs, slower for latencies). Notes
name the issue's Orthanc reference (:data:`ORTHANC_REFERENCE`; `python -m benchmarks.orthanc_compare
--dicomweb` measures Orthanc 1.10 on the same operations) and whether the row beats it.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, TypeVar
from urllib.parse import urlsplit

from pydicom.uid import CTImageStorage

from benchmarks import ctdata, dicomdata
from benchmarks.archive_timing import median, percentile
from benchmarks.dicom_ingest_group import CT_SET, MB, cli_command
from benchmarks.dicomdata import GeneratedSet, write_ct_set
from benchmarks.harness import BenchmarkContext, BenchmarkGroup, ProgressReporter
from benchmarks.results import ResultRow
from mmarchive.archive import Archive
from mmarchive.dicom.store import DicomStore

GROUP_NAME: Final = "facade"
FULL_INGEST: Final = 600
QUICK_INGEST: Final = 24
FULL_CSTORE: Final = 200
QUICK_CSTORE: Final = 12
FULL_SERIES: Final = (400, 200)
QUICK_SERIES: Final = (20, 10)
STOW_BATCH: Final = 20
"""Instances per STOW-RS request."""
FULL_INSTANCE_REQUESTS: Final = 200
QUICK_INSTANCE_REQUESTS: Final = 20
FULL_QUERY_REQUESTS: Final = 60
QUICK_QUERY_REQUESTS: Final = 10
FULL_REPEATS: Final = 5
"""Timed repetitions of a study retrieval and of a series metadata request in each run."""
QUICK_REPEATS: Final = 1
SEED_OFFSET: Final = 7
"""The retrieval study's seed is the run's seed plus this (its UIDs differ from the ingest set's)."""
DICOM_ACCEPT: Final = 'multipart/related; type="application/dicom"; transfer-syntax=*'
JSON_ACCEPT: Final = "application/dicom+json"
EMBEDDED: Final = " [embedded app]"
"""Suffix of the rows measured on `Served(embedded=True)`."""
API: Final = "the same through the Python API (same run)"

ORTHANC_REFERENCE: Final[dict[str, tuple[float, str, bool]]] = {
    "STOW-RS, 2 clients": (350.0, "inst/s", True),
    "WADO-RS study, warm": (450.0, "MB/s", True),
    "WADO-RS instance p50": (2.8, "ms", False),
    "WADO-RS series metadata (400)": (320.0, "ms", False),
    "QIDO-RS instances of a series (200) p50": (175.0, "ms", False),
}
"""The issue's Orthanc figures (value, unit, higher is better), by row name; "aim at several times better"."""


# -- data --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetrievalStudy:
    """One CT study of several series, written as files: what the read measurements fetch."""

    directory: Path
    study_uid: str
    patient_id: str
    series_uids: tuple[str, ...]
    sop_uids: tuple[tuple[str, ...], ...]
    """The SOP Instance UIDs of each series, in order."""
    paths: tuple[Path, ...]
    total_bytes: int

    def describe(self) -> str:
        sizes = " + ".join(str(len(s)) for s in self.sop_uids)
        return f"1 study of {sizes} instances, {self.total_bytes / MB:,.1f} MB"


def write_retrieval_study(directory: Path, counts: Sequence[int], seed: int) -> RetrievalStudy:
    """Write one study whose series have `counts` instances (dicomdata's CT images, series template and
    per-instance header patching; UIDs from dicomdata's root with seed `seed`)."""
    base = dicomdata.plan_ct(1, seed)[0]
    spacing = 360.0 / dicomdata.CT_SIDE
    paths: list[Path] = []
    series_uids: list[str] = []
    sops: list[tuple[str, ...]] = []
    total = 0
    start = 0
    for k, count in enumerate(counts):
        series = dataclasses.replace(
            base, uid=dicomdata._uid(2, seed, 900 + k), number=k + 2, count=count, first_index=start,
            frame_of_reference_uid=dicomdata._uid(4, seed, 900 + k), pixel_start=start)
        folder = directory / f"se{series.number:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        template = dicomdata._series_header(series, CTImageStorage, dicomdata.CT_SIDE, spacing)
        slices = ctdata.ct_slices(count, series.study.patient.pixel_seed, start=start)
        for i, pixels in enumerate(slices):
            dicomdata._set_instance(template, series, i)
            path = folder / f"{start + i:06d}.dcm"
            total += template.write(path, pixels)
            paths.append(path)
        series_uids.append(series.uid)
        sops.append(tuple(dicomdata._sop_uid(series, i) for i in range(count)))
        start += count
    return RetrievalStudy(directory, base.study.uid, base.study.patient.patient_id, tuple(series_uids),
                          tuple(sops), tuple(paths), total)


# -- servers -----------------------------------------------------------------------------------------

class Served:
    """A DICOMweb + DIMSE server over `archive` in a child process, once it listens.

    ``embedded=False``: what `mmarchive serve --http 127.0.0.1:0 --dimse 0 --archive A --json` runs.
    ``embedded=True``: `python -m benchmarks.facade_group serve A`, the same application
    (`create_app`, `serve_dimse`) run the way an embedding service runs an ASGI app, uvicorn binding the
    host and port itself (see :func:`serve_embedded`).
    """

    def __init__(self, archive: Path, *, embedded: bool = False) -> None:
        cli = [*cli_command(), "serve", "--http", "127.0.0.1:0", "--dimse", "0", "--archive", str(archive),
               "--json"]
        own = [sys.executable, "-m", "benchmarks.facade_group", "serve", str(archive)]
        command = own if embedded else cli
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                        cwd=Path(__file__).resolve().parent.parent)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise RuntimeError(f"{' '.join(command)} exited with {self.process.returncode} before serving")
        info = json.loads(line)
        self.url: str = info["url"]
        self.dimse_port: int = int(info["dimse"]["port"])
        self.ae_title: str = info["dimse"]["ae_title"]
        self._wait_until_answering()

    def _wait_until_answering(self) -> None:
        """Until a QIDO-RS request is answered: `mmarchive serve` prints its URL before uvicorn runs, and
        a SIGTERM in between is noted but does not stop it (uvicorn's own handlers are not installed yet)."""
        deadline = time.monotonic() + 30.0
        while True:
            client = Client(self.url, timeout=5.0)
            try:
                status, _size, _body = client.get("/studies?limit=1", JSON_ACCEPT)
                if status in (200, 204):
                    return
            except OSError:
                pass
            finally:
                client.close()
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the server at {self.url} does not answer")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM by pid (a graceful stop: the archive is closed), SIGKILL after 30 s."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_embedded(archive: Path) -> int:
    """The child of ``Served(embedded=True)``: `create_app` and `serve_dimse` over the archive, uvicorn
    binding 127.0.0.1 on a free port itself (so asyncio sets TCP_NODELAY on its connections, as for any
    socket it creates), request log on stderr as `mmarchive serve` has it; prints the same JSON line as
    `mmarchive serve --json`; SIGTERM stops it."""
    import uvicorn

    from mmarchive.dicom.dimse import serve_dimse
    from mmarchive.dicom.web.app import create_app

    with DicomStore.open(archive) as store, serve_dimse(store, 0) as dimse:
        server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=0, lifespan="off",
                                               log_level="info", access_log=True))

        def announce() -> None:
            while not server.started:
                time.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            print(json.dumps({"url": f"http://127.0.0.1:{port}/dicom-web", "tenant": "default",
                              "dimse": {"ae_title": dimse.ae_title, "port": dimse.port}}), flush=True)

        threading.Thread(target=announce, daemon=True).start()
        server.run()
    return 0


def new_archive(path: Path) -> Path:
    Archive.create(path).close()
    return path


# -- HTTP clients (shared with benchmarks.orthanc_compare) -------------------------------------------

class Client:
    """One keep-alive HTTP/1.1 connection to a DICOMweb root URL."""

    def __init__(self, root: str, timeout: float = 300.0) -> None:
        parts = urlsplit(root)
        self.prefix = parts.path.rstrip("/")
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                                     timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, int, bytes]:
        """Send, read the whole answer; (status, bytes of the body, the body if under 64 MiB else b"")."""
        self.connection.request(method, self.prefix + path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        kept: list[bytes] = []
        size = 0
        while chunk := response.read(1 << 20):
            size += len(chunk)
            if size <= 64 << 20:
                kept.append(chunk)
        return response.status, size, b"".join(kept) if size <= 64 << 20 else b""

    def get(self, path: str, accept: str) -> tuple[int, int, bytes]:
        return self.request("GET", path, headers={"Accept": accept})

    def close(self) -> None:
        self.connection.close()


def stow_body(paths: Sequence[Path]) -> tuple[bytes, str]:
    """A STOW-RS request body of the files (read now) and its Content-Type."""
    boundary = secrets.token_hex(16)
    parts = []
    for path in paths:
        with open(path, "rb") as f:
            parts.append(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                         + f.read() + b"\r\n")
    parts.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(parts), f'multipart/related; type="application/dicom"; boundary={boundary}'


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


def stow(root: str, paths: Sequence[Path], clients: int, batch: int = STOW_BATCH) -> float:
    """POST the files to `root`/studies in batches from `clients` connections; seconds of the whole upload
    (bodies are read from the files inside the clock). Raises if a request is not answered 200."""
    batches = [paths[i:i + batch] for i in range(0, len(paths), batch)]

    def post(connection: Client, i: int) -> str | None:
        body, content_type = stow_body(batches[i])
        status, _size, answer = connection.request(
            "POST", "/studies", body, {"Content-Type": content_type, "Accept": JSON_ACCEPT})
        return None if status == 200 else f"batch {i}: HTTP {status} {answer[:300]!r}"

    return run_clients(len(batches), clients, lambda: Client(root), post, "STOW-RS")


def run_clients(jobs: int, clients: int, connect: Callable[[], C], send: Callable[[C, int], str | None],
                what: str) -> float:
    """Send jobs 0..``jobs``-1 from ``clients`` threads, each with its own connection (``connect``, opened
    before the clock), taking the next job as it finishes one; ``send`` returns an error or None. The
    seconds from the moment every client is connected until the last job is done; raises RuntimeError
    naming ``what`` and the first error if any job failed."""
    next_job = 0
    lock = threading.Lock()
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        nonlocal next_job
        connection = connect()
        barrier.wait()
        try:
            while True:
                with lock:
                    i = next_job
                    next_job += 1
                if i >= jobs or errors:
                    return
                error = send(connection, i)
                if error is not None:
                    errors.append(error)
        except Exception as e:  # reported below, with the others
            errors.append(f"{type(e).__name__}: {e}")
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
        raise RuntimeError(f"{what} failed ({len(errors)} errors), first: {errors[0]}")
    return seconds


def timed_get(client: Client, path: str, accept: str) -> tuple[float, int, bytes]:
    """(seconds, body bytes, body) of one GET answered 200."""
    started = time.perf_counter()
    status, size, body = client.get(path, accept)
    seconds = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"GET {path}: HTTP {status} {body[:300]!r}")
    return seconds, size, body


@dataclass
class ReadFigures:
    """One run's read figures of one server (or of the API): seconds and sizes, raw."""

    study_seconds: list[float] = field(default_factory=list)
    study_bytes: int = 0
    instance_seconds: list[float] = field(default_factory=list)
    metadata_seconds: list[float] = field(default_factory=list)
    metadata_instances: int = 0
    qido_series_seconds: list[float] = field(default_factory=list)
    qido_series_results: int = 0
    qido_patient_seconds: list[float] = field(default_factory=list)
    qido_patient_results: int = 0

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def instance_sample(study: RetrievalStudy, count: int, seed: int) -> list[tuple[str, str]]:
    """(series UID, SOP UID) of `count` instances of the study, drawn with a fixed seed."""
    every = [(series, sop) for series, sops in zip(study.series_uids, study.sop_uids, strict=True)
             for sop in sops]
    rng = random.Random(seed)
    return [rng.choice(every) for _ in range(count)]


def web_reads(root: str, study: RetrievalStudy, *, repeats: int, instances: int, queries: int,
              seed: int, dicom_accept: str = DICOM_ACCEPT) -> ReadFigures:
    """The DICOMweb read figures of the server at `root` (WADO-RS study, instances, series metadata,
    QIDO-RS), each request on one keep-alive connection, after one untimed request of each kind."""
    out = ReadFigures()
    client = Client(root)
    s = study.study_uid
    big, small = study.series_uids[0], study.series_uids[-1]
    try:
        _t, size, _ = timed_get(client, f"/studies/{s}", dicom_accept)  # warm-up
        expected = sum(p.stat().st_size for p in study.paths)
        if size < expected:
            raise RuntimeError(f"the study came back with {size} bytes, less than its {expected} of files")
        for _ in range(repeats):
            seconds, out.study_bytes, _ = timed_get(client, f"/studies/{s}", dicom_accept)
            out.study_seconds.append(seconds)
        sample = instance_sample(study, instances, seed)
        timed_get(client, f"/studies/{s}/series/{sample[0][0]}/instances/{sample[0][1]}", dicom_accept)
        for series, sop in sample:
            path = f"/studies/{s}/series/{series}/instances/{sop}"
            out.instance_seconds.append(timed_get(client, path, dicom_accept)[0])
        metadata = f"/studies/{s}/series/{big}/metadata"
        _t, _size, body = timed_get(client, metadata, JSON_ACCEPT)
        out.metadata_instances = len(json.loads(body))
        for _ in range(repeats):
            out.metadata_seconds.append(timed_get(client, metadata, JSON_ACCEPT)[0])
        _t, _size, body = timed_get(client, f"/studies/{s}/series/{small}/instances", JSON_ACCEPT)
        out.qido_series_results = len(json.loads(body))
        for _ in range(queries):
            out.qido_series_seconds.append(
                timed_get(client, f"/studies/{s}/series/{small}/instances", JSON_ACCEPT)[0])
        _t, _size, body = timed_get(client, f"/studies?PatientID={study.patient_id}", JSON_ACCEPT)
        out.qido_patient_results = len(json.loads(body))
        for _ in range(queries):
            out.qido_patient_seconds.append(
                timed_get(client, f"/studies?PatientID={study.patient_id}", JSON_ACCEPT)[0])
    finally:
        client.close()
    return out


def api_reads(store: DicomStore, study: RetrievalStudy, *, repeats: int, instances: int, queries: int,
              seed: int) -> ReadFigures:
    """The same reads through the Python API: retrieve each instance of the study, retrieve single
    instances, metadata of the big series, the catalog queries; after one untimed pass of each."""
    out = ReadFigures()
    s = study.study_uid
    big, small = study.series_uids[0], study.series_uids[-1]

    def whole_study() -> int:
        return sum(len(store.retrieve(e.sop_instance_uid)) for e in store.instances(s))

    whole_study()
    for _ in range(repeats):
        started = time.perf_counter()
        out.study_bytes = whole_study()
        out.study_seconds.append(time.perf_counter() - started)
    sample = instance_sample(study, instances, seed)
    store.retrieve(sample[0][1])
    for _series, sop in sample:
        started = time.perf_counter()
        store.retrieve(sop)
        out.instance_seconds.append(time.perf_counter() - started)
    out.metadata_instances = len(store.metadata(s, series_uid=big))
    for _ in range(repeats):
        started = time.perf_counter()
        store.metadata(s, series_uid=big)
        out.metadata_seconds.append(time.perf_counter() - started)
    out.qido_series_results = len(store.query("instance", {}, study_uid=s, series_uid=small))
    for _ in range(queries):
        started = time.perf_counter()
        store.query("instance", {}, study_uid=s, series_uid=small)
        out.qido_series_seconds.append(time.perf_counter() - started)
    out.qido_patient_results = len(store.query("study", {"PatientID": study.patient_id}))
    for _ in range(queries):
        started = time.perf_counter()
        store.query("study", {"PatientID": study.patient_id})
        out.qido_patient_seconds.append(time.perf_counter() - started)
    return out


# -- C-STORE clients ---------------------------------------------------------------------------------

def cstore(host: str, port: int, ae_title: str, paths: Sequence[Path], associations: int,
           folder: Path) -> float:
    """Send the files by C-STORE from `associations` child processes (pynetdicom, one association each,
    files split evenly); seconds from the go signal to the last child's answer (associations are
    established before the clock starts)."""
    children = []
    for k in range(associations):
        listing = folder / f"cstore-{k}.txt"
        listing.write_text("\n".join(str(p) for p in paths[k::associations]), encoding="utf-8")
        children.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.facade_group", "cstore-client", host, str(port), ae_title,
             str(listing)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent))
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a C-STORE client could not associate")
        started = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        answers = []
        for child in children:
            assert child.stdout is not None
            answers.append(json.loads(child.stdout.readline()))
        seconds = time.perf_counter() - started
    finally:
        for child in children:
            child.wait(60)
    failed = sum(int(a["failed"]) for a in answers)
    if failed:
        raise RuntimeError(f"{failed} C-STORE requests failed")
    return seconds


def cstore_client(host: str, port: int, ae_title: str, listing: Path) -> int:
    """The child of :func:`cstore`: associate, say "ready", wait for a line, send every file as it is
    (its dataset bytes, not decoded), say how many failed, release."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    paths = [Path(line) for line in listing.read_text(encoding="utf-8").splitlines() if line]
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        print("refused", flush=True)
        return 1
    print("ready", flush=True)
    sys.stdin.readline()
    failed = 0
    for path in paths:
        status = assoc.send_c_store(path)
        failed += int(getattr(status, "Status", 0xFFFF) != 0x0000)
    print(json.dumps({"failed": failed, "sent": len(paths)}), flush=True)
    assoc.release()
    return 0


# -- the passes --------------------------------------------------------------------------------------

def api_ingest(paths: Sequence[Path], archive: Path) -> float:
    """`DicomStore.ingest` of the paths into a fresh archive; seconds to the end of `close()`."""
    new_archive(archive)
    store = DicomStore.open(archive)
    started = time.perf_counter()
    try:
        results = list(store.ingest(list(paths)))
    finally:
        store.close()
    seconds = time.perf_counter() - started
    if sum(r.ok for r in results) != len(paths):
        raise RuntimeError("the API did not store every file")
    return seconds


def count_stored(archive: Path) -> int:
    with DicomStore.open(archive, readonly=True) as store:
        return len(store.query("instance", {}))


@dataclass
class Passes:
    """Seconds of every timed pass of every run, by kind."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    reads: dict[str, list[ReadFigures]] = field(default_factory=dict)

    def add(self, kind: str, seconds: float) -> None:
        self.seconds.setdefault(kind, []).append(seconds)


def _ingest_passes(folder: Path, ingest: GeneratedSet, cstore_paths: Sequence[Path], run: int,
                   passes: Passes, progress: ProgressReporter, quick: bool) -> None:
    for embedded in (False,) if quick else (False, True):  # --quick: no STOW-RS to the embedded app
        for clients in (1, 2):
            archive = new_archive(folder / f"stow-{run}-{clients}")
            with Served(archive, embedded=embedded) as served:
                seconds = stow(served.url, ingest.paths, clients)
            stored = count_stored(archive)
            if stored != ingest.instances:
                raise RuntimeError(f"STOW-RS stored {stored} of {ingest.instances} instances")
            kind = f"STOW-RS, {clients} client{'s' if clients > 1 else ''}" + (EMBEDDED if embedded else "")
            passes.add(kind, seconds)
            shutil.rmtree(archive)
            progress(f"[{GROUP_NAME}]   {kind}: {ingest.instances / seconds:,.0f} inst/s")
    archive = folder / f"api-{run}"
    passes.add("API ingest (STOW-RS files)", api_ingest(ingest.paths, archive))
    shutil.rmtree(archive)
    for associations in (1, 2):
        archive = new_archive(folder / f"cstore-{run}-{associations}")
        with Served(archive) as served:
            seconds = cstore("127.0.0.1", served.dimse_port, served.ae_title, cstore_paths, associations,
                             folder)
        stored = count_stored(archive)
        if stored != len(cstore_paths):
            raise RuntimeError(f"C-STORE stored {stored} of {len(cstore_paths)} instances")
        passes.add(f"C-STORE, {associations} association{'s' if associations > 1 else ''}", seconds)
        shutil.rmtree(archive)
        progress(f"[{GROUP_NAME}]   C-STORE, {associations} association(s): "
                 f"{len(cstore_paths) / seconds:,.0f} inst/s")
    archive = folder / f"api-cstore-{run}"
    passes.add("API ingest (C-STORE files)", api_ingest(cstore_paths, archive))
    shutil.rmtree(archive)


def _read_passes(archive: Path, study: RetrievalStudy, run: int, passes: Passes, quick: bool,
                 seed: int) -> None:
    repeats = QUICK_REPEATS if quick else FULL_REPEATS
    instances = QUICK_INSTANCE_REQUESTS if quick else FULL_INSTANCE_REQUESTS
    queries = QUICK_QUERY_REQUESTS if quick else FULL_QUERY_REQUESTS
    for embedded in (False, True):
        with Served(archive, embedded=embedded) as served:
            passes.reads.setdefault("web-embedded" if embedded else "web", []).append(web_reads(
                served.url, study, repeats=repeats, instances=instances, queries=queries, seed=seed + run))
            if embedded:  # once a run, while a server holds the archive open for writing, as it would
                with DicomStore.open(archive, readonly=True) as store:
                    passes.reads.setdefault("api", []).append(api_reads(
                        store, study, repeats=repeats, instances=instances, queries=queries, seed=seed + run))


# -- rows --------------------------------------------------------------------------------------------

def reference_note(name: str, value: float) -> tuple[str, dict[str, object]]:
    """The issue's Orthanc figure for a row, and whether the row beats it (and by how much)."""
    base = name.removesuffix(EMBEDDED)
    if base not in ORTHANC_REFERENCE:
        return "", {}
    ref, unit, higher = ORTHANC_REFERENCE[base]
    times = value / ref if higher else ref / max(value, 1e-12)
    met = times >= 1.0
    verdict = f"{times:.1f}x the issue's Orthanc figure ({ref:g} {unit})" + ("" if met else ": MISSED")
    return verdict, {"orthanc_reference": ref, "orthanc_unit": unit, "times_orthanc": times, "met": met}


def _row(name: str, value: float, unit: str, api_value: float, note: str,
         details: dict[str, object]) -> ResultRow:
    verdict, extra = reference_note(name, value)
    notes = [n for n in (note, verdict) if n]
    return ResultRow(group=GROUP_NAME, dataset=CT_SET, name=name, value=value, unit=unit, limit_name=API,
                     limit_value=api_value, note="; ".join(notes), details={**details, **extra})


def _throughput_rows(passes: Passes, ingest: GeneratedSet, cstore_paths: Sequence[Path]) -> list[ResultRow]:
    rows = []
    cstore_bytes = sum(p.stat().st_size for p in cstore_paths)
    stow_api = "API ingest (STOW-RS files)"
    for kind, api_kind, count, size in (
            ("STOW-RS, 1 client", stow_api, ingest.instances, ingest.total_bytes),
            ("STOW-RS, 2 clients", stow_api, ingest.instances, ingest.total_bytes),
            ("STOW-RS, 1 client" + EMBEDDED, stow_api, ingest.instances, ingest.total_bytes),
            ("STOW-RS, 2 clients" + EMBEDDED, stow_api, ingest.instances, ingest.total_bytes),
            ("C-STORE, 1 association", "API ingest (C-STORE files)", len(cstore_paths), cstore_bytes),
            ("C-STORE, 2 associations", "API ingest (C-STORE files)", len(cstore_paths), cstore_bytes)):
        if kind not in passes.seconds:
            continue
        seconds = median(passes.seconds[kind])
        api_seconds = median(passes.seconds[api_kind])
        details: dict[str, object] = {"seconds": passes.seconds[kind], "instances": count, "bytes": size,
                                      "api_seconds": passes.seconds[api_kind]}
        extra = f", batches of {STOW_BATCH}" if kind.startswith("STOW") else ""
        mb_s, api_mb_s = size / seconds / MB, size / api_seconds / MB
        rows.append(_row(kind, count / seconds, "inst/s", count / api_seconds,
                         f"{mb_s:,.0f} MB/s (API {api_mb_s:,.0f}); {count} files, {size / MB:,.0f} MB{extra}",
                         details))
        rows.append(ResultRow(group=GROUP_NAME, dataset=CT_SET, name=f"{kind}, MB/s", value=mb_s,
                              unit="MB/s", limit_name=API, limit_value=api_mb_s))
    return rows


def _ms(values: list[float]) -> float:
    return 1000.0 * median(values)


def _pct_ms(values: list[float], q: float) -> float:
    return 1000.0 * percentile(sorted(values), q / 100.0)


def _read_rows(passes: Passes, study: RetrievalStudy, key: str, suffix: str) -> list[ResultRow]:
    web, api = passes.reads[key], passes.reads["api"]
    rows = []

    def per_run(figures: list[ReadFigures], pick: Callable[[ReadFigures], float]) -> float:
        return median([pick(f) for f in figures])

    def mb_s(f: ReadFigures) -> float:
        return f.study_bytes / median(f.study_seconds) / MB

    size = web[0].study_bytes
    rows.append(_row("WADO-RS study, warm" + suffix, per_run(web, mb_s), "MB/s", per_run(api, mb_s),
                     f"{study.describe()}, one multipart response of {size / MB:,.0f} MB; API: "
                     "DicomStore.retrieve of each instance",
                     {"web": [f.study_seconds for f in web], "api": [f.study_seconds for f in api],
                      "bytes": size}))
    for q, label in ((50.0, "p50"), (99.0, "p99")):
        def instance_ms(f: ReadFigures, q: float = q) -> float:
            return _pct_ms(f.instance_seconds, q)

        rows.append(_row(f"WADO-RS instance {label}{suffix}", per_run(web, instance_ms), "ms",
                         per_run(api, instance_ms),
                         f"{len(web[0].instance_seconds)} requests a run, one keep-alive connection; "
                         "API: DicomStore.retrieve", {}))

    def metadata_ms(f: ReadFigures) -> float:
        return _ms(f.metadata_seconds)

    rows.append(_row(f"WADO-RS series metadata ({web[0].metadata_instances}){suffix}",
                     per_run(web, metadata_ms), "ms", per_run(api, metadata_ms),
                     "median of the run's requests; API: DicomStore.metadata(study, series_uid=...)",
                     {"web": [f.metadata_seconds for f in web], "api": [f.metadata_seconds for f in api]}))
    for attribute, results, what, api_what in (
            ("qido_series_seconds", web[0].qido_series_results, "instances of a series",
             'DicomStore.query("instance", {}, study_uid=, series_uid=)'),
            ("qido_patient_seconds", web[0].qido_patient_results, "studies by PatientID",
             'DicomStore.query("study", {"PatientID": ...})')):
        for q, label in ((50.0, "p50"), (99.0, "p99")):
            def query_ms(f: ReadFigures, a: str = attribute, q: float = q) -> float:
                values: list[float] = getattr(f, a)
                return _pct_ms(values, q)

            count = f" ({results})" if attribute == "qido_series_seconds" else ""
            rows.append(_row(f"QIDO-RS {what}{count} {label}{suffix}", per_run(web, query_ms), "ms",
                             per_run(api, query_ms),
                             f"{results} results, {len(getattr(web[0], attribute))} requests a run; API: "
                             f"{api_what}", {}))
    return rows


def measure_facade(folder: Path, ingest_instances: int, cstore_instances: int, series: Sequence[int],
                   runs: int, seed: int, progress: ProgressReporter, *, quick: bool) -> list[ResultRow]:
    """Generate the files in `folder`, run every pass `runs` times, return the rows; `folder` is emptied."""
    try:
        started = time.perf_counter()
        ingest = write_ct_set(folder / "files-ingest", ingest_instances, seed)
        study = write_retrieval_study(folder / "files-study", series, seed + SEED_OFFSET)
        os.sync()
        progress(f"[{GROUP_NAME}] generated ingest set: {ingest.describe()}; retrieval study: "
                 f"{study.describe()} in {time.perf_counter() - started:.1f} s")
        read_archive = new_archive(folder / "read-archive")
        with DicomStore.open(read_archive) as store:
            if sum(r.ok for r in store.ingest(list(study.paths))) != len(study.paths):
                raise RuntimeError("the retrieval study was not stored whole")
        cstore_paths = ingest.paths[:cstore_instances]
        passes = Passes()
        for run in range(runs):
            progress(f"[{GROUP_NAME}] run {run + 1} of {runs}")
            _ingest_passes(folder, ingest, cstore_paths, run, passes, progress, quick)
            _read_passes(read_archive, study, run, passes, quick, seed)
        return (_throughput_rows(passes, ingest, cstore_paths) + _read_rows(passes, study, "web", "")
                + _read_rows(passes, study, "web-embedded", EMBEDDED))
    finally:
        for child in folder.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()


def run_facade(context: BenchmarkContext) -> list[ResultRow]:
    settings = context.settings
    quick = settings.quick
    return measure_facade(
        context.scratch_folder("facade"), QUICK_INGEST if quick else FULL_INGEST,
        QUICK_CSTORE if quick else FULL_CSTORE, QUICK_SERIES if quick else FULL_SERIES,
        settings.runs, settings.seed, context.progress, quick=quick)


FACADE_GROUP = BenchmarkGroup(
    name=GROUP_NAME,
    description="DICOMweb (STOW-RS, WADO-RS, metadata, QIDO-RS) and DIMSE C-STORE of `mmarchive serve` "
                "beside the same operations through the Python API, on synthetic CT files",
    run=run_facade,
)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks.facade_group cstore-client HOST PORT AE LISTFILE` (the C-STORE child) or
    `... serve ARCHIVE` (the embedded server)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 5 and args[0] == "cstore-client":
        return cstore_client(args[1], int(args[2]), args[3], Path(args[4]))
    if len(args) == 2 and args[0] == "serve":
        return serve_embedded(Path(args[1]))
    print("usage: python -m benchmarks.facade_group cstore-client HOST PORT AE LISTFILE | serve ARCHIVE",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
