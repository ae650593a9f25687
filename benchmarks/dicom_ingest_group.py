"""The `dicom_ingest` group: DICOM Part 10 files into an archive, through the API and the CLI, beside fsync.

This module owns the DICOM ingest figures of issue 3 (section 7). It writes realistic synthetic studies
with `benchmarks.dicomdata` into the scratch folder (2,000 512x512 16-bit CT images, about 1 GB, and
10,000 small 32x32 images of about 3.5 KB; 48 and 200 with `--quick`), flushes them to disk with `sync`
so that write-back does not run under a clock, and leaves them in the page cache: every pass reads warm
files. Each run then times, each pass into a fresh archive: `DicomStore.ingest` of the CT file paths
with `compression="none"` (the clock from the call to the end of `DicomStore.close()`), the same files
again into that archive (all already stored: time and bytes added), the CT files with
`compression="auto"`, `mmarchive ingest DIR --archive A` as a subprocess into a fresh raw archive (wall
time of the process, interpreter start included), and the small files through the API (raw). Right
before each pass the raw limit of the same files is measured once: read every file and write its bytes
sequentially into one file, then fsync it (`benchmarks.limits.sequential_write_fsync` over the files
read lazily). Figures are instances/s and MB/s (10^6 bytes), medians over `--runs`; the ratio is against
the median of every limit measurement of that set in the run, and the *paired* ratio is the median of
each pass over the limit measured just before it (the machine is shared and noisy). Targets of the
issue: CT stored raw at >= 2,000 instances/s and >= 80% of the limit.
"""

from __future__ import annotations

import compileall
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, overload

import mmarchive
from benchmarks.archive_timing import median, target_note, tree_bytes
from benchmarks.dicomdata import GeneratedSet, write_ct_set, write_small_set
from benchmarks.harness import BenchmarkContext, BenchmarkGroup, ProgressReporter
from benchmarks.limits import LimitMeasurement, sequential_write_fsync
from benchmarks.results import ResultRow
from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, StoreConfig
from mmarchive.dicom.store import DicomStore

GROUP_NAME: Final = "dicom_ingest"
FULL_CT: Final = 2_000
QUICK_CT: Final = 48
FULL_SMALL: Final = 10_000
QUICK_SMALL: Final = 200
CT_INSTANCES_PER_S_TARGET: Final = 2_000.0
"""CT instances stored raw per second (2-core machine)."""
LIMIT_RATIO_TARGET: Final = 0.80
"""CT raw ingest over reading the same files and writing them to one file with an fsync."""
MB: Final = 1e6
CT_SET: Final = "DICOM CT"
SMALL_SET: Final = "DICOM small"
LIMIT_LABEL: Final = "read the files, write one file + fsync"

Compression = Literal["none", "auto"]


