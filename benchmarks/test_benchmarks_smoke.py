"""Smoke tests of the benchmark suite itself (run with `pytest benchmarks`).

This module owns the checks that keep the benchmarks trustworthy: the CT and record
generators are deterministic, exactly sized, distinct and compress in the intended range;
the byte shuffle round-trips; the group catalog resolves names;
`python -m benchmarks limits --quick` finishes well under 30 s and writes a complete report; and
`python -m benchmarks tiers --quick` on a few slices (its own SeaweedFS on loopback) moves packs
ssd -> disk -> s3 and reports every figure beside its limit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from benchmarks import ctdata
from benchmarks.catalog import ALL_GROUPS, group_names, select_groups
from benchmarks.limits import byte_shuffle, byte_unshuffle, limit_plan

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_ct_slices_are_sized_distinct_and_deterministic() -> None:
    slices = list(ctdata.ct_slices(20, seed=3))
    assert all(len(s) == ctdata.CT_SLICE_BYTES == 524288 for s in slices)
    assert len(set(slices)) == 20
    assert list(ctdata.ct_slices(5, seed=3)) == slices[:5]
    assert list(ctdata.ct_slices(4, seed=3, start=13)) == slices[13:17]
    assert next(ctdata.ct_slices(1, seed=4)) != slices[0]


def test_ct_slices_compress_like_ct() -> None:
    slices = list(ctdata.ct_slices(200, seed=0))[::25]
    compressor = zstandard.ZstdCompressor(level=3)
    total = sum(len(s) for s in slices)
    plain = total / sum(len(compressor.compress(s)) for s in slices)
    shuffled = total / sum(len(compressor.compress(byte_shuffle(s))) for s in slices)
    assert 2.2 <= plain <= 2.6
    assert 2.75 <= shuffled <= 3.05


def test_small_objects_are_sized_distinct_and_semi_compressible() -> None:
    records = list(ctdata.small_objects(300, size=4096, seed=1))
    assert all(len(r) == 4096 for r in records)
    assert len(set(records)) == 300
    assert list(ctdata.small_objects(10, seed=1, start=250)) == records[250:260]
    compressor = zstandard.ZstdCompressor(level=3)
    ratio = sum(map(len, records)) / sum(len(compressor.compress(r)) for r in records)
    assert 1.6 <= ratio <= 3.0
    assert all(len(r) == 100 for r in ctdata.small_objects(5, size=100))


@pytest.mark.parametrize("data", [b"", b"a", b"aAbB", b"aAbBc", bytes(range(256)) * 3])
def test_byte_shuffle_round_trips(data: bytes) -> None:
    shuffled = byte_shuffle(data)
    assert len(shuffled) == len(data)
    assert byte_unshuffle(shuffled) == data
    if len(data) >= 4:
        assert shuffled[: len(data) // 2] == data[0 : 2 * (len(data) // 2) : 2]


def test_catalog_and_limit_plan() -> None:
    assert "limits" in group_names()
    assert [g.name for g in select_groups([ALL_GROUPS])] == list(group_names())
    with pytest.raises(KeyError):
        select_groups(["no-such-group"])
    keys = list(limit_plan(thread_counts=(1, 2)))
    assert keys[:2] == ["write_sequential_fsync", "write_per_file_fsync"]
    assert {"hash_xxh3_64", "hash_blake3", "hash_sha256", "zstd3_plain_t1", "zstd3_plain_t2",
            "zstd3_shuffled_t1", "zstd3_shuffled_t2"} <= set(keys)


def test_quick_limits_run_writes_a_report(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "limits", "--quick",
         "--dir", str(tmp_path), "--json", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr
    assert elapsed < 30.0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["groups"] == ["limits"]
    assert set(report["datasets"]) == {"ct", "small"}
    rows = report["rows"]
    assert {r["dataset"] for r in rows} == {"ct", "small"}
    assert all(r["value"] > 0 for r in rows)
    assert "write one file + fsync" in completed.stdout
    assert list(tmp_path.iterdir()) == [report_path]  # the scratch folder is gone


def test_quick_tiers_run_writes_a_report(tmp_path: Path) -> None:
    from tests.s3server import find_weed

    try:
        find_weed()
    except RuntimeError as e:
        pytest.skip(str(e))
    report_path = tmp_path / "report.json"
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "tiers", "--quick", "--ct-slices", "24",
         "--dir", str(tmp_path), "--json", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr
    assert elapsed < 60.0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["groups"] == ["tiers"]
    rows = report["rows"]
    assert all(r["value"] > 0 and r["limit_value"] > 0 and r["limit_name"] for r in rows)
    names = [r["name"] for r in rows]
    assert sum(n.startswith("move_pack ssd -> disk") for n in names) == 3
    assert sum(n.startswith("move_pack disk -> s3") for n in names) == 5
    for tier in ("ssd", "disk", "s3"):
        assert sum(n.startswith(f"get of one 0.5 MiB instance, {tier} ") for n in names) == 2
    run = rows[0]["details"]["runs"][0]
    assert run["packs"] >= 2
    assert set(run["move_ssd_to_disk"]["steps"]) == {"store", "verify", "release", "other"}
    assert run["latency"]["s3"]["requests_per_get"]
    assert list(tmp_path.iterdir()) == [report_path]  # scratch data and SeaweedFS's folder are gone


def test_quick_lifecycle_run_writes_a_report(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "lifecycle", "--quick", "--runs", "1",
         "--dir", str(tmp_path), "--json", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(report_path.read_text(encoding="utf-8"))
    rows = {r["name"]: r for r in report["rows"]}
    plan = rows["lifecycle plan (make_plan), now"]
    assert plan["value"] > 0 and plan["details"]["counts"]["objects"] == 20_000
    assert plan["details"]["counts"]["expiries"] > 0  # the policy really decided something
    assert list(tmp_path.iterdir()) == [report_path]
