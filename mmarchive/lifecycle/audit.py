"""The archive's audit log: every lifecycle action, deletion and hold change, append-only and hash-chained.

The log is a primary record kept beside the packs, not in the index: ``ARCHIVE/audit/audit-YYYY-MM.jsonl``,
one file per month (UTC), one JSON object per line with what happened (``action``), when (``time``, UTC
to the microsecond), who or which rule (``actor``: a user name or ``rule:NAME``), why (``reason``), to what
(``tenant``, ``subject``, ``details``), its place in the log (``seq``, from 1, no gaps) and the BLAKE3 of
the line before it (``prev``; the first line of the log has 64 zeros), chaining across the monthly files,
so :meth:`AuditLog.verify` finds any changed, removed or inserted line but the last. Appends from several
processes are serialized by an exclusive ``flock`` on ``ARCHIVE/audit/lock``; an append returns once its
lines are fsynced; a batch (:meth:`AuditLog.append_many`) costs one fsync. Before each append the writer
checks the end of the log under the lock and cuts off a line torn by a crash (see
:mod:`mmarchive.lifecycle.appendlog`). Readers take no lock.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import blake3

from mmarchive.errors import IntegrityError, InvalidInputError, StorageError
from mmarchive.index.schema import check_tenant
from mmarchive.lifecycle.appendlog import (
    append_durably,
    complete_lines,
    cut_torn_tail,
    flocked,
    last_line,
    make_directory,
    open_for_append,
    storage_error,
)

#: The audit log's directory, inside the archive directory.
AUDIT_DIR = "audit"
#: The file whose ``flock`` serializes appends (it holds nothing).
LOCK_FILE = "lock"
#: ``prev`` of the first line of the log.
GENESIS = "0" * 64
#: The keys of a line, in the order they are written.
LINE_KEYS = ("seq", "time", "action", "actor", "tenant", "subject", "reason", "details", "prev")

_FILE_RE = re.compile(r"^audit-(\d{4})-(\d{2})\.jsonl$")
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_TEXT = 4096


def line_hash(line: bytes) -> str:
    """The hash the next line records as its ``prev``: BLAKE3-256 of the line without its newline."""
    return str(blake3.blake3(line).hexdigest())


def format_time(t: datetime) -> str:
    """UTC ISO 8601 with microseconds: ``2026-11-26T10:04:05.123456Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def current_user() -> str:
    """The OS login name (the default actor of a command run by a person)."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = ""
    return name or f"uid:{os.getuid()}"


def file_name(year: int, month: int) -> str:
    return f"audit-{year:04d}-{month:02d}.jsonl"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a caller appends; the log adds ``seq``, ``time`` and ``prev``."""

    #: What happened: dotted lowercase words (``hold.add``, ``object.expire``, ``delete.refused``).
    action: str
    #: Who: a user name, or ``rule:NAME`` for what a lifecycle rule did.
    actor: str
    #: To what: an object id, a pack name, ``patient:ID``, ``study:UID``.
    subject: str
    reason: str = ""
    tenant: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One line of the log, with where it is: ``file`` name and 1-based ``line`` (0 in the records
    :meth:`AuditLog.append` returns: counting a file's lines would cost a read of it)."""

    seq: int
    time: datetime
    action: str
    actor: str
    tenant: str | None
    subject: str
    reason: str
    details: Mapping[str, Any]
    prev: str
    file: str
    line: int

    def to_json(self) -> dict[str, Any]:
        """The line's fields as stored (``time`` as written: UTC ISO 8601)."""
        return {"seq": self.seq, "time": format_time(self.time), "action": self.action, "actor": self.actor,
                "tenant": self.tenant, "subject": self.subject, "reason": self.reason,
                "details": dict(self.details), "prev": self.prev}


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where :meth:`AuditLog.verify` found the log altered: the first suspect line and what is wrong."""

    file: str
    line: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass(frozen=True, slots=True)
class AuditVerifyReport:
    files: int
    lines: int
    #: The first break of the chain, or None when it is whole.
    first_break: ChainBreak | None
    #: An unterminated last line (an append in progress or cut short by a crash; the next append cuts it).
    torn_tail: ChainBreak | None
    #: ``seq`` and hash of the last line (0 and :data:`GENESIS` for an empty log); keep it elsewhere to
    #: detect a later removal of the log's last lines, which the chain itself cannot show.
    head_seq: int
    head_hash: str

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "lines": self.lines, "ok": self.ok,
                "break": self.first_break.to_json() if self.first_break else None,
                "torn_tail": self.torn_tail.to_json() if self.torn_tail else None,
                "head": {"seq": self.head_seq, "hash": self.head_hash}}


@dataclass(frozen=True, slots=True)
class _Tail:
    """The end of the log as this writer last saw it under the lock."""

    latest: str | None  # the newest file's name
    latest_size: int
    seq: int
    hash: str


class AuditLog:
    """The audit log of the archive at ``archive_dir``; safe to share between threads.

    Creating it touches nothing on disk; the directory and files are made by the first append. ``clock``
    (for tests) returns the current time, timezone-aware.
    """

    def __init__(self, archive_dir: str | os.PathLike[str], *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.directory = Path(archive_dir) / AUDIT_DIR
        self._clock = clock if clock is not None else _utc_now
        self._mutex = threading.Lock()
        self._lock_fd = -1
        self._tail: _Tail | None = None
        #: Lines this handle cut off the end of the log because a crash had torn them.
        self.torn_lines_cut = 0

    # -- writing ----------------------------------------------------------------------------------

    def append(self, entry: AuditEntry) -> AuditRecord:
        """Append one entry; returns once it is durable."""
        return self.append_many([entry])[0]

    def append_many(self, entries: Iterable[AuditEntry]) -> list[AuditRecord]:
        """Append entries in order, all with the same time, with one write and one fsync."""
        checked = [_check_entry(e) for e in entries]
        if not checked:
            return []
        with self._mutex, flocked(self._lock()):
            tail = self._sync_tail()
            now = self._clock()
            if now.tzinfo is None:
                raise InvalidInputError("the audit clock must return timezone-aware times")
            now = now.astimezone(UTC)
            name = file_name(now.year, now.month)
            if tail.latest is not None and tail.latest > name:  # the clock went back across a month
                name = tail.latest
            seq, prev = tail.seq, tail.hash
            lines: list[bytes] = []
            records: list[AuditRecord] = []
            for entry in checked:
                seq += 1
                body = {"seq": seq, "time": format_time(now), "action": entry.action, "actor": entry.actor,
                        "tenant": entry.tenant, "subject": entry.subject, "reason": entry.reason,
                        "details": dict(entry.details), "prev": prev}
                line = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
                lines.append(line)
                records.append(AuditRecord(seq, now, entry.action, entry.actor, entry.tenant, entry.subject,
                                           entry.reason, dict(entry.details), prev, name, 0))
                prev = line_hash(line)
            path = self.directory / name
            fd, _created = open_for_append(path)
            try:
                size = append_durably(fd, b"".join(line + b"\n" for line in lines), path)
            finally:
                os.close(fd)
            self._tail = _Tail(name, size, seq, prev)
        return records

    def recover(self) -> int:
        """Check the end of the log under the lock now, cutting a torn last line; return lines cut.

        Appends do this themselves; call it to repair (and learn about) a crash's leftovers up front.
        """
        if not self.directory.is_dir():
            return 0
        before = self.torn_lines_cut
        with self._mutex, flocked(self._lock()):
            self._tail = None
            self._sync_tail()
        return self.torn_lines_cut - before

    def close(self) -> None:
        with self._mutex:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
            self._tail = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _lock(self) -> int:
        if self._lock_fd < 0:
            make_directory(self.directory)
            fd, _created = open_for_append(self.directory / LOCK_FILE)
            self._lock_fd = fd
        return self._lock_fd

    def _sync_tail(self) -> _Tail:
        """The end of the log, re-read (and a torn line cut) unless it is as this handle left it."""
        names = self.files()
        if not names:
            self._tail = _Tail(None, 0, 0, GENESIS)
            return self._tail
        latest = names[-1]
        latest_size = _size(self.directory / latest)
        if self._tail is not None and self._tail.latest == latest and self._tail.latest_size == latest_size:
            return self._tail
        seq, last = 0, GENESIS
        for name in reversed(names):
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                raise storage_error("open", path, e) from e
            try:
                self.torn_lines_cut += cut_torn_tail(fd, path, _valid_line)
                size = os.fstat(fd).st_size
                if name == latest:
                    latest_size = size
                if size == 0:
                    continue
                _start, line = last_line(fd, size)
            finally:
                os.close(fd)
            seq, last = int(json.loads(line)["seq"]), line_hash(line)
            break
        self._tail = _Tail(latest, latest_size, seq, last)
        return self._tail

    # -- reading ----------------------------------------------------------------------------------

    def files(self) -> list[str]:
        """The names of the log's monthly files, oldest first."""
        try:
            names = [e.name for e in os.scandir(self.directory) if _FILE_RE.match(e.name)]
        except FileNotFoundError:
            return []
        except OSError as e:
            raise storage_error("list", self.directory, e) from e
        return sorted(names)

    def entries(self, *, since: datetime | None = None, until: datetime | None = None,
                tenant: str | None = None, action: str | None = None,
                subject: str | None = None) -> Iterator[AuditRecord]:
        """The log's entries in order, read lazily file by file, filtered.

        ``since`` is inclusive, ``until`` exclusive (timezone-aware; naive means UTC); ``action`` matches
        itself and the actions below it (``hold`` matches ``hold.add``); ``tenant`` and ``subject`` match
        exactly. A damaged line raises :class:`IntegrityError` naming the file and line.
        """
        since_utc = _utc(since) if since is not None else None
        until_utc = _utc(until) if until is not None else None
        for name in self.files():
            if since_utc is not None and _month_end(name) <= since_utc:
                continue  # a file holds no time after its month
            for record in self._read(name):
                if since_utc is not None and record.time < since_utc:
                    continue
                if until_utc is not None and record.time >= until_utc:
                    continue
                if tenant is not None and record.tenant != tenant:
                    continue
                if action is not None and record.action != action and \
                        not record.action.startswith(action + "."):
                    continue
                if subject is not None and record.subject != subject:
                    continue
                yield record

    def head(self) -> tuple[int, str]:
        """``seq`` and hash of the log's last complete line (0 and :data:`GENESIS` when empty)."""
        for name in reversed(self.files()):
            last: bytes | None = None
            for _end, line in complete_lines(self.directory / name):
                last = line
            if last is not None:
                return int(_parse(last, name, 0)["seq"]), line_hash(last)
        return 0, GENESIS

    def verify(self) -> AuditVerifyReport:
        """Walk the whole chain; report the first break (file and line) and an unterminated tail."""
        names = self.files()
        prev, seq, lines = GENESIS, 0, 0
        where: tuple[str, int] | None = None  # the previous line
        torn: ChainBreak | None = None
        for i, name in enumerate(names):
            path = self.directory / name
            for number, line, terminated in _raw_lines(path):
                if not terminated:
                    if i == len(names) - 1:
                        torn = ChainBreak(name, number, "the last line is unterminated: an append in "
                                                        "progress, or cut short by a crash (the next append "
                                                        "cuts it)")
                        break
                    return self._broken(names, lines, name, number,
                                        "the line is unterminated but later files follow it", seq, prev)
                try:
                    record = _parse(line, name, number)
                except IntegrityError as e:
                    return self._broken(names, lines, name, number, str(e), seq, prev)
                if record["seq"] != seq + 1:
                    if seq == 0:
                        message = (f"the log starts at seq {record['seq']}, not 1: its first lines or "
                                   "files were removed")
                    else:
                        message = (f"seq {record['seq']} follows seq {seq}: lines were removed or inserted "
                                   "before this one, or its seq was changed")
                    return self._broken(names, lines, name, number, message, seq, prev)
                if record["prev"] != prev:
                    if where is None:
                        return self._broken(names, lines, name, number,
                                            "the first line of the log does not start the chain (its prev is "
                                            "not 64 zeros)", seq, prev)
                    return self._broken(
                        names, lines, where[0], where[1],
                        f"the line was changed: the next line ({name} line {number}) records hash "
                        f"{record['prev']} for it, but it hashes to {prev} (or the next line's prev was "
                        "changed)", seq, prev)
                if format_time(_parse_time(record["time"], name, number))[:7] > _file_month(name):
                    return self._broken(names, lines, name, number,
                                        f"its time {record['time']} is after the month of its file",
                                        seq, prev)
                prev, seq, lines = line_hash(line), record["seq"], lines + 1
                where = (name, number)
        return AuditVerifyReport(len(names), lines, None, torn, seq, prev)

    @staticmethod
    def _broken(names: list[str], lines: int, name: str, number: int, message: str, seq: int,
                prev: str) -> AuditVerifyReport:
        return AuditVerifyReport(len(names), lines, ChainBreak(name, number, message), None, seq, prev)

    def _read(self, name: str) -> Iterator[AuditRecord]:
        for number, (_end, line) in enumerate(complete_lines(self.directory / name), 1):
            d = _parse(line, name, number)
            yield AuditRecord(d["seq"], _parse_time(d["time"], name, number), d["action"], d["actor"],
                              d["tenant"], d["subject"], d["reason"], d["details"], d["prev"], name, number)


# -- helpers of this module -------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _file_month(name: str) -> str:
    m = _FILE_RE.match(name)
    assert m is not None
    return f"{m.group(1)}-{m.group(2)}"


def _month_end(name: str) -> datetime:
    """The first instant after the month of file ``name``."""
    m = _FILE_RE.match(name)
    assert m is not None
    year, month = int(m.group(1)), int(m.group(2))
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as e:
        raise storage_error("read", path, e) from e


def _check_text(what: str, value: object, *, required: bool) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"audit {what} must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise InvalidInputError(f"audit {what} is required")
    if len(value) > _MAX_TEXT:
        raise InvalidInputError(f"audit {what} is longer than {_MAX_TEXT} characters")
    return value


def _check_entry(entry: AuditEntry) -> AuditEntry:
    if not isinstance(entry.action, str) or not _ACTION_RE.match(entry.action):
        raise InvalidInputError(f"audit action {entry.action!r} must be dotted lowercase words, such as "
                                "'hold.add'")
    _check_text("actor", entry.actor, required=True)
    _check_text("subject", entry.subject, required=False)
    _check_text("reason", entry.reason, required=False)
    if entry.tenant is not None:
        check_tenant(entry.tenant)
    try:
        json.dumps(dict(entry.details), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"audit details of {entry.action} are not JSON: {e}") from e
    return entry


def _valid_line(line: bytes) -> bool:
    """Whether ``line`` can be a line of the log (the test a writer uses to cut torn tails)."""
    try:
        d = json.loads(line)
    except ValueError:
        return False
    return isinstance(d, dict) and isinstance(d.get("seq"), int) and isinstance(d.get("prev"), str)


def _parse(line: bytes, name: str, number: int) -> dict[str, Any]:
    try:
        d = json.loads(line)
    except ValueError:
        d = None
    if not isinstance(d, dict) or tuple(d) != LINE_KEYS or not isinstance(d["seq"], int) \
            or not isinstance(d["time"], str) or not isinstance(d["action"], str) \
            or not isinstance(d["actor"], str) or not isinstance(d["subject"], str) \
            or not isinstance(d["reason"], str) or not isinstance(d["details"], dict) \
            or not (d["tenant"] is None or isinstance(d["tenant"], str)) \
            or not isinstance(d["prev"], str) or not _HASH_RE.match(d["prev"]):
        raise IntegrityError(f"audit log {name} line {number} is not an audit entry; check the log with "
                             "`mmarchive audit --verify`")
    return d


def _parse_time(text: str, name: str, number: int) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise IntegrityError(f"audit log {name} line {number} has no valid UTC time ({text!r})")
    return t.astimezone(UTC)


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """Every line of ``path``: 1-based number, bytes without newline, whether it had its newline."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (a generator; closed below)
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror or e}") from e
    with f:
        for number, raw in enumerate(f, 1):
            if raw.endswith(b"\n"):
                yield number, raw[:-1], True
            else:
                yield number, raw, False
