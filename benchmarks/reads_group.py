"""The `reads` benchmark group: reading objects back with `Archive.get`, beside raw limits.

This module owns the read figures:

* the whole CT set read back with `get` (every object, in storage order, one thread) from a
  raw and from a compressed (`compression="auto"`) archive, in MiB/s, against the work a
  verified read cannot avoid on one thread, measured on the same objects: xxh3 of the record
  and BLAKE3 of the object (raw), plus zstd decompression and unshuffle (compressed). The
  combined limit is `1 / sum(1 / rate)` of those single-thread limits; xxh3 is counted over
  the plaintext size, which overstates its (small) share for compressed records;
* the latency of one 4 KiB `get` in-process: p50 and p99 over a few thousand gets of
  objects picked at random (fixed seed) from an archive of the whole record set, raw and
  compressed, against the same per-object verification work (target p50 < 200 us).

The archives are built untimed with `put_many`, closed, and opened read-only for reading.
The reads are served from the page cache (the data was just written); nothing drops it.
"""

from __future__ import annotations

import gc
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from benchmarks.archive_timing import (
    CompressionMode,
    archive_config,
    archive_stats,
    ingest_untimed,
    median,
    percentile,
    target_note,
)
from benchmarks.harness import CT_DATASET, SMALL_DATASET, BenchmarkContext, BenchmarkGroup
from benchmarks.limits import LimitMeasurement
from benchmarks.results import MIB, ResultRow
from mmarchive.archive import Archive

GROUP_NAME = "reads"
MODES: Final[tuple[CompressionMode, ...]] = ("none", "auto")
LATENCY_P50_TARGET_US: Final = 200.0
FULL_LATENCY_GETS: Final = 5000
QUICK_LATENCY_GETS: Final = 1000
WARMUP_GETS: Final = 200
"""Random gets made (untimed) before each latency run."""

_LABEL: Final[dict[CompressionMode, str]] = {
    "none": "raw archive",
    "auto": "compressed archive (auto)",
    "zstd": "compressed archive (zstd)",
}


def _serial_limit(
    parts: Sequence[LimitMeasurement],
) -> tuple[float, float, dict[str, object]]:
    """(bytes/s, objects/s, details) of doing every part's work one after another."""
    bytes_per_s = 1.0 / sum(1.0 / p["bytes_per_s"] for p in parts)
    items_per_s = 1.0 / sum(1.0 / p["items_per_s"] for p in parts)
    return bytes_per_s, items_per_s, {p["key"]: p for p in parts}


def _verify_parts(context: BenchmarkContext, dataset: str, mode: CompressionMode,
                  ) -> tuple[str, list[LimitMeasurement]]:
    level = context.settings.zstd_level
    parts = [context.limit(dataset, "hash_xxh3_64"), context.limit(dataset, "hash_blake3")]
    if mode == "none":
        return "xxh3 + BLAKE3, 1 thread", parts
    # auto picks the shuffle for 16-bit slices; records under 128 KiB get plain zstd.
    kind = "shuffled" if dataset == CT_DATASET else "plain"
    decompress = context.limit(dataset, f"zstd{level}_{kind}_decompress_t1")
    return f"{decompress['label'].removesuffix(', 1 thread')} + xxh3 + BLAKE3, 1 thread", [
        decompress, *parts
    ]


def _read_all(path: Path, ids: Sequence[str], sizes: Sequence[int]) -> float:
    """Seconds to `get` every object once, in order, through a read-only handle."""
    with Archive.open(path, readonly=True) as archive:
        gc.collect()
        started = time.perf_counter()
        for object_id, size in zip(ids, sizes, strict=True):
            if len(archive.get(object_id)) != size:
                raise RuntimeError(f"object {object_id} came back with the wrong size")
        return time.perf_counter() - started


def _latencies_us(path: Path, ids: Sequence[str], gets: int, seed: int) -> list[float]:
    """Sorted latencies of `gets` gets of objects picked at random (after a warm-up)."""
    chooser = random.Random(seed)
    picks = [chooser.choice(ids) for _ in range(WARMUP_GETS + gets)]
    out: list[float] = []
    with Archive.open(path, readonly=True) as archive:
        for object_id in picks[:WARMUP_GETS]:
            archive.get(object_id)
        gc.collect()
        clock = time.perf_counter_ns
        for object_id in picks[WARMUP_GETS:]:
            started = clock()
            archive.get(object_id)
            out.append((clock() - started) / 1000.0)
    out.sort()
    return out


