"""The `bigobject` benchmark group: one multi-GiB object streamed into `Archive.put`.

This module owns the large-object figures: a single object (2 GiB in a full run, 128 MiB
with `--quick`) is produced by a generator of CT-like 16-bit slices and handed to
`Archive.put` as an iterator, so neither the caller nor the archive may hold it whole. It is
stored raw and compressed (`compression="auto"`), each in a fresh child process per run,
which reports its wall time (put, which returns once the object is durable, plus `close()`)
and its peak resident set size, so that the parent's in-memory data sets do not count. On
Linux the peak is `VmHWM` of `/proc/self/status`: `getrusage(RUSAGE_SELF).ru_maxrss` cannot
be used there, because the kernel carries the parent's high-water mark over the fork and
exec that start the child (a 10 MiB child of a 600 MiB parent reports 600 MiB); it is kept
in the JSON details as `ru_maxrss_bytes`. Elsewhere `ru_maxrss` is the peak. The child's
baseline (interpreter, numpy, mmarchive and the slices the generator starts from) is
reported beside the peak.

The generator starts from `BASE_SLICES` slices of `ctdata.ct_slices` and yields slice `i`
as base slice `i % BASE_SLICES` plus `i // BASE_SLICES` on every pixel: every byte of every
cycle differs from the earlier cycles (no chunk deduplicates) while the bytes compress like
CT, and it costs far less per slice than generating new phantoms. Its own rate (the stream
consumed without the archive) is measured in the child and reported in the note.

Run `python -m benchmarks.bigobject_group --help` for the child's command line.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, cast

import numpy as np

from benchmarks import ctdata
from benchmarks.archive_timing import (
    CompressionMode,
    archive_config,
    archive_stats,
    median,
)
from benchmarks.harness import CT_DATASET, BenchmarkContext, BenchmarkGroup
from benchmarks.results import MIB, ResultRow
from mmarchive.archive import Archive

GROUP_NAME = "bigobject"
FULL_OBJECT_BYTES: Final = 2 * 1024 * 1024 * 1024
QUICK_OBJECT_BYTES: Final = 128 * 1024 * 1024
BASE_SLICES: Final = 64
MODES: Final[tuple[CompressionMode, ...]] = ("none", "auto")
_REPO_ROOT: Final = Path(__file__).resolve().parent.parent
_CHILD_TIMEOUT_S: Final = 1800.0


# --- the child process ---------------------------------------------------------------------


def _base_slices(seed: int) -> list[np.ndarray[tuple[int], np.dtype[np.uint16]]]:
    return [
        np.frombuffer(s, dtype="<u2").copy() for s in ctdata.ct_slices(BASE_SLICES, seed)
    ]


def ct_stream(
    total_bytes: int, bases: Sequence[np.ndarray[tuple[int], np.dtype[np.uint16]]]
) -> Iterator[bytes]:
    """`total_bytes` of CT-like slices (the last one cut short), each a new bytes object."""
    produced = 0
    buffer = np.empty_like(bases[0])
    index = 0
    while produced < total_bytes:
        base = bases[index % len(bases)]
        np.add(base, np.uint16(index // len(bases)), out=buffer)
        piece = buffer.tobytes()
        if produced + len(piece) > total_bytes:
            piece = piece[: total_bytes - produced]
        produced += len(piece)
        index += 1
        yield piece


def _ru_maxrss_bytes() -> int:
    """`ru_maxrss` in bytes (Linux reports KiB, macOS bytes); see the module note on Linux."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process image so far: `VmHWM` where there is one."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _ru_maxrss_bytes()


