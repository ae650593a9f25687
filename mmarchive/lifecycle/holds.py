"""Legal holds: a patient, a study or an object of a tenant kept from expiry and deletion until released.

The holds are a primary record kept beside the packs, not in the index: ``ARCHIVE/lifecycle/holds.jsonl``,
an append-only log of events (a hold added, a hold released), one JSON object per line; the active holds
are its replay. :class:`HoldRegistry` keeps that replay in dictionaries keyed by (tenant, scope, value), so
:meth:`HoldRegistry.holds_for` costs three look-ups per object, and :meth:`HoldRegistry.refresh` reads only
what other processes appended since (one ``stat`` when nothing changed). Changes take an exclusive
``flock`` on the file, catch up with it, append one fsynced line and write the audit log: an add is written
before its audit entry, a release after its audit entry, so a crash in between errs towards keeping data.
:meth:`HoldRegistry.frozen` takes the shared lock, so that no hold can be added or released between a
check and the deletion it allows. Holds match :class:`~mmarchive.lifecycle.facts.ObjectFacts` only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from mmarchive.errors import (
    ArchiveStateError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RetentionError,
    StorageError,
)
from mmarchive.index.schema import check_tenant, parse_object_id
from mmarchive.lifecycle.appendlog import (
    append_durably,
    complete_lines,
    cut_torn_tail,
    flocked,
    make_directory,
    open_for_append,
    storage_error,
)
from mmarchive.lifecycle.audit import AuditEntry, AuditLog, format_time
from mmarchive.lifecycle.facts import ObjectFacts

#: The holds file, relative to the archive directory.
HOLDS_DIR = "lifecycle"
HOLDS_FILE = "holds.jsonl"
#: What a hold can name: a patient (by patient id), a study (by Study Instance UID), an object (by id).
SCOPES = ("patient", "study", "object")

_ID_RE = re.compile(r"^h-[0-9a-f]{8}$")
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MAX_VALUE = 64
_MAX_REASON = 2000

Key = tuple[str, str, str]  # (tenant, scope, normalized value)


@dataclass(frozen=True, slots=True)
class Hold:
    """One legal hold; ``released`` is None while it is active."""

    id: str
    tenant: str
    scope: str
    value: str
    reason: str
    actor: str
    added: datetime
    released: datetime | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released is None

    @property
    def subject(self) -> str:
        """The audit log's subject: ``patient:ID``, ``study:UID`` or the object id."""
        return self.value if self.scope == "object" else f"{self.scope}:{self.value}"

    def describe(self) -> str:
        """``study 1.2.3``, ``patient 12345``, ``object 3f...``."""
        return f"{self.scope} {self.value}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "scope": self.scope, "value": self.value,
                "reason": self.reason, "actor": self.actor, "added": format_time(self.added),
                "active": self.active,
                "released": format_time(self.released) if self.released is not None else None,
                "released_by": self.released_by, "release_reason": self.release_reason}


def normalize(scope: str, value: str) -> str:
    """The form a value is matched in: DICOM's padding (spaces, NULs) stripped; object ids lowercase."""
    value = value.strip(" \x00")
    return value.lower() if scope == "object" else value


def check_hold_value(scope: str, value: str) -> str:
    """``value`` normalized, or :class:`InvalidInputError` if it cannot name a ``scope``."""
    if scope not in SCOPES:
        raise InvalidInputError(f"hold scope {scope!r} is not one of {', '.join(SCOPES)}")
    if not isinstance(value, str):
        raise InvalidInputError(f"the {scope} of a hold must be a string")
    v = normalize(scope, value)
    if scope == "object":
        parse_object_id(v)
    elif not v or len(v) > _MAX_VALUE or not v.isprintable():
        raise InvalidInputError(f"{value!r} is not a {scope} {'id' if scope == 'patient' else 'UID'} (1-64 "
                                "printable characters)")
    elif scope == "study" and not _UID_RE.match(v):
        raise InvalidInputError(f"{value!r} is not a Study Instance UID (digits separated by dots)")
    return v


