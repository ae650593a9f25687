"""The audit log: durable ordered appends, the hash chain across monthly files, concurrent appenders in
several processes, SIGKILLed appenders (torn tails cut, acknowledged lines kept), tamper detection."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mmarchive.errors import IntegrityError, InvalidInputError
from mmarchive.lifecycle.audit import GENESIS, AuditEntry, AuditLog, line_hash

#: A process appending to the audit log of ARCHIVE: ``TAG COUNT MODE``; COUNT -1 appends until killed.
#: Prints ``ready``, then ``SEQ I`` for each entry once the append holding it returned. MODE ``slow``
#: writes each append in 16-byte pieces with pauses, so that a kill often lands inside a line.
CHILD = r"""
import os, sys, time
from mmarchive.lifecycle import appendlog
from mmarchive.lifecycle.audit import AuditEntry, AuditLog

archive, tag, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode == "slow":
    def write_all(fd, data):
        for i in range(0, len(data), 16):
            os.write(fd, data[i:i + 16])
            time.sleep(0.0002)
    appendlog.write_all = write_all
log = AuditLog(archive)
print("ready", flush=True)
i = 0
while count < 0 or i < count:
    n = 1 if count >= 0 else 1 + i % 3
    batch = [AuditEntry("test.append", "tester", f"{tag}-{i + k}", details={"tag": tag, "i": i + k})
             for k in range(n)]
    for record in log.append_many(batch):
        print(record.seq, record.details["i"], flush=True)
    i += n
"""


def start_child(archive: Path, tag: str, count: int, mode: str = "fast") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(archive), tag, str(count), mode],
                            stdout=subprocess.PIPE, text=True)


class Clock:
    """A settable clock for the log."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def entry(i: int, *, action: str = "test.append", tenant: str | None = "t1", subject: str = "s",
          reason: str = "") -> AuditEntry:
    return AuditEntry(action, "tester", subject, reason, tenant, {"i": i})


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path) as audit:
        yield audit


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


# -- appending and reading --------------------------------------------------------------------------


def test_append_writes_one_chained_line_per_entry(tmp_path: Path, log: AuditLog) -> None:
    assert log.files() == [] and list(log.entries()) == [] and log.head() == (0, GENESIS)
    first = log.append(AuditEntry("hold.add", "alice", "study:1.2.3", "litigation 42", "t1",
                                  {"hold": "h-00000001"}))
    assert first.seq == 1 and first.prev == GENESIS and first.time.tzinfo is not None
    records = log.append_many([entry(i) for i in range(5)])
    assert [r.seq for r in records] == [2, 3, 4, 5, 6]
    [name] = log.files()
    assert name == f"audit-{first.time:%Y-%m}.jsonl"
    lines = lines_of(tmp_path / "audit" / name)
    assert len(lines) == 6
    d = json.loads(lines[0])
    assert list(d) == ["seq", "time", "action", "actor", "tenant", "subject", "reason", "details", "prev"]
    assert d["time"].endswith("Z") and len(d["time"]) == len("2026-11-26T10:00:00.123456Z")
    assert (d["action"], d["actor"], d["subject"], d["reason"], d["tenant"]) == \
        ("hold.add", "alice", "study:1.2.3", "litigation 42", "t1")
    for before, after in itertools.pairwise(lines):
        assert json.loads(after)["prev"] == line_hash(before)
    read = list(log.entries())
    assert [r.seq for r in read] == [1, 2, 3, 4, 5, 6]
    assert [(r.file, r.line) for r in read] == [(name, n) for n in range(1, 7)]
    assert read[0].to_json() == d
    assert log.head() == (6, line_hash(lines[-1]))
    assert log.verify().ok


