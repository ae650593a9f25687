"""Smoke test of the `dicom_query` benchmark group (the DICOM catalog at scale).

This module owns the checks that the group stays runnable and honest: it is registered, the synthetic
hierarchy has the promised shape, `--quick` builds its catalog and times every query kind in a few
seconds, every row is positive, the rows with a target say whether it was met, and no scratch data is
left behind. It does not judge the figures (the machine may be busy).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.catalog import group_names
from benchmarks.dicom_query_group import QUICK_INSTANCES, synthetic_catalog

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_group_is_registered() -> None:
    assert "dicom_query" in group_names()


def test_synthetic_catalog_has_the_promised_shape() -> None:
    studies, items = synthetic_catalog(4000, seed=3)
    instances = list(items)
    assert len(instances) == 4000
    assert len({i.values["SOPInstanceUID"] for i in instances}) == 4000
    assert 60 <= len(studies) <= 140  # about 40 instances per study
    assert all(1 <= len(s.series_uids) <= 6 for s in studies)
    assert len({s.patient_id for s in studies}) < len(studies)  # patients have several studies
    again, _ = synthetic_catalog(4000, seed=3)
    assert again == studies


def test_quick_run_writes_a_report(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "dicom_query", "--quick",
         "--dir", str(tmp_path), "--json", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr
    assert elapsed < 30.0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    rows = report["rows"]
    assert {r["group"] for r in rows} == {"dicom_query"}
    assert all(r["value"] > 0 for r in rows)
    build = rows[0]
    assert build["unit"] == "inst/s" and build["details"]["instances"] == QUICK_INSTANCES
    latency = [r for r in rows if r["unit"] == "ms"]
    assert len(latency) == 10  # five kinds, p50 and p99
    targets = [r for r in rows if "met" in r["details"]]
    assert len(targets) == 3 and all("target" in r["note"] for r in targets)
    assert all(r["details"].get("results_per_query", 1) > 0 for r in latency if "p50" in r["name"])
    assert list(tmp_path.iterdir()) == [report_path]  # the scratch catalog is gone