class HoldRegistry:
    """The legal holds of the archive at ``archive_dir``, replayed from its holds file.

    ``audit`` receives an entry for every add and release; a registry without one can only read.
    Safe to share between threads. ``clock`` (for tests) returns the current time, timezone-aware.
    """

    def __init__(self, archive_dir: str | os.PathLike[str], audit: AuditLog | None, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.path = Path(archive_dir) / HOLDS_DIR / HOLDS_FILE
        self.audit = audit
        self._clock = clock if clock is not None else _utc_now
        self._mutex = threading.RLock()
        self._fd = -1
        self._frozen = False
        self._holds: dict[str, Hold] = {}  # in the order they were added (the file's order)
        self._order: dict[str, int] = {}
        self._active: dict[Key, tuple[Hold, ...]] = {}
        self._offset = 0
        self._lines = 0
        #: Lines this handle cut off the end of the file because a crash had torn them.
        self.torn_lines_cut = 0
        self.refresh()

    # -- reading ----------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Apply the events other processes appended since the last look; return how many.

        Costs one ``stat`` when the file has not grown. Call it before acting on :meth:`holds_for`
        (or use :meth:`frozen`).
        """
        with self._mutex:
            try:
                size = os.stat(self.path).st_size
            except FileNotFoundError:
                size = 0
            except OSError as e:
                raise storage_error("read", self.path, e) from e
            if size == self._offset:
                return 0
            if size < self._offset:  # cut or replaced behind our back: replay from the start
                self._holds, self._order, self._active, self._offset, self._lines = {}, {}, {}, 0, 0
            applied = 0
            for end, line in complete_lines(self.path, self._offset):
                self._lines += 1
                self._apply(_parse_event(line, self.path, self._lines))
                self._offset = end
                applied += 1
            return applied

    def get(self, hold_id: str) -> Hold:
        """The hold ``hold_id``, active or released; :class:`NotFoundError` if there is none."""
        hold = self._holds.get(hold_id)
        if hold is None:
            raise NotFoundError(f"there is no legal hold {hold_id!r}; list them with "
                                "`mmarchive hold ls --all`")
        return hold

    def active(self, tenant: str | None = None) -> list[Hold]:
        """The active holds (of ``tenant``, or of all tenants), in the order they were added."""
        return [h for h in self.all(tenant) if h.active]

    def all(self, tenant: str | None = None) -> list[Hold]:
        """Every hold ever added (of ``tenant``, or of all tenants), released ones included, in order."""
        return [h for h in self._holds.values() if tenant is None or h.tenant == tenant]

    def holds_for(self, facts: ObjectFacts) -> list[Hold]:
        """The active holds on this object: on it, on its study, on its patient (of its tenant only)."""
        active = self._active
        found: list[Hold] = []
        for scope, value in (("object", facts.object_id), ("study", facts.study_uid),
                             ("patient", facts.patient_id)):
            if value:
                found.extend(active.get((facts.tenant, scope, normalize(scope, value)), ()))
        if len(found) > 1:
            found.sort(key=lambda h: self._order[h.id])
        return found

    def refusal(self, facts: ObjectFacts) -> RetentionError | None:
        """The error to refuse expiring or deleting this object with, or None if no hold is on it."""
        holds = self.holds_for(facts)
        if not holds:
            return None
        h = holds[0]
        more, what = "", "it with "
        if len(holds) > 1:
            more = f" and {len(holds) - 1} more ({', '.join(o.id for o in holds[1:])})"
            what = "them with "
        how = " and ".join(f"`mmarchive hold release {o.id}`" for o in holds)
        return RetentionError(
            f"object {facts.object_id} of tenant {facts.tenant} is under legal hold {h.id} ({h.describe()}, "
            f"added {h.added:%Y-%m-%d} by {h.actor}: {h.reason!r}){more}; release {what}{how} first")

    @contextmanager
    def frozen(self) -> Iterator[HoldRegistry]:
        """Hold the shared lock on the holds file, refreshed: no hold changes while the block runs.

        Check and delete inside the block; other processes' ``add`` and ``release`` wait for it to end.
        Holds cannot be changed through this registry inside the block.
        """
        with self._mutex:
            fd = self._file()
            with flocked(fd, exclusive=False):
                self._frozen = True
                try:
                    self.refresh()
                    yield self
                finally:
                    self._frozen = False

    # -- changing ---------------------------------------------------------------------------------

    def add(self, tenant: str, scope: str, value: str, reason: str, actor: str) -> Hold:
        """Put a hold on a patient, study or object of ``tenant``; durable (and audited) on return.

        The hold is recorded before its audit entry: if the audit append fails, the hold stays in effect
        and the :class:`StorageError` says so.
        """
        check_tenant(tenant)
        v = check_hold_value(scope, value)
        reason = _check_reason(reason)
        actor = _check_actor(actor)
        audit = self._audit()
        with self._changing() as fd:
            hold_id = _new_id(self._holds)
            hold = Hold(hold_id, tenant, scope, v, reason, actor, self._now())
            self._append(fd, {"event": "add", "id": hold.id, "time": format_time(hold.added),
                              "tenant": tenant, "scope": scope, "value": v, "reason": reason, "actor": actor})
            try:
                audit.append(AuditEntry("hold.add", actor, hold.subject, reason, tenant,
                                        {"hold": hold.id, "scope": scope, "value": v}))
            except StorageError as e:
                raise StorageError(f"legal hold {hold.id} is in effect, but its audit entry could not be "
                                   f"written: {e}", transient=e.transient) from e
        return hold

    def release(self, hold_id: str, reason: str, actor: str) -> Hold:
        """Release an active hold; the released hold, durable (and audited) on return.

        :class:`NotFoundError` if there is no such hold, :class:`InvalidInputError` if it was released.
        """
        reason = _check_reason(reason)
        actor = _check_actor(actor)
        audit = self._audit()
        with self._changing() as fd:
            hold = self.get(hold_id)
            if not hold.active:
                assert hold.released is not None
                raise InvalidInputError(
                    f"legal hold {hold.id} was already released on {hold.released:%Y-%m-%d} by "
                    f"{hold.released_by}: {hold.release_reason!r}")
            now = self._now()
            audit.append(AuditEntry("hold.release", actor, hold.subject, reason, hold.tenant,
                                    {"hold": hold.id, "scope": hold.scope, "value": hold.value,
                                     "added": format_time(hold.added), "added_by": hold.actor}))
            self._append(fd, {"event": "release", "id": hold.id, "time": format_time(now),
                              "reason": reason, "actor": actor})
            return self._holds[hold.id]

    def close(self) -> None:
        with self._mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> HoldRegistry:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- inside -----------------------------------------------------------------------------------

    def _audit(self) -> AuditLog:
        if self.audit is None:
            raise ArchiveStateError("this hold registry has no audit log, so it cannot change holds")
        return self.audit

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise InvalidInputError("the holds clock must return timezone-aware times")
        return now.astimezone(UTC)

    def _file(self) -> int:
        """The descriptor of the holds file (created if missing), for its lock and appends."""
        if self._fd < 0:
            make_directory(self.path.parent)
            self._fd, _created = open_for_append(self.path)
        return self._fd

    @contextmanager
    def _changing(self) -> Iterator[int]:
        """The exclusive lock, a repaired tail and the registry caught up with the file."""
        with self._mutex:
            if self._frozen:
                raise ArchiveStateError("holds cannot be changed inside HoldRegistry.frozen()")
            fd = self._file()
            with flocked(fd):
                cut = cut_torn_tail(fd, self.path, _valid_event)
                self.torn_lines_cut += cut
                self.refresh()
                yield fd

    def _append(self, fd: int, event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        size = append_durably(fd, line + b"\n", self.path)
        self._lines += 1
        self._apply(_parse_event(line, self.path, self._lines))
        self._offset = size

    def _apply(self, event: dict[str, Any]) -> None:
        where = f"{self.path} line {self._lines}"
        if event["event"] == "add":
            if event["id"] in self._holds:
                raise IntegrityError(f"{where} adds legal hold {event['id']} a second time; restore the file "
                                     "from a backup")
            hold = Hold(event["id"], event["tenant"], event["scope"], event["value"], event["reason"],
                        event["actor"], _parse_time(event["time"], where))
            self._holds[hold.id] = hold
            self._order[hold.id] = len(self._order)
            key = (hold.tenant, hold.scope, normalize(hold.scope, hold.value))
            self._active[key] = (*self._active.get(key, ()), hold)
            return
        old = self._holds.get(event["id"])
        if old is None or not old.active:
            state = "unknown" if old is None else "already released"
            raise IntegrityError(f"{where} releases legal hold {event['id']}, which is {state}: lines of the "
                                 "file are missing; restore it from a backup")
        new = replace(old, released=_parse_time(event["time"], where), released_by=event["actor"],
                      release_reason=event["reason"])
        self._holds[new.id] = new
        key = (old.tenant, old.scope, normalize(old.scope, old.value))
        left = tuple(h for h in self._active.get(key, ()) if h.id != old.id)
        if left:
            self._active[key] = left
        else:
            self._active.pop(key, None)


# -- helpers of this module -------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id(taken: dict[str, Hold]) -> str:
    while True:
        hold_id = "h-" + secrets.token_hex(4)
        if hold_id not in taken:
            return hold_id


def _check_reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInputError("a reason is required to add or release a legal hold")
    if len(reason) > _MAX_REASON:
        raise InvalidInputError(f"the reason is longer than {_MAX_REASON} characters")
    return reason.strip()


def _check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or not actor.isprintable() or len(actor) > 256:
        raise InvalidInputError(f"{actor!r} is not a user name")
    return actor.strip()


_EVENT_KEYS = {
    "add": {"event": str, "id": str, "time": str, "tenant": str, "scope": str, "value": str, "reason": str,
            "actor": str},
    "release": {"event": str, "id": str, "time": str, "reason": str, "actor": str},
}


def _valid_event(line: bytes) -> bool:
    try:
        d = json.loads(line)
    except ValueError:
        return False
    return isinstance(d, dict) and d.get("event") in _EVENT_KEYS


def _parse_event(line: bytes, path: Path, number: int) -> dict[str, Any]:
    try:
        d = json.loads(line)
    except ValueError:
        d = None
    shape = _EVENT_KEYS.get(d.get("event")) if isinstance(d, dict) else None  # type: ignore[arg-type]
    if not isinstance(d, dict) or shape is None or set(d) != set(shape) \
            or not all(isinstance(d[k], t) for k, t in shape.items()) or not _ID_RE.match(d["id"]) \
            or ("scope" in d and d["scope"] not in SCOPES):
        raise IntegrityError(
            f"{path} line {number} is not a legal-hold event; if it is the last line, an interrupted write "
            "left it and the next `mmarchive hold add` or `release` cuts it off, otherwise restore the file "
            "from a backup")
    return d


def _parse_time(text: str, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise IntegrityError(f"{where} has no valid UTC time ({text!r})")
    return t.astimezone(UTC)