def test_a_batch_is_one_write_and_one_fsync(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    log.append(entry(0))  # the file exists now
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    log.append_many([entry(i) for i in range(200)])
    assert len(synced) == 1
    log.append(entry(201))
    assert len(synced) == 2


def test_a_new_file_is_made_durable_in_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced_dirs: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            synced_dirs.append(path)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    with AuditLog(tmp_path) as log:
        log.append(entry(0))
    assert str(tmp_path) in synced_dirs  # audit/ created
    assert str(tmp_path / "audit") in synced_dirs  # its files created


def test_the_chain_runs_across_monthly_files(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    with AuditLog(tmp_path, clock=clock) as log:
        log.append_many([entry(0), entry(1)])
        clock.now = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
        log.append(entry(2))
        clock.now = datetime(2026, 11, 30, 23, 59, 58, tzinfo=UTC)  # the clock steps back a few seconds
        log.append(entry(3))
        clock.now = datetime(2027, 2, 3, tzinfo=UTC)
        log.append(entry(4))
        assert log.files() == ["audit-2026-11.jsonl", "audit-2026-12.jsonl", "audit-2027-02.jsonl"]
        assert [r.details["i"] for r in log.entries()] == [0, 1, 2, 3, 4]
        december = lines_of(tmp_path / "audit" / "audit-2026-12.jsonl")
        assert len(december) == 2  # the stepped-back entry went to the newest file, not back into November
        assert json.loads(december[0])["prev"] == line_hash(lines_of(tmp_path / "audit" /
                                                                     "audit-2026-11.jsonl")[-1])
        report = log.verify()
        assert report.ok and report.files == 3 and report.lines == 5 and report.head_seq == 5
        assert [r.details["i"] for r in log.entries(since=datetime(2026, 12, 1, tzinfo=UTC))] == [2, 4]
        # the stepped-back entry is found in December's file
        since = datetime(2026, 11, 30, 23, 59, 58, tzinfo=UTC)
        assert [r.details["i"] for r in log.entries(since=since)] == [0, 1, 2, 3, 4]
        until = datetime(2026, 12, 1, tzinfo=UTC)
        assert [r.details["i"] for r in log.entries(until=until)] == [0, 1, 3]


def test_filters(log: AuditLog) -> None:
    log.append(entry(0, action="hold.add", subject="study:1.2.3"))
    log.append(entry(1, action="hold.release", subject="study:1.2.3", tenant="t2"))
    log.append(entry(2, action="holdings.x", subject="p1"))
    log.append(entry(3, action="object.expire", subject="ab" * 32, tenant=None))

    def picked(**kw: object) -> list[int]:
        return [r.details["i"] for r in log.entries(**kw)]  # type: ignore[arg-type]

    assert picked(action="hold") == [0, 1]
    assert picked(action="hold.add") == [0]
    assert picked(tenant="t2") == [1]
    assert picked(subject="study:1.2.3") == [0, 1]
    assert picked(subject="ab" * 32, action="object") == [3]
    now = datetime.now(UTC)
    assert picked(since=now + timedelta(minutes=5)) == []
    assert picked(until=now - timedelta(minutes=5)) == []
    assert picked(since=now - timedelta(minutes=5), until=now + timedelta(minutes=5)) == [0, 1, 2, 3]
    naive = datetime.now() - timedelta(days=2)  # naive: taken as UTC
    assert picked(since=naive) == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", [
    AuditEntry("Hold Add", "alice", "x"),
    AuditEntry("", "alice", "x"),
    AuditEntry("hold.add", "", "x"),
    AuditEntry("hold.add", "alice", "x", tenant="no/slash"),
    AuditEntry("hold.add", "alice", "x", details={"when": datetime.now()}),
])
def test_invalid_entries_are_refused_and_nothing_is_written(log: AuditLog, bad: AuditEntry) -> None:
    with pytest.raises(InvalidInputError):
        log.append_many([entry(0), bad])
    assert list(log.entries()) == []


