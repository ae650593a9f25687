"""Timing mmarchive itself: ingest into an archive, read its totals, state targets.

This module owns the few things every archive benchmark group (`ingest`, `bigobject`,
`reads`) does the same way: building an `ArchiveConfig` for a compression mode, timing
`Archive.put_many` of in-memory objects up to and including the `close()` that commits (so
every object is durable when the clock stops), measuring what a folder holds on disk,
taking medians, and wording a target as met or missed. It knows the library's public API
only (`mmarchive.archive.Archive`, `mmarchive.config`); nothing here changes the library.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, StoreConfig
from mmarchive.records import ArchiveStats

CompressionMode = Literal["none", "auto", "zstd"]


def archive_config(compression: CompressionMode, level: int) -> ArchiveConfig:
    """Default settings (pack size, chunking, commit grouping) but for compression and level."""
    return ArchiveConfig(store=StoreConfig(compression=compression, zstd_level=level))


@dataclass(frozen=True)
class IngestTiming:
    """One timed `put_many` pass: wall seconds from the first item to the end of `close()`."""

    seconds: float
    objects: int
    bytes: int
    already_stored: int
    """How many objects `put_many` reported as already stored (nothing new written)."""

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / max(self.seconds, 1e-12)

    @property
    def objects_per_s(self) -> float:
        return self.objects / max(self.seconds, 1e-12)


def timed_put_many(archive: Archive, objects: Sequence[bytes]) -> IngestTiming:
    """Store `objects` with one `put_many` call, then `close()` the archive, under the clock.

    `put_many` yields an object only once the commit holding it is durable, and every yielded
    object is consumed, so everything is durable when the clock stops; the `close()` (which
    commits and stops the commit thread) is part of the time. The cyclic garbage collector
    is run before the clock starts but left enabled, as an application would have it.
    """
    total = sum(len(o) for o in objects)
    gc.collect()
    started = time.perf_counter()
    reported = 0
    already = 0
    try:
        for info in archive.put_many(objects):
            reported += 1
            already += info.already_stored
    finally:
        archive.close()
    seconds = time.perf_counter() - started
    if reported != len(objects):
        raise RuntimeError(f"put_many reported {reported} objects durable, expected {len(objects)}")
    return IngestTiming(seconds, reported, total, already)


def ingest_untimed(path: Path, objects: Sequence[bytes], config: ArchiveConfig) -> list[str]:
    """Create an archive at `path` holding `objects`; return their ids in input order."""
    archive = Archive.create(path, config)
    try:
        ids = [info.id for info in archive.put_many(objects)]
    finally:
        archive.close()
    if len(ids) != len(objects):
        raise RuntimeError(f"put_many reported {len(ids)} objects, expected {len(objects)}")
    return ids


def archive_stats(path: Path) -> ArchiveStats:
    """The whole archive's totals, read through a read-only handle that is closed again."""
    with Archive.open(path, readonly=True) as archive:
        return archive.stats()


def tree_bytes(folder: Path) -> int:
    """Apparent size (st_size) of every regular file under `folder`."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            total += os.stat(os.path.join(root, name)).st_size
    return total


def median(values: Sequence[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    return float(statistics.median(values))


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (`fraction` in [0, 1])."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def target_note(met: bool, target: str) -> str:
    """`"target <text>: met"` or `"target <text>: MISSED"`, for a row's note."""
    return f"target {target}: {'met' if met else 'MISSED'}"
