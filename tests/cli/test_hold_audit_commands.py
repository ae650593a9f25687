"""``mmarchive hold add|release|ls`` and ``mmarchive audit``: round trips with --json, exit codes, and
working beside another process's writer lock without opening the index."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mmarchive.archive import Archive
from mmarchive.cli.main import main
from tests.cli.conftest import InProcess, run_cli

OID = "3f" * 32


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    """An empty archive, made in this process (the CLI's start-up is slow; these commands need no data)."""
    path = tmp_path / "archive"
    Archive.create(path).close()
    return path


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(getpass, "getuser", lambda: "carol")
    return "carol"


def test_hold_round_trip_with_json(archive_dir: Path, mm: InProcess, user: str) -> None:
    added = mm("hold", "add", "--archive", archive_dir, "--tenant", "t1", "--study", "1.2.3",
               "--reason", "litigation 42", "--user", "alice", "--json")
    assert added.code == 0, added.stderr
    [hold] = added.json_lines()
    assert (hold["tenant"], hold["scope"], hold["value"], hold["reason"], hold["actor"], hold["active"]) == \
        ("t1", "study", "1.2.3", "litigation 42", "alice", True)
    assert hold["id"].startswith("h-") and hold["added"].endswith("Z")
    other = mm("hold", "add", "--archive", archive_dir, "--tenant", "t2", "--object", OID,
               "--reason", "case 7", "--json").json_lines()[0]
    assert other["actor"] == user  # the login name by default

    listed = mm("hold", "ls", "--archive", archive_dir, "--json")
    assert [h["id"] for h in listed.json_lines()] == [hold["id"], other["id"]]
    assert [h["id"] for h in mm("hold", "ls", "--archive", archive_dir, "--tenant", "t2",
                                "--json").json_lines()] == [other["id"]]

    released = mm("hold", "release", "--archive", archive_dir, hold["id"], "--reason", "settled", "--json")
    assert released.code == 0, released.stderr
    [after] = released.json_lines()
    assert after["active"] is False and after["released_by"] == user and after["release_reason"] == "settled"
    active = mm("hold", "ls", "--archive", archive_dir, "--json").json_lines()
    assert [h["id"] for h in active] == [other["id"]]
    everything = mm("hold", "ls", "--archive", archive_dir, "--all", "--json").json_lines()
    assert [(h["id"], h["active"]) for h in everything] == [(hold["id"], False), (other["id"], True)]

    audit = mm("audit", "--archive", archive_dir, "--json")
    assert audit.code == 0
    lines = audit.json_lines()
    assert [(e["seq"], e["action"], e["actor"], e["tenant"], e["subject"], e["reason"]) for e in lines] == [
        (1, "hold.add", "alice", "t1", "study:1.2.3", "litigation 42"),
        (2, "hold.add", user, "t2", OID, "case 7"),
        (3, "hold.release", user, "t1", "study:1.2.3", "settled"),
    ]
    assert lines[2]["details"]["hold"] == hold["id"]


def test_human_output(archive_dir: Path, mm: InProcess, user: str) -> None:
    added = mm("hold", "add", "--archive", archive_dir, "--tenant", "t1", "--patient", "P-1",
               "--reason", "case")
    assert added.code == 0
    hold_id = added.text.split()[0]
    assert added.text == f"{hold_id}  added: tenant t1, patient P-1\n"
    listing = mm("hold", "ls", "--archive", archive_dir)
    assert listing.text.split("\n")[0].split() == ["ID", "TENANT", "SCOPE", "VALUE", "ADDED", "(UTC)", "BY",
                                                   "REASON"]
    assert hold_id in listing.text and "carol" in listing.text
    released = mm("hold", "release", "--archive", archive_dir, hold_id, "--reason", "done")
    assert released.text == f"{hold_id}  released: tenant t1, patient P-1\n"
    assert mm("hold", "ls", "--archive", archive_dir).stderr == "mmarchive: no active legal holds\n"
    assert "RELEASED" in mm("hold", "ls", "--archive", archive_dir, "--all").text
    audit = mm("audit", "--archive", archive_dir)
    assert "hold.add" in audit.text and "hold.release" in audit.text and "patient:P-1" in audit.text
    verified = mm("audit", "--archive", archive_dir, "--verify")
    assert verified.code == 0 and "intact" in verified.text


def test_audit_filters(archive_dir: Path, mm: InProcess, user: str) -> None:
    for tenant, scope, value in (("t1", "--patient", "P-1"), ("t2", "--patient", "P-1"),
                                 ("t1", "--study", "1.2")):
        added = mm("hold", "add", "--archive", archive_dir, "--tenant", tenant, scope, value, "--reason", "r")
        assert added.code == 0
    hold_id = mm("hold", "ls", "--archive", archive_dir, "--json").json_lines()[0]["id"]
    assert mm("hold", "release", "--archive", archive_dir, hold_id, "--reason", "r").code == 0

    def seqs(*args: str) -> list[int]:
        result = mm("audit", "--archive", archive_dir, "--json", *args)
        assert result.code == 0, result.stderr
        return [e["seq"] for e in result.json_lines()]

    assert seqs() == [1, 2, 3, 4]
    assert seqs("--tenant", "t1") == [1, 3, 4]
    assert seqs("--action", "hold.release") == [4]
    assert seqs("--action", "hold") == [1, 2, 3, 4]
    assert seqs("--subject", "patient:P-1", "--tenant", "t2") == [2]
    today = datetime.now(UTC).date()
    assert seqs("--since", today.isoformat(), "--until", today.isoformat()) == [1, 2, 3, 4]
    assert seqs("--until", (today - timedelta(days=1)).isoformat()) == []
    assert seqs("--since", (today + timedelta(days=1)).isoformat()) == []
    assert seqs("--since", "2000-01-01T00:00:00+02:00") == [1, 2, 3, 4]
    assert mm("audit", "--archive", archive_dir, "--since", "yesterday").code == 2
    assert mm("audit", "--archive", archive_dir, "--verify", "--tenant", "t1").code == 2


def test_exit_codes(archive_dir: Path, tmp_path: Path, mm: InProcess, user: str) -> None:
    base = ("--archive", archive_dir)
    assert mm("hold", "add", *base, "--tenant", "t1", "--patient", "P").code == 2  # no --reason
    assert mm("hold", "add", *base, "--tenant", "t1", "--reason", "r").code == 2  # nothing to hold
    both = mm("hold", "add", *base, "--tenant", "t1", "--patient", "P", "--study", "1.2", "--reason", "r")
    assert both.code == 2
    assert mm("hold", "add", *base, "--patient", "P", "--reason", "r").code == 2  # no --tenant
    bad = mm("hold", "add", *base, "--tenant", "t1", "--object", "xyz", "--reason", "r", "--json")
    assert bad.code == 2 and bad.json_lines()[0]["error"]["type"] == "InvalidInputError"
    assert mm("hold", "add", *base, "--tenant", "t1", "--patient", "P", "--reason", " ").code == 2
    assert mm("hold").code == 2
    unknown = mm("hold", "release", *base, "h-00000000", "--reason", "r")
    assert unknown.code == 3 and "no legal hold 'h-00000000'" in unknown.stderr
    hold_id = mm("hold", "add", *base, "--tenant", "t1", "--patient", "P", "--reason", "r", "--json"
                 ).json_lines()[0]["id"]
    assert mm("hold", "release", *base, hold_id, "--reason", "r").code == 0
    again = mm("hold", "release", *base, hold_id, "--reason", "r", "--json")
    assert again.code == 2 and "already released" in again.json_lines()[0]["error"]["message"]
    for args in (["hold", "ls"], ["hold", "add", "--tenant", "t", "--patient", "P", "--reason", "r"],
                 ["audit"], ["audit", "--verify"]):
        missing = mm(*args, "--archive", tmp_path / "missing")
        assert missing.code == 3 and missing.stderr.startswith("mmarchive: error: no archive at "), args
    assert not (tmp_path / "missing").exists()


def test_audit_verify_names_a_tampered_line(archive_dir: Path, mm: InProcess, user: str) -> None:
    for reason in ("one", "two", "three"):
        assert mm("hold", "add", "--archive", archive_dir, "--tenant", "t1", "--patient", "P",
                  "--reason", reason).code == 0
    ok = mm("audit", "--archive", archive_dir, "--verify", "--json")
    assert ok.code == 0
    [report] = ok.json_lines()
    assert report["ok"] is True and report["lines"] == 3 and report["break"] is None
    [path] = (archive_dir / "audit").glob("audit-*.jsonl")
    path.write_bytes(path.read_bytes().replace(b'"two"', b'"TWO"'))
    broken = mm("audit", "--archive", archive_dir, "--verify", "--json")
    assert broken.code == 5
    report, error = broken.json_lines()
    assert report["ok"] is False and report["break"]["file"] == path.name and report["break"]["line"] == 2
    assert error["error"]["type"] == "IntegrityError"
    assert f"{path} line 2" in error["error"]["message"]
    human = mm("audit", "--archive", archive_dir, "--verify")
    assert human.code == 5 and f"mmarchive: error: the audit log is broken at {path} line 2" in human.stderr


def test_commands_work_beside_a_writer_and_never_open_the_index(archive_dir: Path, mm: InProcess,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with Archive.open(archive_dir):  # the writer lock is held (a second writer, even here, gets exit 4)
        added = run_cli("hold", "add", "--archive", archive_dir, "--tenant", "t1", "--patient", "P-1",
                        "--reason", "case", "--user", "dave", "--json")  # another process
        assert added.code == 0, added.stderr
        hold_id = added.json_lines()[0]["id"]
        for args in (["hold", "ls"], ["audit"], ["audit", "--verify"],
                     ["hold", "release", hold_id, "--reason", "done"]):
            result = mm(*args, "--archive", archive_dir)
            assert result.code == 0, (args, result.stderr)
        assert mm("rm", "--archive", archive_dir, OID).code == 4

    def no_index(*args: object, **kwargs: object) -> None:
        raise AssertionError("the index was opened")

    monkeypatch.setattr(Archive, "__init__", no_index)
    assert main(["hold", "add", "--archive", str(archive_dir), "--tenant", "t1", "--study", "1.2",
                 "--reason", "r", "--user", "u"]) == 0
    for args in (["hold", "ls"], ["audit"], ["audit", "--verify"]):
        assert main([*args, "--archive", str(archive_dir)]) == 0


def test_help(mm: InProcess) -> None:
    for args in (["hold", "add"], ["hold", "release"], ["hold", "ls"], ["audit"]):
        result = mm(*args, "--help")
        assert result.code == 0 and result.text.startswith(f"usage: mmarchive {' '.join(args)}")
        assert "--archive DIR" in result.text and "--json" in result.text
    assert "hold" in mm("--help").text and "audit" in mm("--help").text