def test_threads_and_handles_of_one_process_append_without_loss(tmp_path: Path) -> None:
    logs = [AuditLog(tmp_path), AuditLog(tmp_path)]  # two handles: two lock descriptors

    def work(log: AuditLog, tag: int) -> None:
        for i in range(60):
            log.append(AuditEntry("test.append", "tester", f"{tag}", details={"tag": tag, "i": i}))

    threads = [threading.Thread(target=work, args=(logs[t % 2], t)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = logs[0].verify()
    assert report.ok and report.lines == 240
    for tag in range(4):
        assert [r.details["i"] for r in logs[0].entries(subject=str(tag))] == list(range(60))
    for log in logs:
        log.close()


# -- several processes, crashes ----------------------------------------------------------------------


def test_two_processes_appending_at_once_keep_one_unbroken_chain(tmp_path: Path) -> None:
    children = [start_child(tmp_path, tag, 250) for tag in ("a", "b")]
    outputs = [c.communicate(timeout=60)[0] for c in children]
    assert [c.returncode for c in children] == [0, 0]
    log = AuditLog(tmp_path)
    report = log.verify()
    assert report.ok, report.first_break
    assert report.lines == 500 and report.head_seq == 500
    records = list(log.entries())
    assert [r.seq for r in records] == list(range(1, 501))
    for tag, out in zip(("a", "b"), outputs, strict=True):
        mine = [r for r in records if r.details["tag"] == tag]
        assert [r.details["i"] for r in mine] == list(range(250))
        acked = {int(s): int(i) for s, i in (line.split() for line in out.splitlines()[1:])}
        assert acked == {r.seq: r.details["i"] for r in mine}  # each process got the seq it was given
    tags = [r.details["tag"] for r in records]
    assert tags.count("a") == tags.count("b") == 250


def _kill_at_random(archive: Path, tag: str, rng: random.Random) -> dict[int, int]:
    """Start a slow appender, SIGKILL it at a random moment; the (seq -> i) it acknowledged."""
    child = start_child(archive, tag, -1, "slow")
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.02, 0.25))
    child.kill()
    out = child.communicate(timeout=30)[0]
    acked: dict[int, int] = {}
    for line in out.splitlines(keepends=True):
        if line.endswith("\n"):
            seq, i = line.split()
            acked[int(seq)] = int(i)
    return acked