def child_main(argv: Sequence[str] | None = None) -> int:
    """Store one streamed object in a new archive and print what happened as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bigobject_group",
        description="Stream one large CT-like object into a new archive (a bigobject run).",
    )
    parser.add_argument("archive", type=Path, help="new archive folder (must not exist)")
    parser.add_argument("--bytes", type=int, required=True, help="object size")
    parser.add_argument("--compression", choices=MODES, required=True)
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generator-pass", action="store_true",
                        help="first time the generator alone over the same bytes")
    args = parser.parse_args(argv)
    mode = cast(CompressionMode, args.compression)
    bases = _base_slices(args.seed)

    generator_seconds = None
    if args.generator_pass:
        started = time.perf_counter()
        consumed = sum(len(p) for p in ct_stream(args.bytes, bases))
        generator_seconds = time.perf_counter() - started
        assert consumed == args.bytes
    baseline_rss = _peak_rss_bytes()

    archive = Archive.create(args.archive, archive_config(mode, args.level))
    started = time.perf_counter()
    try:
        info = archive.put(ct_stream(args.bytes, bases))
    finally:
        archive.close()
    seconds = time.perf_counter() - started
    peak_rss = _peak_rss_bytes()
    stats = archive_stats(args.archive)
    if info.size != args.bytes:
        raise RuntimeError(f"stored {info.size} bytes, expected {args.bytes}")
    json.dump(
        {
            "seconds": seconds,
            "bytes": args.bytes,
            "chunks": info.chunk_count,
            "peak_rss_bytes": peak_rss,
            "ru_maxrss_bytes": _ru_maxrss_bytes(),
            "baseline_rss_bytes": baseline_rss,
            "generator_seconds": generator_seconds,
            "stats": stats.to_json(),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


# --- the group -----------------------------------------------------------------------------


def _run_child(
    context: BenchmarkContext, mode: CompressionMode, size: int, run: int
) -> dict[str, object]:
    folder = context.scratch_folder(f"bigobject-{mode}-{run}")
    command = [
        sys.executable, "-m", "benchmarks.bigobject_group", str(folder / "archive"),
        "--bytes", str(size), "--compression", mode,
        "--level", str(context.settings.zstd_level), "--seed", str(context.settings.seed),
    ]
    if run == 0:
        command.append("--generator-pass")
    try:
        completed = subprocess.run(
            command, cwd=_REPO_ROOT, capture_output=True, text=True,
            timeout=_CHILD_TIMEOUT_S, check=False,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if completed.returncode != 0:
        raise RuntimeError(f"bigobject child failed ({completed.returncode}):\n{completed.stderr}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if not isinstance(result, dict):
        raise RuntimeError(f"bigobject child printed {completed.stdout!r}")
    return result


def _number(result: dict[str, object], key: str) -> float:
    value = result[key]
    if not isinstance(value, int | float):
        raise TypeError(f"{key} is {value!r}, not a number")
    return float(value)


def run_bigobject(context: BenchmarkContext) -> list[ResultRow]:
    """Stream one object raw and compressed, `settings.runs` child processes each."""
    size = QUICK_OBJECT_BYTES if context.settings.quick else FULL_OBJECT_BYTES
    level = context.settings.zstd_level
    cores = max(context.settings.thread_counts)
    limits = {
        "none": context.limit(CT_DATASET, "write_sequential_fsync"),
        "auto": context.limit(CT_DATASET, f"zstd{level}_shuffled_t{cores}"),
    }
    rows: list[ResultRow] = []
    for mode in MODES:
        context.progress(
            f"[bigobject] one {size / MIB:,.0f} MiB object, compression={mode}, "
            f"{context.settings.runs} run(s)"
        )
        results = []
        for run in range(context.settings.runs):
            result = _run_child(context, mode, size, run)
            seconds = _number(result, "seconds")
            context.progress(
                f"  run {run + 1}: {seconds:.2f} s ({size / seconds / MIB:,.1f} MiB/s), "
                f"peak RSS {_number(result, 'peak_rss_bytes') / MIB:,.0f} MiB"
            )
            results.append(result)
        limit = limits[mode]
        mib_s = median([size / _number(r, "seconds") / MIB for r in results])
        peak = max(_number(r, "peak_rss_bytes") for r in results)
        baseline = max(_number(r, "baseline_rss_bytes") for r in results)
        generator = _number(results[0], "generator_seconds")
        stats = results[0]["stats"]
        chunks = int(_number(results[0], "chunks"))
        label = "raw (compression=none)" if mode == "none" else "compressed (compression=auto)"
        ratio_note = ""
        if mode != "none" and isinstance(stats, dict):
            ratio_note = f", ratio {stats.get('compression_ratio')}x"
        details: dict[str, object] = {
            "object_bytes": size, "runs": results, "limit": limit,
        }
        rows.append(ResultRow(
            group=GROUP_NAME, dataset=CT_DATASET,
            name=f"put(iterator) of one {size / MIB:,.0f} MiB object, {label}",
            value=mib_s, unit="MiB/s",
            limit_name=limit["label"], limit_value=limit["bytes_per_s"] / MIB,
            note=f"{chunks:,} chunks{ratio_note}; generator alone "
            f"{size / max(generator, 1e-12) / MIB:,.0f} MiB/s",
            details=details,
        ))
        rows.append(ResultRow(
            group=GROUP_NAME, dataset=CT_DATASET,
            name=f"peak RSS, one {size / MIB:,.0f} MiB object, {label}",
            value=peak / MIB, unit="MiB",
            note=f"child VmHWM; {baseline / MIB:,.0f} MiB before put (interpreter, numpy, "
            f"{BASE_SLICES} base slices); +{(peak - baseline) / MIB:,.0f} MiB during put",
            details=details,
        ))
    return rows


BIGOBJECT_GROUP = BenchmarkGroup(
    name=GROUP_NAME,
    description="one 2 GiB object streamed to put() from a generator: MiB/s and peak RSS",
    run=run_bigobject,
)


if __name__ == "__main__":
    sys.exit(child_main())
