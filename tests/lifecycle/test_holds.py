"""Legal holds: add and release (audited), replay across reopen, look-ups by patient, study and object
within a tenant only, holds added by another process seen after refresh(), the frozen() section."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mmarchive.errors import (
    ArchiveStateError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RetentionError,
)
from mmarchive.lifecycle.audit import AuditLog
from mmarchive.lifecycle.facts import ObjectFacts
from mmarchive.lifecycle.holds import HoldRegistry

OID = "3f" * 32
OTHER_OID = "a1" * 32
NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)

#: Adds a hold to the archive ARCHIVE from another process: ``TENANT SCOPE VALUE``; prints its id.
ADD_CHILD = r"""
import sys
from mmarchive.lifecycle.audit import AuditLog
from mmarchive.lifecycle.holds import HoldRegistry
archive, tenant, scope, value = sys.argv[1:5]
print(HoldRegistry(archive, AuditLog(archive)).add(tenant, scope, value, "from elsewhere", "bob").id)
"""


def facts(tenant: str = "t1", object_id: str = OID, *, patient_id: str | None = "P-1",
          study_uid: str | None = "1.2.3") -> ObjectFacts:
    return ObjectFacts(tenant=tenant, object_id=object_id, kind="dicom", size=10, ingested=NOW, tier="local",
                       patient_id=patient_id, study_uid=study_uid)


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path) as log:
        yield log


@pytest.fixture
def holds(tmp_path: Path, audit: AuditLog) -> Iterator[HoldRegistry]:
    with HoldRegistry(tmp_path, audit, clock=lambda: NOW) as registry:
        yield registry


def add_elsewhere(archive: Path, tenant: str, scope: str, value: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", ADD_CHILD, str(archive), tenant, scope, value],
                            stdout=subprocess.PIPE, text=True)


def test_holds_match_by_patient_study_and_object(holds: HoldRegistry) -> None:
    assert holds.holds_for(facts()) == [] and holds.refusal(facts()) is None
    on_patient = holds.add("t1", "patient", "P-1", "litigation 1", "alice")
    assert holds.holds_for(facts()) == [on_patient]
    assert holds.holds_for(facts(patient_id="P-2")) == []
    on_study = holds.add("t1", "study", "1.2.3", "litigation 2", "alice")
    on_object = holds.add("t1", "object", OTHER_OID.upper(), "litigation 3", "alice")
    assert on_object.value == OTHER_OID  # object ids are matched lowercase
    assert {h.id for h in holds.holds_for(facts())} == {on_patient.id, on_study.id}
    assert holds.holds_for(facts(object_id=OTHER_OID, patient_id=None, study_uid=None)) == [on_object]
    assert holds.holds_for(facts(patient_id=None)) == [on_study]
    assert holds.holds_for(facts(patient_id="P-1 ", study_uid="1.2.3\x00")) != []  # DICOM padding
    assert len({on_patient.id, on_study.id, on_object.id}) == 3
    assert [h.id for h in holds.active()] == [on_patient.id, on_study.id, on_object.id]


def test_a_hold_of_one_tenant_never_matches_another_tenants_data(holds: HoldRegistry) -> None:
    holds.add("tenant-a", "patient", "P-1", "case", "alice")
    holds.add("tenant-a", "study", "1.2.3", "case", "alice")
    holds.add("tenant-a", "object", OID, "case", "alice")
    assert holds.holds_for(facts("tenant-b")) == []
    assert holds.refusal(facts("tenant-b")) is None
    assert len(holds.holds_for(facts("tenant-a"))) == 3
    assert holds.active("tenant-b") == [] and len(holds.active("tenant-a")) == 3


def test_refusal_names_the_hold_and_how_to_release_it(holds: HoldRegistry) -> None:
    hold = holds.add("t1", "study", "1.2.3", "litigation 42", "alice")
    error = holds.refusal(facts())
    assert isinstance(error, RetentionError) and error.exit_code == 6
    assert str(error) == (f"object {OID} of tenant t1 is under legal hold {hold.id} (study 1.2.3, added "
                          f"2026-11-26 by alice: 'litigation 42'); release it with "
                          f"`mmarchive hold release {hold.id}` first")
    second = holds.add("t1", "patient", "P-1", "audit", "bob")
    assert str(holds.refusal(facts())).endswith(
        f"'litigation 42') and 1 more ({second.id}); release them with `mmarchive hold release {hold.id}` "
        f"and `mmarchive hold release {second.id}` first")


def test_release_and_replay_across_reopen(tmp_path: Path, holds: HoldRegistry, audit: AuditLog) -> None:
    kept = holds.add("t1", "patient", "P-1", "case 1", "alice")
    gone = holds.add("t1", "study", "1.2.3", "case 2", "alice")
    released = holds.release(gone.id, "case closed", "carol")
    assert not released.active and released.released_by == "carol"
    assert released.release_reason == "case closed" and released.released == NOW
    assert holds.holds_for(facts()) == [kept]
    assert [h.id for h in holds.active()] == [kept.id]
    assert {h.id for h in holds.all()} == {kept.id, gone.id}

    with HoldRegistry(tmp_path, None) as reopened:
        assert reopened.active() == holds.active()
        assert reopened.get(gone.id) == released
        assert reopened.holds_for(facts()) == [kept]

    entries = list(audit.entries(action="hold"))
    assert [(e.action, e.actor, e.tenant, e.subject, e.reason) for e in entries] == [
        ("hold.add", "alice", "t1", "patient:P-1", "case 1"),
        ("hold.add", "alice", "t1", "study:1.2.3", "case 2"),
        ("hold.release", "carol", "t1", "study:1.2.3", "case closed"),
    ]
    assert entries[2].details["hold"] == gone.id and entries[2].details["added_by"] == "alice"
    assert audit.verify().ok


def test_release_errors(holds: HoldRegistry) -> None:
    hold = holds.add("t1", "object", OID, "case", "alice")
    with pytest.raises(NotFoundError, match="no legal hold 'h-00000000'"):
        holds.release("h-00000000", "x", "alice")
    with pytest.raises(InvalidInputError, match="reason is required"):
        holds.release(hold.id, "  ", "alice")
    holds.release(hold.id, "done", "alice")
    with pytest.raises(InvalidInputError, match=f"{hold.id} was already released on 2026-11-26 by alice"):
        holds.release(hold.id, "again", "alice")


@pytest.mark.parametrize(("tenant", "scope", "value", "reason"), [
    ("t1", "object", "not-an-id", "r"),
    ("t1", "study", "1.2.x", "r"),
    ("t1", "patient", "", "r"),
    ("t1", "patient", "P" * 65, "r"),
    ("t1", "series", "1.2", "r"),
    ("no/slash", "patient", "P-1", "r"),
    ("t1", "patient", "P-1", ""),
])
def test_invalid_holds_are_refused(holds: HoldRegistry, audit: AuditLog, tenant: str, scope: str, value: str,
                                   reason: str) -> None:
    with pytest.raises(InvalidInputError):
        holds.add(tenant, scope, value, reason, "alice")
    assert holds.all() == [] and list(audit.entries()) == []


def test_a_registry_without_an_audit_log_only_reads(tmp_path: Path) -> None:
    with HoldRegistry(tmp_path, None) as holds, pytest.raises(ArchiveStateError):
        holds.add("t1", "patient", "P-1", "case", "alice")
    assert not (tmp_path / "lifecycle").exists()  # reading created nothing


def test_holds_added_by_another_process_are_seen_after_refresh(tmp_path: Path, holds: HoldRegistry) -> None:
    holds.add("t1", "patient", "P-9", "mine", "alice")
    assert holds.refresh() == 0
    child = add_elsewhere(tmp_path, "t1", "study", "1.2.3")
    hold_id = child.communicate(timeout=30)[0].strip()
    assert child.returncode == 0
    assert holds.holds_for(facts()) == []  # not yet looked
    assert holds.refresh() == 1
    [hold] = holds.holds_for(facts())
    assert hold.id == hold_id and hold.actor == "bob"
    assert holds.refresh() == 0
    # the other process's change is in the same audit log, in order
    assert [e.actor for e in AuditLog(tmp_path).entries()] == ["alice", "bob"]
    # and our next change catches up with it before appending
    holds.release(hold_id, "done", "alice")
    with HoldRegistry(tmp_path, None) as fresh:
        assert [h.id for h in fresh.active()] == [holds.active()[0].id]


def test_frozen_keeps_other_processes_from_changing_holds(tmp_path: Path, holds: HoldRegistry) -> None:
    holds.add("t1", "patient", "P-9", "mine", "alice")  # the file exists
    with holds.frozen() as frozen:
        child = add_elsewhere(tmp_path, "t1", "study", "1.2.3")
        time.sleep(0.8)
        assert child.poll() is None, "a hold was added inside the frozen section"
        assert frozen.holds_for(facts()) == []
        with pytest.raises(ArchiveStateError):
            frozen.add("t1", "study", "1.2.3", "x", "alice")
    child.communicate(timeout=30)
    assert child.returncode == 0
    holds.refresh()
    assert len(holds.holds_for(facts())) == 1


def test_a_torn_last_event_is_ignored_by_readers_and_cut_by_the_next_change(tmp_path: Path,
                                                                          holds: HoldRegistry) -> None:
    first = holds.add("t1", "patient", "P-1", "case", "alice")
    path = tmp_path / "lifecycle" / "holds.jsonl"
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"event":"add","id":"h-')
    with HoldRegistry(tmp_path, None) as reader:
        assert [h.id for h in reader.active()] == [first.id]
    second = holds.add("t1", "study", "1.2.3", "case", "alice")
    assert holds.torn_lines_cut == 1
    assert (tmp_path / "lifecycle" / f"holds.jsonl.torn-{len(good)}").exists()
    with HoldRegistry(tmp_path, None) as reader:
        assert [h.id for h in reader.active()] == [first.id, second.id]


def test_a_damaged_or_incomplete_file_fails_closed(tmp_path: Path, holds: HoldRegistry) -> None:
    hold = holds.add("t1", "patient", "P-1", "case", "alice")
    holds.add("t1", "patient", "P-2", "case", "alice")
    holds.release(hold.id, "done", "alice")
    path = tmp_path / "lifecycle" / "holds.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"garbage\n" + lines[2])
    with pytest.raises(IntegrityError, match="line 2 is not a legal-hold event"):
        HoldRegistry(tmp_path, None)
    path.write_bytes(lines[1] + lines[2])  # the add of a released hold is missing
    with pytest.raises(IntegrityError, match=f"releases legal hold {hold.id}, which is unknown"):
        HoldRegistry(tmp_path, None)


def test_lookups_are_cheap(holds: HoldRegistry) -> None:
    for i in range(200):
        holds._apply({"event": "add", "id": f"h-{i:08x}", "time": "2026-11-26T00:00:00.000000Z",
                      "tenant": "t1", "scope": "patient", "value": f"P{i}", "reason": "r", "actor": "a"})
    objects = [facts(patient_id=f"P{i}", study_uid=f"1.2.{i}") for i in range(0, 100_000, 7)]
    start = time.perf_counter()
    held = sum(1 for f in objects if holds.holds_for(f))
    elapsed = time.perf_counter() - start
    assert held == len([i for i in range(0, 100_000, 7) if i < 200])
    assert elapsed < 0.5, f"{len(objects)} look-ups took {elapsed:.2f} s"
