"""The `limits` benchmark group: every raw limit, on every data set, as result rows.

This module owns how the raw limits of `benchmarks.limits` are reported: for the CT set and
the small-record set it measures every limit of the run's plan (through the context, so other
groups of the same run reuse the figures) and turns each into a throughput row in MiB/s with
the objects per second in the note, plus a compression-ratio row per zstd variant. Two rows
are set against another limit so their ratio says something: per-file fsync against one
sequential file, and multi-threaded zstd against the same variant on one thread (the
scaling).
"""

from __future__ import annotations

from benchmarks.harness import DATASET_NAMES, BenchmarkContext, BenchmarkGroup
from benchmarks.limits import LimitMeasurement
from benchmarks.results import MIB, ResultRow

GROUP_NAME = "limits"


def _reference_key(measurement: LimitMeasurement) -> str | None:
    """The limit this one is best read against, if any."""
    key = measurement["key"]
    if key == "write_per_file_fsync":
        return "write_sequential_fsync"
    threads = measurement.get("threads", 1)
    if key.startswith("zstd") and "_decompress" not in key and threads > 1:
        return key.rsplit("_t", 1)[0] + "_t1"
    return None


def _note(measurement: LimitMeasurement) -> str:
    parts = [f"{measurement['items_per_s']:,.0f} obj/s"]
    available = measurement.get("items_available")
    if available is not None and available != measurement["items"]:
        parts.append(f"first {measurement['items']:,} of {available:,} objects")
    ratio = measurement.get("compression_ratio")
    if ratio is not None:
        parts.append(f"ratio {ratio:.3f}x")
    return ", ".join(parts)


def limit_rows(context: BenchmarkContext, dataset: str) -> list[ResultRow]:
    """Rows for every limit of the plan measured on `dataset`."""
    rows: list[ResultRow] = []
    for key in context.limit_keys():
        measurement = context.limit(dataset, key)
        reference_key = _reference_key(measurement)
        reference = None if reference_key is None else context.limit(dataset, reference_key)
        rows.append(
            ResultRow(
                group=GROUP_NAME,
                dataset=dataset,
                name=measurement["label"],
                value=measurement["bytes_per_s"] / MIB,
                unit="MiB/s",
                limit_name=None if reference is None else reference["label"],
                limit_value=None if reference is None else reference["bytes_per_s"] / MIB,
                note=_note(measurement),
                details={"limit": measurement},
            )
        )
        ratio = measurement.get("compression_ratio")
        if ratio is not None and measurement.get("threads") == 1:
            shuffled = "_shuffled_" in key
            rows.append(
                ResultRow(
                    group=GROUP_NAME,
                    dataset=dataset,
                    name=f"zstd-{measurement.get('level')} compression ratio, "
                    + ("shuffled" if shuffled else "plain"),
                    value=ratio,
                    unit="x",
                    note=f"{measurement['bytes']:,} -> {measurement.get('compressed_bytes'):,} B",
                    details={"limit_key": key},
                )
            )
    return rows


def run_limits(context: BenchmarkContext) -> list[ResultRow]:
    """Measure every limit on the CT set and on the small-record set."""
    rows: list[ResultRow] = []
    for dataset in DATASET_NAMES:
        context.progress(f"[limits] {context.dataset(dataset).description}")
        rows.extend(limit_rows(context, dataset))
    return rows


LIMITS_GROUP = BenchmarkGroup(
    name=GROUP_NAME,
    description="raw limits on the same bytes: fsync writes, hashes, byte shuffle, zstd",
    run=run_limits,
)