def _ct_rows(context: BenchmarkContext) -> list[ResultRow]:
    objects = context.dataset(CT_DATASET).objects
    sizes = [len(o) for o in objects]
    total = sum(sizes)
    rows: list[ResultRow] = []
    for mode in MODES:
        context.progress(f"[reads] CT set, {_LABEL[mode]}, {context.settings.runs} run(s)")
        folder = context.scratch_folder(f"reads-ct-{mode}")
        path = folder / "archive"
        try:
            ids = ingest_untimed(path, objects, archive_config(mode, context.settings.zstd_level))
            stats = archive_stats(path)
            with Archive.open(path, readonly=True) as archive:
                if archive.get(ids[-1]) != objects[-1]:
                    raise RuntimeError("the last CT slice does not read back equal")
            seconds = []
            for run in range(context.settings.runs):
                seconds.append(_read_all(path, ids, sizes))
                context.progress(
                    f"  run {run + 1}: {seconds[-1]:.2f} s "
                    f"({total / seconds[-1] / MIB:,.1f} MiB/s)"
                )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        label, parts = _verify_parts(context, CT_DATASET, mode)
        limit_bytes_s, _items, limit_details = _serial_limit(parts)
        mib_s = median([total / s / MIB for s in seconds])
        obj_s = median([len(objects) / s for s in seconds])
        singles = ", ".join(
            f"{p['label'].removesuffix(', 1 thread')} {p['bytes_per_s'] / MIB:,.0f}"
            for p in parts
        )
        rows.append(ResultRow(
            group=GROUP_NAME, dataset=CT_DATASET,
            name=f"get every object, {_LABEL[mode]}", value=mib_s, unit="MiB/s",
            limit_name=label, limit_value=limit_bytes_s / MIB,
            note=f"{obj_s:,.0f} obj/s; limits alone (MiB/s): "
            f"{singles}",
            details={"run_seconds": seconds, "bytes": total, "objects": len(objects),
                     "stats": stats.to_json(), "limits": limit_details},
        ))
    return rows


def _small_rows(context: BenchmarkContext) -> list[ResultRow]:
    objects = context.dataset(SMALL_DATASET).objects
    gets = QUICK_LATENCY_GETS if context.settings.quick else FULL_LATENCY_GETS
    rows: list[ResultRow] = []
    for mode in MODES:
        context.progress(
            f"[reads] {gets} random gets of {len(objects):,} records, {_LABEL[mode]}, "
            f"{context.settings.runs} run(s)"
        )
        folder = context.scratch_folder(f"reads-small-{mode}")
        path = folder / "archive"
        p50s: list[float] = []
        p99s: list[float] = []
        means: list[float] = []
        try:
            ids = ingest_untimed(path, objects, archive_config(mode, context.settings.zstd_level))
            for run in range(context.settings.runs):
                latencies = _latencies_us(path, ids, gets, context.settings.seed + run)
                p50s.append(percentile(latencies, 0.50))
                p99s.append(percentile(latencies, 0.99))
                means.append(sum(latencies) / len(latencies))
                context.progress(
                    f"  run {run + 1}: p50 {p50s[-1]:,.1f} us, p99 {p99s[-1]:,.1f} us, "
                    f"mean {means[-1]:,.1f} us"
                )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        label, parts = _verify_parts(context, SMALL_DATASET, mode)
        _bytes, limit_items_s, limit_details = _serial_limit(parts)
        limit_us = 1e6 / limit_items_s
        p50, p99 = median(p50s), median(p99s)
        met = p50 < LATENCY_P50_TARGET_US
        details: dict[str, object] = {
            "gets_per_run": gets, "objects": len(objects), "p50_us": p50s, "p99_us": p99s,
            "mean_us": means, "limits": limit_details,
        }
        per_object = f"{label}, per {context.settings.small_object_size} B object"
        rows.append(ResultRow(
            group=GROUP_NAME, dataset=SMALL_DATASET,
            name=f"get latency p50, {_LABEL[mode]}", value=p50, unit="us",
            limit_name=per_object, limit_value=limit_us,
            note=f"ratio = times the limit; mean {median(means):,.1f} us; "
            + target_note(met, f"p50 < {LATENCY_P50_TARGET_US:.0f} us"),
            details={**details, "target_p50_us": LATENCY_P50_TARGET_US, "met": met},
        ))
        rows.append(ResultRow(
            group=GROUP_NAME, dataset=SMALL_DATASET,
            name=f"get latency p99, {_LABEL[mode]}", value=p99, unit="us",
            limit_name=per_object, limit_value=limit_us,
            note="ratio = times the limit",
            details=details,
        ))
    return rows


def run_reads(context: BenchmarkContext) -> list[ResultRow]:
    """CT read-back throughput and 4 KiB get latency, raw and compressed."""
    return [*_ct_rows(context), *_small_rows(context)]


READS_GROUP = BenchmarkGroup(
    name=GROUP_NAME,
    description="get: CT read-back MiB/s and 4 KiB get latency p50/p99, raw and compressed",
    run=run_reads,
)