def test_sigkilled_appenders_never_break_the_chain_nor_lose_an_acknowledged_line(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    cut = 0
    total_acked = 0
    for round_ in range(10):
        tag = f"r{round_}"
        acked = _kill_at_random(tmp_path, tag, rng)
        total_acked += len(acked)
        log = AuditLog(tmp_path)
        if round_ % 2 == 0:  # else the next appender's own check cuts the torn tail
            cut += log.recover()
        report = log.verify()
        assert report.ok, report.first_break
        assert report.torn_tail is None or round_ % 2 == 1
        mine = {r.seq: r.details["i"] for r in log.entries() if r.details["tag"] == tag}
        assert acked.items() <= mine.items(), "an acknowledged line was lost"
        assert sorted(mine.values()) == list(range(len(mine)))  # the lines of the round, none skipped
        assert [r.seq for r in log.entries()] == list(range(1, report.lines + 1))
        log.close()
    with AuditLog(tmp_path) as log:
        cut += log.recover()
        assert log.verify().ok and log.verify().torn_tail is None
    assert total_acked > 20
    kept = list((tmp_path / "audit").glob("audit-*.jsonl.torn-*"))  # cut by us or by the next appender
    assert len(kept) >= cut
    assert kept, "no kill landed inside a line: the torn-tail path was not exercised"


def test_a_torn_tail_is_cut_on_open_kept_aside_and_the_chain_goes_on(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    with AuditLog(tmp_path) as log:
        log.append_many([entry(0), entry(1)])
    [path] = (tmp_path / "audit").glob("audit-*.jsonl")
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"seq":3,"time":"2026-')  # an append cut short by a crash
    with AuditLog(tmp_path) as log:
        assert list(log.entries())[-1].seq == 2  # readers skip the unterminated line
        assert log.verify().torn_tail is not None and log.verify().ok
        assert log.recover() == 1 and log.torn_lines_cut == 1
        assert path.read_bytes() == good
        assert (path.parent / f"{path.name}.torn-{len(good)}").read_bytes() == b'{"seq":3,"time":"2026-'
        assert "torn" in caplog.text
        log.append(entry(2))
        assert [r.seq for r in log.entries()] == [1, 2, 3]
        assert log.verify().ok and log.verify().torn_tail is None


def test_a_live_writer_cuts_a_tail_another_process_tore(tmp_path: Path) -> None:
    with AuditLog(tmp_path) as log:
        log.append(entry(0))
        [path] = (tmp_path / "audit").glob("audit-*.jsonl")
        with open(path, "ab") as f:
            f.write(b"\x00" * 40 + b"\n" + b"\x00" * 10)  # zeros a power loss left, one line terminated
        log.append(entry(1))
        assert log.torn_lines_cut == 2
        assert [r.details["i"] for r in log.entries()] == [0, 1]
        assert log.verify().ok


# -- tampering -------------------------------------------------------------------------------------


def _two_months(tmp_path: Path) -> AuditLog:
    clock = Clock(datetime(2026, 10, 5, tzinfo=UTC))
    log = AuditLog(tmp_path, clock=clock)
    log.append_many([entry(i, reason=f"reason {i}") for i in range(4)])
    clock.now = datetime(2026, 11, 5, tzinfo=UTC)
    log.append_many([entry(i, reason=f"reason {i}") for i in range(4, 8)])
    return log


def _edit(path: Path, number: int, change: Callable[[bytes], bytes | None]) -> None:
    lines = lines_of(path)
    new = change(lines[number - 1])
    if new is None:
        del lines[number - 1]
    else:
        lines[number - 1] = new
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_a_changed_line_is_named_by_verify(tmp_path: Path) -> None:
    log = _two_months(tmp_path)
    assert log.verify().ok
    nov = tmp_path / "audit" / "audit-2026-11.jsonl"
    _edit(nov, 2, lambda line: line.replace(b"reason 5", b"reason X"))
    broken = log.verify().first_break
    assert broken is not None and (broken.file, broken.line) == ("audit-2026-11.jsonl", 2)
    assert "changed" in broken.message


def test_a_changed_last_line_of_a_month_is_found_across_the_file_boundary(tmp_path: Path) -> None:
    log = _two_months(tmp_path)
    _edit(tmp_path / "audit" / "audit-2026-10.jsonl", 4, lambda line: line.replace(b'"t1"', b'"t9"'))
    broken = log.verify().first_break
    assert broken is not None and (broken.file, broken.line) == ("audit-2026-10.jsonl", 4)
    assert "audit-2026-11.jsonl line 1" in broken.message


def test_removed_inserted_and_garbled_lines_are_found(tmp_path: Path) -> None:
    log = _two_months(tmp_path)
    oct_ = tmp_path / "audit" / "audit-2026-10.jsonl"
    original = oct_.read_bytes()
    _edit(oct_, 2, lambda line: None)
    broken = log.verify().first_break
    assert broken is not None and (broken.file, broken.line) == ("audit-2026-10.jsonl", 2)
    assert "seq 3 follows seq 1" in broken.message

    oct_.write_bytes(original)
    _edit(oct_, 3, lambda line: b"not json")
    broken = log.verify().first_break
    assert broken is not None and (broken.file, broken.line) == ("audit-2026-10.jsonl", 3)
    with pytest.raises(IntegrityError, match=r"audit-2026-10\.jsonl line 3"):
        list(log.entries())

    oct_.unlink()  # a whole month removed
    broken = log.verify().first_break
    assert broken is not None and (broken.file, broken.line) == ("audit-2026-11.jsonl", 1)
    assert "starts at seq 5" in broken.message