class FileBytes(Sequence[bytes]):
    """The bytes of each file, read (from the page cache) each time an item is asked for."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = paths

    def __len__(self) -> int:
        return len(self._paths)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> FileBytes: ...

    def __getitem__(self, index: int | slice) -> bytes | FileBytes:
        if isinstance(index, slice):
            return FileBytes(self._paths[index])
        with open(self._paths[index], "rb") as f:
            return f.read()

    def __iter__(self) -> Iterator[bytes]:
        for path in self._paths:
            with open(path, "rb") as f:
                yield f.read()


def fsync_limit(paths: Sequence[Path], folder: Path, runs: int = 1) -> LimitMeasurement:
    """Read every file and write its bytes sequentially into one new file in `folder`, then fsync it."""
    measurement = sequential_write_fsync(FileBytes(paths), folder, runs=runs)
    measurement["label"] = LIMIT_LABEL
    return measurement


@dataclass(frozen=True)
class IngestPass:
    """One timed ingest: how long, how much, what ingest said of each file, what the archive holds."""

    kind: str
    seconds: float
    instances: int
    bytes: int
    statuses: dict[str, int]
    archive_bytes: int
    pack_bytes: int
    limit: LimitMeasurement | None = None
    """The raw limit measured on the same files just before this pass."""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def instances_per_s(self) -> float:
        return self.instances / max(self.seconds, 1e-12)

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / max(self.seconds, 1e-12)

    @property
    def paired_ratio(self) -> float | None:
        return None if self.limit is None else self.bytes_per_s / self.limit["bytes_per_s"]

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "seconds": self.seconds, "instances": self.instances, "bytes": self.bytes,
                "statuses": self.statuses, "archive_bytes": self.archive_bytes,
                "pack_bytes": self.pack_bytes, "paired_limit": self.limit, **self.extra}


def create_archive(path: Path, compression: Compression) -> None:
    """A fresh, empty archive at `path` with default settings but `compression`."""
    Archive.create(path, ArchiveConfig(store=StoreConfig(compression=compression))).close()


def api_ingest(kind: str, set_: GeneratedSet, archive: Path) -> IngestPass:
    """`DicomStore.ingest` of every file of `set_` into the archive at `archive` (which must exist).

    The store is opened outside the clock; the clock runs from the call to the end of `close()`, and
    every result is consumed (each is reported once durable and indexed).
    """
    store = DicomStore.open(archive)
    gc.collect()
    started = time.perf_counter()
    try:
        counts = Counter(str(result.status) for result in store.ingest(set_.paths))
    finally:
        store.close()
    seconds = time.perf_counter() - started
    return IngestPass(kind, seconds, set_.instances, set_.total_bytes, dict(counts), tree_bytes(archive),
                      tree_bytes(archive / "packs"))


def compile_package() -> None:
    """Write the bytecode of the installed `mmarchive` package, as `pip install` does, before any timed
    command: with an editable install under ``PYTHONDONTWRITEBYTECODE=1`` each command would otherwise
    compile every module edited since its last ``.pyc`` (measured 45 ms of a 230 ms start-up)."""
    compileall.compile_dir(Path(mmarchive.__file__).parent, quiet=1)


def cli_command() -> list[str]:
    """How to run the `mmarchive` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("mmarchive")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mmarchive.cli.main import main; raise SystemExit(main())"]


def cli_ingest(kind: str, set_: GeneratedSet, archive: Path, compression: Compression) -> IngestPass:
    """`mmarchive init` (untimed), then `mmarchive ingest DIR --archive A --json` timed as a whole process."""
    command = cli_command()
    subprocess.run([*command, "init", "--archive", str(archive), "--compression", compression],
                   check=True, capture_output=True)
    started = time.perf_counter()
    completed = subprocess.run([*command, "ingest", str(set_.directory), "--archive", str(archive), "--json"],
                               capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"mmarchive ingest exited {completed.returncode}: {completed.stderr[-2000:]}")
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    statuses = {str(k): int(v) for k, v in summary["summary"].items() if v}
    return IngestPass(kind, seconds, int(summary["files"]), set_.total_bytes, statuses, tree_bytes(archive),
                      tree_bytes(archive / "packs"), extra={"cli_reported_seconds": summary["seconds"]})


@dataclass
class _Passes:
    """Every pass of one kind over the runs, and every limit measured on one set."""

    by_kind: dict[str, list[IngestPass]] = field(default_factory=dict)
    limits: dict[str, list[LimitMeasurement]] = field(default_factory=dict)

    def add(self, dataset: str | None, one: IngestPass) -> None:
        """Keep `one`; its limit counts towards `dataset`'s limit unless `dataset` is None."""
        self.by_kind.setdefault(one.kind, []).append(one)
        if dataset is not None and one.limit is not None:
            self.limits.setdefault(dataset, []).append(one.limit)


def _describe_pass(one: IngestPass) -> str:
    beside = "" if one.limit is None else (f"; limit just before {one.limit['bytes_per_s'] / MB:,.0f} MB/s, "
                                          f"paired ratio {one.paired_ratio:.2f}")
    return (f"  {one.kind}: {one.seconds:.2f} s, {one.instances_per_s:,.0f} inst/s, "
            f"{one.bytes_per_s / MB:,.0f} MB/s{beside}; {one.statuses}")


