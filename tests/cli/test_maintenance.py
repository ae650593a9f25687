"""verify, gc and reindex through the CLI: clean archives exit 0, damage exits 5."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.conftest import InProcess, run_cli


def _packs(archive_dir: Path) -> list[Path]:
    return sorted((archive_dir / "packs").glob("*/*.pack"))


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_verify_clean_archive_exits_0(archive_dir: Path, files: list[Path], mm: InProcess) -> None:
    assert run_cli("put", "--archive", archive_dir, *files).code == 0
    result = mm("verify", "--archive", archive_dir)
    assert result.code == 0, result.stderr
    assert "result" in result.text and "ok" in result.text
    as_json = mm("verify", "--archive", archive_dir, "--json")
    [report] = as_json.json_lines()
    assert report["ok"] is True and report["packs_checked"] >= 2 and report["damaged"] == []


def test_verify_finds_a_flipped_byte_and_exits_5(archive_dir: Path, tmp_path: Path,
                                                mm: InProcess) -> None:
    data = os.urandom(200_000)
    src = tmp_path / "scan.bin"
    src.write_bytes(data)
    put = run_cli("put", "--archive", archive_dir, "--json", src)
    oid = put.json_lines()[0]["id"]
    packs = _packs(archive_dir)
    assert packs, "no pack files under ARCHIVE/packs/xx/"
    victim = max(packs, key=lambda p: p.stat().st_size)
    _flip_byte(victim, victim.stat().st_size // 2)

    result = mm("verify", "--archive", archive_dir)
    assert result.code == 5
    assert "DAMAGED" in result.text
    assert result.stderr.startswith("mmarchive: error: verify found damage")

    as_json = mm("verify", "--archive", archive_dir, "--json")
    assert as_json.code == 5
    report, error = as_json.json_lines()
    assert report["ok"] is False and report["damaged"]
    assert any(oid in affected for affected in report["affected_objects"])
    assert error["error"]["type"] == "IntegrityError"

    # get -o leaves neither the target nor a temporary file behind
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    got = run_cli("get", "--archive", archive_dir, oid, "-o", out_dir / "scan.bin")
    assert got.code == 5, got.stderr
    assert list(out_dir.iterdir()) == []
    assert "mmarchive: error: " in got.stderr


def test_gc_after_rm_and_reindex(archive_dir: Path, files: list[Path], mm: InProcess) -> None:
    put = run_cli("put", "--archive", archive_dir, "--json", *files)
    ids = [line["id"] for line in put.json_lines()]
    assert mm("rm", "--archive", archive_dir, ids[1]).code == 0
    gc = mm("gc", "--archive", archive_dir, "--json")
    assert gc.code == 0, gc.stderr
    [report] = gc.json_lines()
    assert {"packs_deleted", "packs_repacked", "bytes_before", "bytes_after",
            "bytes_reclaimed"} <= set(report)
    assert report["bytes_after"] < report["bytes_before"]
    human_gc = mm("gc", "--archive", archive_dir, "--repack-below", "0.9")
    assert human_gc.code == 0 and "reclaimed" in human_gc.text
    assert mm("gc", "--archive", archive_dir, "--repack-below", "2").code == 2

    reindex = mm("reindex", "--archive", archive_dir, "--json")
    assert reindex.code == 0, reindex.stderr
    [stats] = reindex.json_lines()
    assert stats["objects"] == 2
    listed = mm("ls", "--archive", archive_dir, "--json")
    assert sorted(r["id"] for r in listed.json_lines()) == sorted([ids[0], ids[2]])
    assert mm("verify", "--archive", archive_dir).code == 0
    for oid, src in ((ids[0], files[0]), (ids[2], files[2])):
        assert run_cli("get", "--archive", archive_dir, oid).stdout == src.read_bytes()
