"""Smoke test of the `dicom_ingest` benchmark group and of its data generator (`benchmarks.dicomdata`).

This module owns the checks that the group stays runnable and honest: it is registered, the generator
writes deterministic, valid Part 10 files with realistic headers and UIDs of at most 64 characters that
mmarchive's native scanner reads, a tiny run of every pass (API raw and compressed, re-ingest, CLI, small
instances) takes a few seconds, stores every file, reports positive figures beside a limit measured in the
same run, says whether the targets were met, and leaves no scratch data behind. It does not judge the
figures (the machine may be busy).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pydicom

from benchmarks.catalog import group_names
from benchmarks.dicom_ingest_group import measure_dicom_ingest
from benchmarks.dicomdata import MAX_UID_LENGTH, plan_ct, write_ct_set, write_small_set
from mmarchive.dicom.scan import describe

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_group_is_registered() -> None:
    assert "dicom_ingest" in group_names()


def test_plan_is_deterministic_and_exact() -> None:
    plan = plan_ct(1500, seed=4)
    assert sum(s.count for s in plan) == 1500
    assert plan == plan_ct(1500, seed=4)
    assert plan != plan_ct(1500, seed=5)
    assert len({s.uid for s in plan}) == len(plan)
    assert len({s.study.uid for s in plan}) >= 3


def test_generated_files_are_valid_and_deterministic(tmp_path: Path) -> None:
    ct = write_ct_set(tmp_path / "a", 12, seed=2)
    again = write_ct_set(tmp_path / "b", 12, seed=2)
    assert [p.read_bytes() for p in ct.paths] == [p.read_bytes() for p in again.paths]
    assert ct.total_bytes == sum(p.stat().st_size for p in ct.paths)
    sops = set()
    for number, path in enumerate(ct.paths, 1):
        data = path.read_bytes()
        scanned = describe(data)
        assert scanned.parsed_by == "native"
        assert scanned.transfer_syntax == "1.2.840.10008.1.2.1"
        sop = str(scanned.values["SOPInstanceUID"][0])
        assert len(sop) <= MAX_UID_LENGTH and sop not in sops
        sops.add(sop)
        ds = pydicom.dcmread(path)
        assert ds.file_meta.MediaStorageSOPInstanceUID == sop
        assert ds.Modality == "CT" and ds.Rows == ds.Columns == 512 and ds.InstanceNumber == number
        assert ds.RescaleIntercept == -1024 and len(ds.PixelSpacing) == 2
        assert ds.pixel_array.shape == (512, 512) and ds.pixel_array.max() > 1000
    small = write_small_set(tmp_path / "small", 60, seed=2)
    assert small.instances == 60 and 2_000 < small.total_bytes / 60 < 8_000
    assert pydicom.dcmread(small.paths[-1]).pixel_array.shape == (32, 32)


def test_tiny_run_measures_every_pass(tmp_path: Path) -> None:
    started = time.monotonic()
    rows = measure_dicom_ingest(tmp_path, 10, 40, 1, 0, lambda _message: None)
    assert time.monotonic() - started < 30.0
    kinds = {r.name for r in rows if r.unit == "inst/s"}
    assert kinds == {"CT raw, API", "CT re-ingest, raw, API", "CT compressed (auto), API", "CT raw, CLI",
                     "small raw, API"}
    assert all(r.value > 0 for r in rows)
    assert all(r.ratio is not None and r.ratio > 0 for r in rows if r.limit_value is not None)
    by_name = {r.name: r for r in rows}
    assert by_name["CT raw, API"].details["statuses"] == {"stored": 10}
    assert by_name["CT re-ingest, raw, API"].details["statuses"] == {"already-stored": 10}
    assert by_name["CT re-ingest, raw, API"].details["pack_bytes_added"] == [0]
    assert by_name["small raw, API"].details["statuses"] == {"stored": 40}
    targets = [r for r in rows if "met" in r.details]
    assert {r.name for r in targets} == {"CT raw, API", "CT raw, CLI"}
    assert all("target" in r.note for r in targets)
    assert list(tmp_path.iterdir()) == []  # files and archives are gone


def test_quick_run_through_the_command_line(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "dicom_ingest", "--quick",
         "--dir", str(tmp_path), "--json", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    rows = json.loads(report_path.read_text(encoding="utf-8"))["rows"]
    assert {r["group"] for r in rows} == {"dicom_ingest"}
    assert all(r["value"] > 0 for r in rows)
    assert list(tmp_path.iterdir()) == [report_path]