def _one_run(folder: Path, ct: GeneratedSet, small: GeneratedSet, run: int, passes: _Passes,
             progress: ProgressReporter, *, cli: bool) -> None:
    def limit_before(set_: GeneratedSet) -> LimitMeasurement:
        scratch = folder / f"limit-{run}"
        scratch.mkdir()
        try:
            return fsync_limit(set_.paths, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def fresh(label: str, compression: Compression, *, init: bool = True) -> Path:
        path = folder / f"{label}-{run}" / "archive"
        path.parent.mkdir()
        if init:
            create_archive(path, compression)
        return path

    # CT, raw, through the API; then the same files again into the same archive.
    limit = limit_before(ct)
    archive = fresh("ct-raw", "none")
    try:
        first = dataclasses.replace(api_ingest("CT raw, API", ct, archive), limit=limit)
        passes.add(CT_SET, first)
        progress(_describe_pass(first))
        again = api_ingest("CT re-ingest, raw, API", ct, archive)
        again = dataclasses.replace(again, limit=limit, extra={
            "archive_bytes_added": again.archive_bytes - first.archive_bytes,
            "pack_bytes_added": again.pack_bytes - first.pack_bytes})
        passes.add(None, again)  # its limit is the one of the first pass
        progress(_describe_pass(again) + f"; pack bytes added {again.pack_bytes - first.pack_bytes:,}")
    finally:
        shutil.rmtree(archive.parent, ignore_errors=True)
    def one_pass(kind: str, dataset: str, set_: GeneratedSet, compression: Compression, *,
                 through_cli: bool = False) -> IngestPass:
        """The limit, then one ingest of ``set_`` into a fresh archive, recorded and reported."""
        limit = limit_before(set_)
        archive = fresh(kind.replace(" ", "-").replace(",", ""), compression, init=not through_cli)
        try:
            measured = (cli_ingest(kind, set_, archive, compression) if through_cli
                        else api_ingest(kind, set_, archive))
            measured = dataclasses.replace(measured, limit=limit)
            passes.add(dataset, measured)
            return measured
        finally:
            shutil.rmtree(archive.parent, ignore_errors=True)

    compressed = one_pass("CT compressed (auto), API", CT_SET, ct, "auto")
    progress(_describe_pass(compressed) + f"; packs {compressed.pack_bytes / MB:,.0f} MB")
    if cli:
        progress(_describe_pass(one_pass("CT raw, CLI", CT_SET, ct, "none", through_cli=True)))
    progress(_describe_pass(one_pass("small raw, API", SMALL_SET, small, "none")))


def _median_limit(measurements: list[LimitMeasurement]) -> LimitMeasurement:
    """The measurement of median throughput (the lower middle one for an even count)."""
    ordered = sorted(measurements, key=lambda m: m["bytes_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def _rows_for(kind: str, dataset: str, runs: list[IngestPass], limit: LimitMeasurement,
              targets: bool) -> list[ResultRow]:
    inst_s = median([p.instances_per_s for p in runs])
    mb_s = median([p.bytes_per_s / MB for p in runs])
    ratio = mb_s / (limit["bytes_per_s"] / MB)
    paired = median([r for p in runs if (r := p.paired_ratio) is not None])
    statuses = runs[0].statuses
    details: dict[str, object] = {
        "passes": [p.to_json() for p in runs], "limit": limit, "paired_ratio": paired,
        "instances": runs[0].instances, "bytes": runs[0].bytes, "statuses": statuses,
    }
    notes = [f"{mb_s:,.0f} MB/s", f"paired ratio {paired:.2f}",
             f"{runs[0].instances:,} files, {runs[0].bytes / MB:,.0f} MB",
             ", ".join(f"{n} {s}" for s, n in statuses.items())]
    if "pack_bytes_added" in runs[0].extra:
        added = [int(str(p.extra["pack_bytes_added"])) for p in runs]
        whole = [int(str(p.extra["archive_bytes_added"])) for p in runs]
        notes.append(f"pack bytes added {max(added):,}, archive bytes added {max(whole):,}")
        details = {**details, "pack_bytes_added": added, "archive_bytes_added": whole}
    if "cli_reported_seconds" in runs[0].extra:
        notes.append("process wall time; the command's own summary: "
                     f"{median([float(str(p.extra['cli_reported_seconds'])) for p in runs]):.2f} s")
    if kind.startswith("CT compressed"):
        notes.append(f"packs {runs[0].pack_bytes / MB:,.0f} MB "
                     f"({runs[0].bytes / max(runs[0].pack_bytes, 1):.2f}x)")
    if targets:
        rate_met = inst_s >= CT_INSTANCES_PER_S_TARGET
        ratio_met = ratio >= LIMIT_RATIO_TARGET
        paired_met = paired >= LIMIT_RATIO_TARGET
        notes.append(target_note(rate_met, f">= {CT_INSTANCES_PER_S_TARGET:,.0f} inst/s"))
        notes.append(target_note(ratio_met, f"ratio >= {LIMIT_RATIO_TARGET:.2f}")
                     + f" (paired: {'met' if paired_met else 'MISSED'})")
        details = {**details, "target_inst_per_s": CT_INSTANCES_PER_S_TARGET, "met_inst_per_s": rate_met,
                   "target_ratio": LIMIT_RATIO_TARGET, "met": rate_met and ratio_met,
                   "met_ratio": ratio_met, "paired_met": paired_met}
    note = "; ".join(notes)
    return [
        ResultRow(group=GROUP_NAME, dataset=dataset, name=kind, value=inst_s, unit="inst/s",
                  limit_name=LIMIT_LABEL, limit_value=limit["items_per_s"], note=note, details=details),
        ResultRow(group=GROUP_NAME, dataset=dataset, name=f"{kind}, MB/s", value=mb_s, unit="MB/s",
                  limit_name=LIMIT_LABEL, limit_value=limit["bytes_per_s"] / MB,
                  note=f"paired ratio {paired:.2f}", details={"paired_ratio": paired}),
    ]


def measure_dicom_ingest(folder: Path, ct_instances: int, small_instances: int, runs: int, seed: int,
                         progress: ProgressReporter, *, cli: bool = True) -> list[ResultRow]:
    """Generate both sets in `folder`, run every pass `runs` times, return the rows; `folder` is emptied."""
    try:
        started = time.perf_counter()
        ct = write_ct_set(folder / "files-ct", ct_instances, seed)
        small = write_small_set(folder / "files-small", small_instances, seed)
        os.sync()  # write-back of the generated files must not run under a clock
        progress(f"[{GROUP_NAME}] generated CT: {ct.describe()}; small: {small.describe()} "
                 f"in {time.perf_counter() - started:.1f} s (files stay in the page cache)")
        if cli:
            compile_package()
        passes = _Passes()
        for run in range(runs):
            progress(f"[{GROUP_NAME}] run {run + 1} of {runs}")
            _one_run(folder, ct, small, run, passes, progress, cli=cli)
        ct_limit = _median_limit(passes.limits[CT_SET])
        small_limit = _median_limit(passes.limits[SMALL_SET])
        rows = [
            ResultRow(group=GROUP_NAME, dataset=dataset, name=LIMIT_LABEL, value=limit["bytes_per_s"] / MB,
                      unit="MB/s", note=f"{limit['items_per_s']:,.0f} files/s; median of "
                      f"{len(passes.limits[dataset])} measurements, one before each pass",
                      details={"limit": limit, "all": passes.limits[dataset]})
            for dataset, limit in ((CT_SET, ct_limit), (SMALL_SET, small_limit))
        ]
        for kind, done in passes.by_kind.items():
            small_kind = kind.startswith("small")
            rows.extend(_rows_for(kind, SMALL_SET if small_kind else CT_SET, done,
                                  small_limit if small_kind else ct_limit,
                                  targets=kind in ("CT raw, API", "CT raw, CLI")))
        return rows
    finally:
        for child in folder.iterdir():
            shutil.rmtree(child, ignore_errors=True)


def run_dicom_ingest(context: BenchmarkContext) -> list[ResultRow]:
    settings = context.settings
    return measure_dicom_ingest(
        context.scratch_folder("dicom-ingest"),
        QUICK_CT if settings.quick else FULL_CT,
        QUICK_SMALL if settings.quick else FULL_SMALL,
        settings.runs, settings.seed, context.progress)


DICOM_INGEST_GROUP = BenchmarkGroup(
    name=GROUP_NAME,
    description="DICOM ingest of synthetic CT studies (2,000 x 512x512 16-bit) and small instances: "
                "DicomStore.ingest raw and compressed, re-ingest, `mmarchive ingest`, against fsync",
    run=run_dicom_ingest,
)
