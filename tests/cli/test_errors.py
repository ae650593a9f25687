"""Exit codes and error reports: one mapping in main.py, one message format, JSON errors with --json."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmarchive.archive import Archive, PutItem
from mmarchive.cli import put_cmd
from mmarchive.cli.main import build_parser, exit_code_for, main
from mmarchive.errors import (
    ArchiveError,
    ArchiveLockedError,
    ArchiveStateError,
    FormatError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RetentionError,
    StorageError,
)
from tests.cli.conftest import InProcess, run_cli

COMMANDS = ["init", "put", "get", "ls", "stat", "rm", "verify", "gc", "reindex"]


@pytest.mark.parametrize("command", [*COMMANDS, "ingest", "query", "export", "tiers", "audit", "serve",
                                     "lifecycle plan", "hold add"])
def test_help_for_every_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mmarchive {command}")
    assert "--archive DIR" in out and "--json" in out


def test_top_level_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.code == 0
    for command in COMMANDS:
        assert command in result.text
    assert build_parser().prog == "mmarchive"


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_a_command_alone_parses_as_with_every_command() -> None:
    """main builds only the parser of the command it runs: that parser is the same as in the full one."""
    everything = _commands(build_parser())
    assert len(everything) == 17
    for name, full in everything.items():
        alone = _commands(build_parser(name))
        assert list(alone) == [name]
        assert alone[name].format_help() == full.format_help()
    assert list(_commands(build_parser("frobnicate"))) == list(everything)


def test_version_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mmarchive ") and out.strip() != "mmarchive"


def test_piped_ingest_imports_neither_rich_nor_other_commands(tmp_path: Path) -> None:
    """A command run for a pipe starts without rich and the modules of the other commands (~0.2 s)."""
    Archive.create(tmp_path / "a").close()
    (tmp_path / "in").mkdir()
    argv = ["ingest", str(tmp_path / "in"), "--archive", str(tmp_path / "a"), "--json"]
    script = ("import sys\n"
              "from mmarchive.cli.main import main\n"
              f"code = main({argv!r})\n"
              "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'rich' or m.endswith('_cmd'))\n"
              "print(code, loaded)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "0 ['mmarchive.cli.ingest_cmd']"


def test_usage_errors_exit_2(mm: InProcess) -> None:
    assert mm().code == 2
    assert mm("ls", "--limit", "0").code == 2
    assert run_cli().code == 2
    assert run_cli("frobnicate").code == 2
    result = run_cli("get")  # missing ID
    assert result.code == 2 and "usage:" in result.stderr


def test_exit_code_table() -> None:
    expected = {InvalidInputError("x"): 2, NotFoundError("x"): 3, ArchiveLockedError("x"): 4,
                IntegrityError("x"): 5, FormatError("x"): 5, RetentionError("x"): 6,
                StorageError("x"): 7, ArchiveStateError("x"): 8, ArchiveError("x"): 1,
                OSError("x"): 1, KeyboardInterrupt(): 130}
    for exc, code in expected.items():
        assert exit_code_for(exc) == code, exc


def test_bad_archive_path_exits_3(tmp_path: Path, mm: InProcess) -> None:
    for args in (["ls"], ["stat"], ["verify"], ["gc"], ["reindex"], ["rm", "0" * 64],
                 ["get", "0" * 64]):
        result = mm(*args, "--archive", tmp_path / "missing")
        assert result.code == 3, args
        assert result.stderr.startswith("mmarchive: error: no archive at ")
        assert result.stdout == b""
    putting = run_cli("put", "--archive", tmp_path / "missing", __file__)
    assert putting.code == 3


def test_json_error_object_on_stdout(tmp_path: Path, mm: InProcess) -> None:
    result = mm("ls", "--archive", tmp_path / "missing", "--json")
    assert result.code == 3
    assert result.stderr == ""
    [line] = result.json_lines()
    assert line["error"]["type"] == "NotFoundError"
    assert "no archive at" in line["error"]["message"]


def test_get_json_error_goes_to_stderr_when_stdout_carries_data(archive_dir: Path) -> None:
    result = run_cli("get", "--archive", archive_dir, "--json", "ab" * 32)
    assert result.code == 3
    assert result.stdout == b""
    assert json.loads(result.stderr)["error"]["type"] == "NotFoundError"


def test_invalid_id_and_tenant_exit_2(archive_dir: Path, mm: InProcess) -> None:
    bad_id = mm("stat", "--archive", archive_dir, "not-an-id")
    assert bad_id.code == 2 and "not an object id" in bad_id.stderr
    bad_tenant = mm("ls", "--archive", archive_dir, "--tenant", "no/slashes")
    assert bad_tenant.code == 2 and "tenant" in bad_tenant.stderr


def _source(line: dict[str, Any]) -> str | None:
    """The input a put JSON line answers: an object's source, or a failed input's."""
    source = line["error"].get("source") if "error" in line else line.get("source")
    return str(source) if source is not None else None


def test_missing_file_is_reported_and_the_others_are_stored(archive_dir: Path, files: list[Path],
                                                           tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file.dcm"
    result = run_cli("put", "--archive", archive_dir, "--json", files[0], missing, files[1])
    assert result.code == 2
    lines = result.json_lines()
    assert [_source(line) for line in lines[:3]] == [str(files[0]), str(missing), str(files[1])]
    assert lines[1]["error"]["type"] == "InvalidInputError"
    assert str(missing) in lines[1]["error"]["message"]
    assert "error" in lines[-1] and "1 of 3 inputs" in lines[-1]["error"]["message"]
    with Archive.open(archive_dir, readonly=True) as archive:
        assert {i.source is None for i in archive.list()} == {True}
        assert len(list(archive.list())) == 2

    human = run_cli("put", "--archive", archive_dir, missing, files[2])
    assert human.code == 2
    assert f"mmarchive: error: cannot read {missing}: No such file or directory" in human.stderr
    assert str(files[2]) in human.text  # the other file is stored and reported


def test_file_vanishing_after_the_check_is_reported_in_order(archive_dir: Path, files: list[Path],
                                                             tmp_path: Path, mm: InProcess,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A path that passes the up-front check but fails inside put_many is reported, the rest stored."""
    vanished = tmp_path / "vanished"

    def no_check(path: Path, name: str) -> put_cmd._Input:
        return put_cmd._Input(name, PutItem(source=path, name=name))

    monkeypatch.setattr(put_cmd, "_check_file", no_check)
    result = mm("put", "--archive", archive_dir, "--json", files[0], vanished, files[1], files[2])
    assert result.code == 2
    lines = result.json_lines()
    assert [_source(line) for line in lines[:4]] == \
        [str(files[0]), str(vanished), str(files[1]), str(files[2])]
    assert "vanished" in lines[1]["error"]["message"]
    with Archive.open(archive_dir, readonly=True) as archive:
        assert len(list(archive.list())) == 3


def test_second_writer_exits_4_while_readers_still_work(archive_dir: Path, files: list[Path]) -> None:
    stored = run_cli("put", "--archive", archive_dir, "--json", files[0])
    oid = stored.json_lines()[0]["id"]
    with Archive.open(archive_dir):  # this process holds the writer lock
        for args in (["put", files[1]], ["rm", oid], ["gc"], ["reindex"]):
            result = run_cli(*args, "--archive", archive_dir)
            assert result.code == 4, (args, result.stderr)
            assert "mmarchive: error: " in result.stderr and "being written" in result.stderr
        locked_json = run_cli("put", "--archive", archive_dir, "--json", files[1])
        assert locked_json.json_lines()[0]["error"]["type"] == "ArchiveLockedError"
        for args in (["ls"], ["stat"], ["stat", oid], ["get", oid], ["verify"]):
            result = run_cli(*args, "--archive", archive_dir)
            assert result.code == 0, (args, result.stderr)
    assert run_cli("put", "--archive", archive_dir, files[1]).code == 0
