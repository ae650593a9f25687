"""The `python -m benchmarks` command line: pick groups, run them, print and save the rows.

This module owns the options (`--quick`, `--runs`, `--dir`, `--json` and the size and
zstd knobs), turns them into one immutable `BenchmarkSettings`, runs the selected groups of
`benchmarks.catalog` against one `BenchmarkContext` inside a scratch folder that is removed
afterwards, prints the rows as a table and writes the JSON report, by default to
`benchmarks/results/<groups>-<UTC timestamp>.json` (a git-ignored folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import blake3
import numpy as np
import xxhash
import zstandard

from benchmarks.catalog import ALL_GROUPS, GROUPS, group_names, select_groups
from benchmarks.harness import (
    BenchmarkContext,
    BenchmarkSettings,
    ScratchSpace,
    filesystem_of,
    load_average,
    report_to_stderr,
)
from benchmarks.results import ResultRow, render_rows, write_report

RESULTS_FOLDER = Path(__file__).resolve().parent / "results"
BUSY_LOAD = 0.7
"""A 1-minute load average above this at start means other work competes for the cores."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _thread_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2; got {text}") from error
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive thread counts, got {text}")
    return counts


def build_parser() -> argparse.ArgumentParser:
    groups = "\n".join(f"  {g.name:10} {g.description}" for g in GROUPS)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run mmarchive benchmark groups, print a table and write a JSON report.",
        epilog=f"groups:\n{groups}\n  {ALL_GROUPS:10} every group above, in this order",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("groups", nargs="+", metavar="GROUP",
                        choices=(*group_names(), ALL_GROUPS), help="group(s) to run")
    parser.add_argument("--quick", action="store_true",
                        help="small data sets and one run each (smoke test, well under 30 s)")
    parser.add_argument("--runs", type=_positive_int,
                        help="repetitions per measurement, median reported (3; 1 with --quick)")
    parser.add_argument("--dir", type=Path, default=None, metavar="PATH",
                        help="where temporary files go (a scratch folder is made inside and "
                        "removed); default: the current directory")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="JSON report path (default benchmarks/results/<groups>-<time>.json)")
    parser.add_argument("--level", type=int, default=None, help="zstd level (3)")
    parser.add_argument("--ct-slices", type=_positive_int, default=None,
                        help="CT slices of 0.5 MiB (512; 64 with --quick)")
    parser.add_argument("--small-objects", type=_positive_int, default=None,
                        help="small records (32768; 4096 with --quick)")
    parser.add_argument("--small-size", type=_positive_int, default=None,
                        help="bytes per small record (4096)")
    parser.add_argument("--per-file-max", type=int, default=None,
                        help="cap on files in the file-per-object fsync limit, 0 = no cap "
                        "(4096; 256 with --quick)")
    parser.add_argument("--threads", type=_thread_counts, default=None,
                        help="comma-separated thread counts for zstd (1,<cores>)")
    parser.add_argument("--seed", type=int, default=None, help="data generator seed (0)")
    return parser


def settings_from(args: argparse.Namespace) -> BenchmarkSettings:
    """Defaults for --quick or a full run, overridden by whatever options were given."""
    parent: Path = args.dir if args.dir is not None else Path.cwd()
    base = BenchmarkSettings.quick_smoke(parent) if args.quick else BenchmarkSettings.full(parent)
    per_file_max = base.per_file_max
    if args.per_file_max is not None:
        per_file_max = args.per_file_max if args.per_file_max > 0 else None
    return dataclasses.replace(
        base,
        runs=base.runs if args.runs is None else args.runs,
        zstd_level=base.zstd_level if args.level is None else args.level,
        ct_slice_count=base.ct_slice_count if args.ct_slices is None else args.ct_slices,
        small_object_count=(
            base.small_object_count if args.small_objects is None else args.small_objects
        ),
        small_object_size=(
            base.small_object_size if args.small_size is None else args.small_size
        ),
        per_file_max=per_file_max,
        thread_counts=base.thread_counts if args.threads is None else args.threads,
        seed=base.seed if args.seed is None else args.seed,
    )


def machine_description(scratch_parent: Path) -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "filesystem": filesystem_of(scratch_parent),
        "versions": {
            "numpy": np.__version__,
            "zstandard": zstandard.__version__,
            "zstd": ".".join(str(v) for v in zstandard.ZSTD_VERSION),
            "blake3": getattr(blake3, "__version__", "unknown"),
            "xxhash": xxhash.VERSION,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    groups = select_groups(args.groups)
    name = ALL_GROUPS if ALL_GROUPS in args.groups else "+".join(g.name for g in groups)
    started_at = datetime.now(UTC)
    load_before = load_average()
    if load_before is not None and load_before[0] > BUSY_LOAD:
        report_to_stderr(
            f"note: load average {load_before[0]:.2f} at start: other work is using the "
            "cores, figures will be noisy"
        )
    rows: list[ResultRow] = []
    started = time.perf_counter()
    with ScratchSpace(settings.scratch_parent) as scratch:
        context = BenchmarkContext(settings, scratch, report_to_stderr)
        for group in groups:
            report_to_stderr(f"[{group.name}] {group.description}")
            rows.extend(group.run(context))
        datasets = {n: d.to_json() for n, d in context.generated_datasets.items()}
        limits = context.measured_limits
    elapsed = time.perf_counter() - started
    timestamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    report_path: Path = args.json or RESULTS_FOLDER / f"{name}-{timestamp}.json"
    report: dict[str, object] = {
        "name": name,
        "groups": [g.name for g in groups],
        "started_at": started_at.isoformat(),
        "duration_s": elapsed,
        "settings": settings.to_json(),
        "machine": {
            **machine_description(settings.scratch_parent),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "datasets": datasets,
        "rows": [r.to_json() for r in rows],
        "limits": limits,
    }
    write_report(report_path, report)
    render_rows(rows, f"mmarchive benchmarks: {name} ({elapsed:.0f} s, runs={settings.runs})")
    report_to_stderr(f"report written to {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
