"""init, put, get, ls, stat and rm through the real CLI, checked against the Archive API."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import blake3

from mmarchive.archive import Archive
from mmarchive.config import KiB
from tests.cli.conftest import InProcess, run_cli


def test_init_writes_the_store_settings(tmp_path: Path) -> None:
    path = tmp_path / "a"
    result = run_cli("init", "--archive", path, "--pack-size", "128KiB", "--chunk-threshold", "64KiB",
                     "--chunk-min", "8KiB", "--chunk-avg", "16KiB", "--chunk-max", "64KiB",
                     "--compression", "zstd", "--zstd-level", "5", "--json")
    assert result.code == 0, result.stderr
    [out] = result.json_lines()
    assert out["archive"] == str(path)
    assert out["store"]["pack_size"] == 128 * KiB
    config = tomllib.loads((path / "mmarchive.toml").read_text())
    assert config["archive"]["id"] == out["archive_id"]
    assert config["store"]["pack_size"] == "128KiB"
    assert config["store"]["chunk_avg"] == "16KiB"
    assert config["store"]["compression"] == "zstd"
    assert config["store"]["zstd_level"] == 5
    with Archive.open(path, readonly=True) as archive:
        assert archive.config.store.chunk_threshold == 64 * KiB


def test_init_refuses_a_non_empty_directory_and_bad_settings(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = run_cli("init", "--archive", tmp_path / "full")
    assert result.code == 2
    assert "not empty" in result.stderr
    bad = run_cli("init", "--archive", tmp_path / "b", "--chunk-threshold", "16KiB", "--chunk-min", "4KiB",
                  "--chunk-avg", "6KiB", "--chunk-max", "16KiB")  # not a power of two
    assert bad.code == 2 and "power of two" in bad.stderr
    usage = run_cli("init", "--archive", tmp_path / "c", "--pack-size", "lots")
    assert usage.code == 2 and "usage:" in usage.stderr


def test_init_exist_ok_keeps_an_existing_archive(tmp_path: Path) -> None:
    path = tmp_path / "a"
    first = run_cli("init", "--archive", path, "--pack-size", "128KiB", "--json")
    assert first.code == 0, first.stderr
    again = run_cli("init", "--archive", path, "--exist-ok", "--pack-size", "1MiB", "--json")
    assert again.code == 0, again.stderr
    [out] = again.json_lines()
    assert out["existed"] is True and out["archive_id"] == first.json_lines()[0]["archive_id"]
    assert out["store"]["pack_size"] == 128 * KiB  # the existing settings are kept
    refused = run_cli("init", "--archive", path)
    assert refused.code == 2 and "already holds an archive" in refused.stderr


def test_put_json_one_line_per_file_in_order_and_already_stored(archive_dir: Path,
                                                               files: list[Path]) -> None:
    result = run_cli("put", "--archive", archive_dir, "--json", *files)
    assert result.code == 0, result.stderr
    lines = result.json_lines()
    assert [line["source"] for line in lines] == [str(f) for f in files]
    assert [line["id"] for line in lines] == [blake3.blake3(f.read_bytes()).hexdigest() for f in files]
    assert [line["size"] for line in lines] == [f.stat().st_size for f in files]
    assert all(line["tenant"] == "default" and line["already_stored"] is False for line in lines)
    with Archive.open(archive_dir, readonly=True) as archive:
        assert sorted(i.id for i in archive.list()) == sorted(line["id"] for line in lines)
        for line in lines:
            assert archive.stat(line["id"]).size == line["size"]

    again = run_cli("put", "--archive", archive_dir, "--json", *reversed(files))
    assert again.code == 0, again.stderr
    relines = again.json_lines()
    assert [line["id"] for line in relines] == [line["id"] for line in reversed(lines)]
    assert all(line["already_stored"] is True for line in relines)


def test_put_human_output_metadata_group_and_tenant(archive_dir: Path, files: list[Path]) -> None:
    result = run_cli("put", "--archive", archive_dir, "--tenant", "site-a", "--metadata", "modality=CT",
                     "--metadata", "note=a=b", "--group", "study-1", files[0])
    assert result.code == 0, result.stderr
    oid = blake3.blake3(files[0].read_bytes()).hexdigest()
    [line] = result.text.splitlines()
    assert line.split()[0] == oid and "stored" in line and str(files[0]) in line
    with Archive.open(archive_dir, readonly=True) as archive:
        info = archive.stat(oid, tenant="site-a")
        assert dict(info.metadata) == {"modality": "CT", "note": "a=b"}
        assert not archive.exists(oid)  # the default tenant does not see it
    again = run_cli("put", "--archive", archive_dir, "--tenant", "site-a", "--metadata", "modality=CT",
                    "--metadata", "note=a=b", files[0])
    assert "already stored" in again.text
    bad = run_cli("put", "--archive", archive_dir, "--metadata", "novalue", files[0])
    assert bad.code == 2 and "KEY=VALUE" in bad.stderr


def test_put_from_stdin(archive_dir: Path) -> None:
    data = os.urandom(40_000)
    result = run_cli("put", "--archive", archive_dir, "--json", "-", input=data)
    assert result.code == 0, result.stderr
    [line] = result.json_lines()
    assert line["id"] == blake3.blake3(data).hexdigest()
    assert line["source"] == "stdin" and line["size"] == len(data)
    with Archive.open(archive_dir, readonly=True) as archive:
        assert archive.get(line["id"]) == data


def test_put_directory_recurses_in_sorted_order(archive_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "b" / "c").mkdir(parents=True)
    (tree / "a").mkdir()
    for rel, data in {"z.txt": b"z", "b/c/deep.txt": b"deep", "a/one.txt": b"one",
                      "b/two.txt": b"two"}.items():
        (tree / rel).write_bytes(data)
    result = run_cli("put", "--archive", archive_dir, "--json", tree)
    assert result.code == 0, result.stderr
    sources = [line["source"] for line in result.json_lines()]
    assert sources == [str(tree / rel) for rel in ("a/one.txt", "b/c/deep.txt", "b/two.txt", "z.txt")]


def test_get_to_stdout_and_to_file_byte_exact(archive_dir: Path, files: list[Path],
                                              tmp_path: Path) -> None:
    put = run_cli("put", "--archive", archive_dir, "--json", *files)
    assert put.code == 0, put.stderr
    for line, src in zip(put.json_lines(), files, strict=True):
        out = run_cli("get", "--archive", archive_dir, line["id"])
        assert out.code == 0, out.stderr
        assert out.stdout == src.read_bytes()
        target = tmp_path / "out" / (src.name + ".copy")
        target.parent.mkdir(exist_ok=True)
        to_file = run_cli("get", "--archive", archive_dir, line["id"], "-o", target, "--json")
        assert to_file.code == 0, to_file.stderr
        assert target.read_bytes() == src.read_bytes()
        assert to_file.json_lines() == [{"id": line["id"], "tenant": "default", "size": line["size"],
                                         "output": str(target)}]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f.name + ".copy"
                                                                         for f in files)


def test_ls_and_stat_human_and_json(archive_dir: Path, files: list[Path], mm: InProcess) -> None:
    put = run_cli("put", "--archive", archive_dir, "--json", "--metadata", "k=[bold]v", *files)
    ids = {line["id"]: line for line in put.json_lines()}

    listed = mm("ls", "--archive", archive_dir, "--json")
    assert listed.code == 0
    rows = listed.json_lines()
    assert [r["id"] for r in rows] == sorted(ids)
    shape = {"tenant", "id", "size", "created_ns", "metadata", "chunk_count", "seq"}
    assert all(set(r) == shape for r in rows)
    assert {r["id"]: r["size"] for r in rows} == {i: line["size"] for i, line in ids.items()}

    human = mm("ls", "--archive", archive_dir)
    assert human.code == 0
    text_lines = human.text.splitlines()
    assert text_lines[0].split() == ["ID", "SIZE", "CREATED", "METADATA"]
    assert [line.split()[0] for line in text_lines[1:]] == sorted(ids)
    assert "146.5 KiB" in human.text  # 150000 bytes
    assert '{"k":"[bold]v"}' in human.text  # metadata is shown as data, not as rich markup
    assert "\x1b" not in human.text

    limited = mm("ls", "--archive", archive_dir, "--json", "--limit", "2")
    assert [r["id"] for r in limited.json_lines()] == sorted(ids)[:2]
    after = mm("ls", "--archive", archive_dir, "--json", "--after", sorted(ids)[0])
    assert [r["id"] for r in after.json_lines()] == sorted(ids)[1:]
    other = mm("ls", "--archive", archive_dir, "--json", "--tenant", "nobody")
    assert other.code == 0 and other.stdout == b""

    big = max(ids.values(), key=lambda line: int(line["size"]))
    one = mm("stat", "--archive", archive_dir, big["id"], "--json")
    [info] = one.json_lines()
    assert info["id"] == big["id"] and info["size"] == 150_000 and info["chunk_count"] > 1
    assert info["metadata"] == {"k": "[bold]v"}
    one_human = mm("stat", "--archive", archive_dir, big["id"])
    assert big["id"] in one_human.text and "146.5 KiB (150000 bytes)" in one_human.text
    assert "metadata.k" in one_human.text and "[bold]v" in one_human.text

    totals = mm("stat", "--archive", archive_dir, "--json")
    [t] = totals.json_lines()
    assert t["tenant"] is None and t["objects"] == 3
    assert t["logical_bytes"] == sum(f.stat().st_size for f in files)
    assert t["packs"] >= 2 and t["stored_bytes"] > 0
    assert {"dedup_ratio", "compression_ratio", "unique_bytes", "pack_bytes"} <= set(t)
    totals_human = mm("stat", "--archive", archive_dir)
    for label in ("objects", "logical size", "stored size", "dedup ratio", "compression ratio", "packs"):
        assert label in totals_human.text
    tenant_totals = mm("stat", "--archive", archive_dir, "--tenant", "default", "--json")
    assert tenant_totals.json_lines()[0]["tenant"] == "default"
    assert tenant_totals.json_lines()[0]["objects"] == 3


def test_rm_then_get_exits_3(archive_dir: Path, files: list[Path], mm: InProcess) -> None:
    put = run_cli("put", "--archive", archive_dir, "--json", files[0])
    oid = put.json_lines()[0]["id"]
    removed = mm("rm", "--archive", archive_dir, oid, "--json")
    assert removed.code == 0, removed.stderr
    assert removed.json_lines()[0]["id"] == oid
    gone = run_cli("get", "--archive", archive_dir, oid)
    assert gone.code == 3
    assert gone.stdout == b""
    assert gone.stderr.startswith("mmarchive: error: ") and oid in gone.stderr
    again = mm("rm", "--archive", archive_dir, oid)
    assert again.code == 3
    assert mm("stat", "--archive", archive_dir, oid).code == 3
    assert mm("ls", "--archive", archive_dir, "--json").stdout == b""


def test_archive_from_environment(archive_dir: Path, files: list[Path], tmp_path: Path) -> None:
    from tests.cli.conftest import cli_env

    result = run_cli("put", files[0], env=cli_env(archive_dir))
    assert result.code == 0, result.stderr
    listed = run_cli("ls", "--json", env=cli_env(archive_dir))
    assert len(listed.json_lines()) == 1
    # --archive wins over the environment
    elsewhere = run_cli("ls", "--archive", tmp_path / "nothing", env=cli_env(archive_dir))
    assert elsewhere.code == 3
