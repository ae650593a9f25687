"""Smoke tests of the archive benchmark groups (`ingest`, `bigobject`, `reads`, `native`).

This module owns the checks that the groups timing mmarchive itself stay runnable and honest:
they are registered, `--quick` finishes in well under a minute, every row is positive, rows
that carry a target say whether it was met, the rows compared to a limit name it, and no
scratch data is left behind. It does not judge the figures (the machine may be busy).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.archive_timing import percentile, target_note
from benchmarks.catalog import group_names

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("ingest", "bigobject", "reads", "native")


def test_groups_are_registered_after_limits() -> None:
    names = group_names()
    assert names[0] == "limits"
    assert all(g in names for g in GROUPS)


def test_percentile_and_target_note() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert target_note(True, "x") == "target x: met"
    assert target_note(False, "x") == "target x: MISSED"


def test_quick_archive_groups_write_a_report(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", *GROUPS, "--quick",
         "--dir", str(tmp_path), "--json", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr
    assert elapsed < 60.0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["groups"] == list(GROUPS)
    rows = report["rows"]
    assert {r["group"] for r in rows} == set(GROUPS)
    assert all(r["value"] > 0 or r["unit"] == "%" for r in rows)
    assert all(r["limit_value"] is None or r["limit_name"] for r in rows)
    targets = [r for r in rows if "met" in r["details"]]
    assert len(targets) >= 8
    assert all(("target" in r["note"]) for r in targets)
    assert list(tmp_path.iterdir()) == [report_path]  # scratch archives are gone
