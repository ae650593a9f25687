"""Smoke test of the `facade` benchmark group (issue 5 §5): registered, runnable, honest.

A `--quick` run through the command line (about 25 s: seven server and three C-STORE client processes
start and stop) stores a few files by STOW-RS and C-STORE into scratch archives served by `mmarchive
serve`, reads a small study back by WADO-RS, metadata and QIDO-RS (from `mmarchive serve` and from the
embedded application), and reports every figure beside the same operation through the Python API. It does
not judge the figures (the machine may be busy); it checks that every row is positive and compared to the
API, that the issue's Orthanc figures are named, and that nothing is left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.catalog import group_names
from benchmarks.facade_group import API, EMBEDDED, instance_sample, write_retrieval_study

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_group_is_registered() -> None:
    assert "facade" in group_names()


def test_retrieval_study_has_the_asked_series(tmp_path: Path) -> None:
    study = write_retrieval_study(tmp_path, (3, 2), seed=9)
    assert [len(s) for s in study.sop_uids] == [3, 2] and len(study.paths) == 5
    assert len(set(study.series_uids)) == 2
    assert study.total_bytes == sum(p.stat().st_size for p in study.paths)
    sample = instance_sample(study, 4, seed=1)
    assert sample == instance_sample(study, 4, seed=1)
    assert all(sop in study.sop_uids[study.series_uids.index(series)] for series, sop in sample)


def test_quick_run_through_the_command_line(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "facade", "--quick", "--dir", str(tmp_path),
         "--json", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    rows = json.loads(report_path.read_text(encoding="utf-8"))["rows"]
    names = {r["name"] for r in rows}
    for wanted in ("STOW-RS, 1 client", "STOW-RS, 2 clients", "C-STORE, 1 association",
                   "C-STORE, 2 associations", "WADO-RS study, warm", "WADO-RS instance p50",
                   "WADO-RS series metadata (20)",
                   "QIDO-RS instances of a series (10) p50", "QIDO-RS studies by PatientID p99",
                   "WADO-RS instance p50" + EMBEDDED):
        assert wanted in names
    assert {r["group"] for r in rows} == {"facade"}
    assert all(r["value"] > 0 and r["limit_name"] == API and r["ratio"] > 0 for r in rows)
    with_reference = [r for r in rows if "orthanc_reference" in r["details"]]
    assert len(with_reference) >= 5 and all("Orthanc" in r["note"] for r in with_reference)
    assert list(tmp_path.iterdir()) == [report_path]
