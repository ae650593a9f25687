"""What a benchmark group gets to work with: settings, data sets, scratch space and limits.

This module owns the contract between the command line and the benchmark groups. A group is
a `BenchmarkGroup`: a name, a one-line description and a function taking a
`BenchmarkContext` and returning a list of `ResultRow`. The context carries the immutable
`BenchmarkSettings` of the run, hands out the data sets pre-generated into memory (generated
once per run, shared by every group), gives scratch folders on the filesystem under test,
and measures raw limits on demand (each (data set, limit) pair at most once per run), so
that any group can compare its figures to the limits of the same bytes. The catalog of
groups lives in `benchmarks.catalog`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from benchmarks import ctdata
from benchmarks.limits import (
    DEFAULT_MIN_SECONDS,
    LimitMeasurement,
    default_thread_counts,
    limit_plan,
)
from benchmarks.results import MIB, ResultRow

CT_DATASET: Final = "ct"
"""512x512 16-bit CT-like slices from `ctdata.ct_slices` (0.5 MiB each)."""
SMALL_DATASET: Final = "small"
"""Text-like records from `ctdata.small_objects` (4 KiB each by default)."""
DATASET_NAMES: Final = (CT_DATASET, SMALL_DATASET)


@dataclass(frozen=True)
class BenchmarkSettings:
    """Everything the command line decided; groups read it, nobody changes it."""

    runs: int
    quick: bool
    scratch_parent: Path
    zstd_level: int
    ct_slice_count: int
    small_object_count: int
    small_object_size: int
    per_file_max: int | None
    thread_counts: tuple[int, ...]
    min_seconds: float
    """CPU-only limits (hashes, shuffle, decompression) repeat passes for at least this long."""
    seed: int = 0

    @classmethod
    def full(cls, scratch_parent: Path) -> BenchmarkSettings:
        """Defaults of a real run: 256 MiB of CT, 128 MiB of 4 KiB records, 3 runs each."""
        return cls(
            runs=3,
            quick=False,
            scratch_parent=scratch_parent,
            zstd_level=3,
            ct_slice_count=512,
            small_object_count=32768,
            small_object_size=4096,
            per_file_max=4096,
            thread_counts=default_thread_counts(),
            min_seconds=DEFAULT_MIN_SECONDS,
        )

    @classmethod
    def quick_smoke(cls, scratch_parent: Path) -> BenchmarkSettings:
        """Defaults of a smoke run: a few MiB, one run each."""
        return cls(
            runs=1,
            quick=True,
            scratch_parent=scratch_parent,
            zstd_level=3,
            ct_slice_count=64,
            small_object_count=4096,
            small_object_size=4096,
            per_file_max=256,
            thread_counts=default_thread_counts(),
            min_seconds=0.05,
        )

    def to_json(self) -> dict[str, object]:
        fields = asdict(self)
        fields["scratch_parent"] = str(self.scratch_parent)
        return fields


@dataclass(frozen=True)
class Dataset:
    """A data set held in memory: the exact objects every measurement of it uses."""

    name: str
    description: str
    objects: tuple[bytes, ...]

    @property
    def total_bytes(self) -> int:
        return sum(len(o) for o in self.objects)

    def to_json(self) -> dict[str, object]:
        return {
            "description": self.description,
            "objects": len(self.objects),
            "bytes": self.total_bytes,
        }


def generate_dataset(name: str, settings: BenchmarkSettings) -> Dataset:
    """Generate one of `DATASET_NAMES` into memory, as the settings size it."""
    if name == CT_DATASET:
        count = settings.ct_slice_count
        return Dataset(
            name,
            f"{count} CT-like 512x512 uint16 slices ({count * ctdata.CT_SLICE_BYTES / MIB:.0f}"
            " MiB)",
            tuple(ctdata.ct_slices(count, settings.seed)),
        )
    if name == SMALL_DATASET:
        count, size = settings.small_object_count, settings.small_object_size
        return Dataset(
            name,
            f"{count} text-like records of {size} bytes ({count * size / MIB:.0f} MiB)",
            tuple(ctdata.small_objects(count, size, settings.seed)),
        )
    raise KeyError(f"unknown data set {name!r}; known: {', '.join(DATASET_NAMES)}")


ProgressReporter = Callable[[str], None]


def report_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class BenchmarkContext:
    """One run's shared state: its settings, data sets, scratch folder and measured limits.

    Create it with `open_context` (which also removes the scratch folder afterwards).
    """

    def __init__(
        self, settings: BenchmarkSettings, scratch: Path, progress: ProgressReporter
    ) -> None:
        self.settings: Final = settings
        self.scratch: Final = scratch
        self._progress = progress
        self._datasets: dict[str, Dataset] = {}
        self._limits: dict[tuple[str, str], LimitMeasurement] = {}
        self._plan = limit_plan(
            runs=settings.runs,
            level=settings.zstd_level,
            thread_counts=settings.thread_counts,
            per_file_max=settings.per_file_max,
            min_seconds=settings.min_seconds,
        )
        self._scratch_folders = 0

    def progress(self, message: str) -> None:
        """Tell the person running the benchmarks what is happening (stderr by default)."""
        self._progress(message)

    def dataset(self, name: str) -> Dataset:
        """The data set `name` (see `DATASET_NAMES`), generated on first use."""
        if name not in self._datasets:
            started = time.perf_counter()
            self._datasets[name] = generate_dataset(name, self.settings)
            self.progress(
                f"generated {name}: {self._datasets[name].description}"
                f" in {time.perf_counter() - started:.1f} s"
            )
        return self._datasets[name]

    @property
    def generated_datasets(self) -> dict[str, Dataset]:
        return dict(self._datasets)

    def limit_keys(self) -> tuple[str, ...]:
        """Keys accepted by `limit`, in report order (see `benchmarks.limits.limit_plan`)."""
        return tuple(self._plan)

    def limit(self, dataset: str, key: str) -> LimitMeasurement:
        """Limit `key` measured on data set `dataset`; measured on first request only."""
        if (dataset, key) not in self._limits:
            if key not in self._plan:
                raise KeyError(f"unknown limit {key!r}; known: {', '.join(self._plan)}")
            objects = self.dataset(dataset).objects
            folder = self.scratch_folder(f"limit-{dataset}-{key}")
            try:
                measurement = self._plan[key](objects, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            self._limits[(dataset, key)] = measurement
            self.progress(
                f"  {dataset}: {measurement['label']}: "
                f"{measurement['bytes_per_s'] / MIB:,.1f} MiB/s"
                f" (median of {measurement['runs']}: {measurement['seconds']:.2f} s)"
            )
        return self._limits[(dataset, key)]

    @property
    def measured_limits(self) -> dict[str, dict[str, LimitMeasurement]]:
        """Every limit measured so far, by data set then key."""
        out: dict[str, dict[str, LimitMeasurement]] = {}
        for (dataset, key), measurement in self._limits.items():
            out.setdefault(dataset, {})[key] = measurement
        return out

    def scratch_folder(self, label: str) -> Path:
        """A new empty folder under this run's scratch folder (removed at the end of the run)."""
        self._scratch_folders += 1
        folder = self.scratch / f"{self._scratch_folders:03d}-{label}"
        folder.mkdir()
        return folder


class ScratchSpace:
    """A temporary folder under `parent`, removed on exit: `with ScratchSpace(p) as path:`."""

    def __init__(self, parent: Path) -> None:
        self._parent = parent
        self._path: Path | None = None

    def __enter__(self) -> Path:
        self._parent.mkdir(parents=True, exist_ok=True)
        self._path = Path(tempfile.mkdtemp(prefix=".mmarchive-bench-", dir=self._parent))
        return self._path

    def __exit__(self, *exc_info: object) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)


@dataclass(frozen=True)
class BenchmarkGroup:
    """A named set of benchmarks: `run(context)` returns its result rows."""

    name: str
    description: str
    run: Callable[[BenchmarkContext], list[ResultRow]]


def filesystem_of(path: Path) -> dict[str, str]:
    """Mount point, device and type of the filesystem holding `path` (Linux), else empty."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    resolved = str(path.resolve())
    best: dict[str, str] = {}
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount_point, fs_type = fields[0], fields[1], fields[2]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best.get("mount_point", "")):
            best = {"device": device, "mount_point": mount_point, "type": fs_type}
    return best


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages where the platform has them."""
    try:
        return os.getloadavg()
    except OSError:
        return None
