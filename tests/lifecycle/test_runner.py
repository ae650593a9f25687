"""The lifecycle runner end to end: plan, holds, expiry, moves by policy and by capacity, audit, refusals.

Objects carry lifecycle facts the way the DICOM layer writes them (``facts_metadata``), so these tests need
no DICOM files; packs group objects by study month as the DICOM layer does.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, TierConfig
from mmarchive.errors import NotFoundError, RetentionError
from mmarchive.index.schema import DB_ACCESS, scoped_key
from mmarchive.lifecycle.facts import facts_metadata
from mmarchive.lifecycle.runner import make_plan, run_plan
from tests.conftest import TINY

TODAY = datetime.now(UTC).date()

POLICY: list[dict[str, Any]] = [
    {"name": "to-disk-after-30d", "match": {"kind": "dicom"},
     "move": [{"to": "disk", "after_days": 30, "since": "study_date"}]},
    {"name": "ct-10y-or-28", "match": {"kind": "dicom"},
     "retain": {"years": 10, "since": "study_date", "until_patient_age": 28}, "expire": True},
]


def config(tmp_path: Path, *, ssd_capacity: int = 0, rules: list[dict[str, Any]] | None = None
           ) -> ArchiveConfig:
    return dataclasses.replace(
        TINY, tiers=(TierConfig("ssd", path="packs", capacity=ssd_capacity, high_water=0.5),
                     TierConfig("disk", path=str(tmp_path / "disk"))),
        lifecycle={"rule": POLICY if rules is None else rules, "move_grace_seconds": 0})


def put_study(archive: Archive, study: str, study_date: date, birth: date, n: int = 5,
              size: int = 9000) -> list[str]:
    ids = []
    for i in range(n):
        meta = facts_metadata("dicom", study_date=study_date, patient_birth_date=birth,
                              patient_id=f"pat-{study}", study_uid=study, modality="CT")
        data = f"{study}/{i}/".encode() * (size // 8)
        ids.append(archive.put(data, metadata=meta, group=f"dicom-{study_date:%Y%m}").id)
    return ids


@pytest.fixture
def archive(tmp_path: Path) -> Any:
    with Archive.create(tmp_path / "archive", config(tmp_path)) as a:
        yield a


def test_plan_expires_moves_and_keeps_by_policy(archive: Archive) -> None:
    adult = put_study(archive, "1.1", date(2010, 3, 1), date(1970, 1, 1))      # kept until 2020: expires
    child = put_study(archive, "1.2", date(2010, 4, 1), date(2005, 6, 1))      # kept until 2033: to disk
    recent = put_study(archive, "1.3", TODAY - timedelta(days=5), date(1980, 1, 1))  # stays on ssd
    archive.seal_packs()
    plan = make_plan(archive, archive.lifecycle.policy, horizon_days=60)
    assert plan.objects == 15
    assert sorted(e.object_id for e in plan.expiries) == sorted(adult)
    assert {e.rule for e in plan.expiries} == {"ct-10y-or-28"}
    child_packs = {p.id for p in archive.packs() if p.group == "dicom-201004"}
    assert {m.pack for m in plan.moves} == child_packs
    assert all(m.target == "disk" and m.cause == "policy" and m.rule == "to-disk-after-30d"
               for m in plan.moves)
    assert plan.tiers_after["disk"] == sum(m.bytes for m in plan.moves)
    # The recent study becomes due for disk 30 days after its study date, inside the 60-day horizon.
    due = TODAY + timedelta(days=25)
    assert [(u.day, u.move_objects) for u in plan.upcoming] == [(due.isoformat(), len(recent))]
    json_plan = plan.to_json()
    assert json_plan["totals"]["expire_objects"] == 5 and json_plan["policy"]["digest"]

    report = run_plan(archive, plan, actor="ops")
    assert report.expired == 5 and report.moved == len(child_packs) and not report.failed
    for oid in adult:
        assert not archive.exists(oid)
    for oid in child + recent:
        assert archive.get(oid)
    assert {p.tier for p in archive.packs() if p.group == "dicom-201004"} == {"disk"}
    entries = list(archive.lifecycle.audit.entries())
    expired = [e for e in entries if e.action == "object.expire"]
    assert len(expired) == 5 and {e.actor for e in expired} == {"rule:ct-10y-or-28"}
    assert "run by ops" in expired[0].reason
    moves = [e for e in entries if e.action == "pack.move"]
    assert {e.subject for e in moves} == child_packs and moves[0].details["to"] == "disk"
    # Idempotent: a second plan has nothing left to do now.
    again = make_plan(archive, archive.lifecycle.policy)
    assert not again.moves and not again.expiries


def test_holds_keep_objects_from_expiry_and_deletion(archive: Archive) -> None:
    adult = put_study(archive, "2.1", date(2009, 1, 10), date(1960, 1, 1))
    archive.seal_packs()
    hold = archive.lifecycle.holds.add("default", "study", "2.1", "litigation 42", "alice")
    plan = make_plan(archive, archive.lifecycle.policy)
    assert not plan.expiries and [h.holds for h in plan.held] == [(hold.id,)] * 5
    with pytest.raises(RetentionError, match=hold.id):
        archive.delete(adult[0])
    archive.lifecycle.holds.release(hold.id, "settled", "alice")
    plan = make_plan(archive, archive.lifecycle.policy)
    assert len(plan.expiries) == 5
    # A hold added after the plan was made still stops the expiry when the run gets there.
    hold2 = archive.lifecycle.holds.add("default", "object", adult[0], "late hold", "bob")
    report = run_plan(archive, plan)
    assert report.expired == 4 and len(report.refused) == 1 and hold2.id in report.refused[0]
    assert archive.exists(adult[0])
    refused = [e for e in archive.lifecycle.audit.entries() if e.action == "delete.refused"]
    assert refused and refused[-1].subject == adult[0]


def test_retention_refuses_deletion_naming_the_rule(archive: Archive) -> None:
    (child, *_) = put_study(archive, "3.1", date(2012, 5, 1), date(2008, 2, 29), n=1)
    with pytest.raises(RetentionError) as err:
        archive.delete(child, actor="carol", reason="cleanup")
    message = str(err.value)
    assert "ct-10y-or-28" in message and "2036-03-01" in message  # turns 28 on Mar 1 (Feb 29 birth)
    plain = archive.put(b"no facts, no rule")
    archive.delete(plain.id, actor="carol", reason="test object")
    actions = [(e.action, e.actor, e.subject) for e in archive.lifecycle.audit.entries()]
    assert ("delete.refused", "carol", child) in actions
    assert ("object.delete", "carol", plain.id) in actions
    with pytest.raises(NotFoundError):
        archive.delete(plain.id)


def test_capacity_moves_least_recently_used_packs_down(tmp_path: Path) -> None:
    with Archive.create(tmp_path / "a", config(tmp_path, rules=[])) as archive:
        for month in range(1, 7):
            put_study(archive, f"4.{month}", date(2024, month, 1), date(1990, 1, 1), n=4, size=30000)
        archive.seal_packs()
        packs = {p.group: p for p in archive.packs()}
        total = sum(p.size for p in packs.values())
        # Reads: month 1 read most recently, month 6 longest ago (days written as past reads would be).
        today = (TODAY - date(1970, 1, 1)).days

        def touched(txn: Any) -> None:
            for obj in archive.scan_objects():
                group = {p.id: p.group for p in archive.packs()}[obj.pack_id.hex()]
                ago = int(group[-2:]) * 10
                txn.put(scoped_key(obj.tenant, bytes.fromhex(obj.id)), (today - ago).to_bytes(4, "little"),
                        db=archive.index.db(DB_ACCESS))

        archive.index.write(touched)
    cfg = config(tmp_path, rules=[], ssd_capacity=total)  # high water at half: about half must go
    (tmp_path / "a" / "mmarchive.toml").write_text(
        dataclasses.replace(cfg, archive_id=archive.config.archive_id).to_toml())
    with Archive.open(tmp_path / "a") as archive:
        plan = make_plan(archive, archive.lifecycle.policy)
        assert plan.moves and all(m.cause == "capacity" and m.target == "disk" for m in plan.moves)
        moved = [m.group for m in plan.moves]
        assert moved == sorted(moved, reverse=True)  # least recently used (month 6) first
        assert plan.tiers_after["ssd"] <= 0.5 * total and not plan.over_capacity
        run_plan(archive, plan)
        usage = {u.name: u for u in archive.tier_usage()}
        assert usage["ssd"].bytes <= 0.5 * total and not usage["ssd"].above_high_water


def test_run_is_rate_limited_and_resumable(archive: Archive) -> None:
    for month in (1, 2, 3):
        put_study(archive, f"5.{month}", date(2011, month, 1), date(2000, 1, 1), n=4, size=20000)
    archive.seal_packs()
    plan = make_plan(archive, archive.lifecycle.policy)
    total = sum(m.bytes for m in plan.moves)
    assert len(plan.moves) >= 3
    slept: list[float] = []
    # Stop after the first move (as a kill would): the next plan has only the rest, and runs it.
    first, *rest = plan.moves
    report = run_plan(archive, dataclasses.replace(plan, moves=[first]), rate_bytes_s=1000.0,
                      sleep=slept.append)
    assert report.moved == 1 and slept and 0 < slept[0] <= first.bytes / 1000.0
    again = make_plan(archive, archive.lifecycle.policy)
    assert {m.pack for m in again.moves} == {m.pack for m in rest}
    slept.clear()
    run_plan(archive, again, rate_bytes_s=total / 2, sleep=slept.append)
    assert sum(slept) <= 2.0 and not make_plan(archive, archive.lifecycle.policy).moves


def test_a_plan_shared_between_worker_processes_is_the_same_plan(archive: Archive) -> None:
    for i, study_date in enumerate((date(2009, 1, 5), date(2011, 6, 1), TODAY - timedelta(days=40))):
        put_study(archive, f"6.{i}", study_date, date(1950 + 20 * i, 3, 1), n=12)
        put_study(archive, f"7.{i}", study_date, date(2000, 1, 1), n=12)
    archive.seal_packs()
    hold = archive.lifecycle.holds.add("default", "study", "6.0", "audit", "alice")
    now = datetime.now(UTC)
    alone = make_plan(archive, archive.lifecycle.policy, now=now, horizon_days=60, workers=1).to_json()
    shared = make_plan(archive, archive.lifecycle.policy, now=now, horizon_days=60, workers=3).to_json()
    def by_object(e: dict[str, Any]) -> tuple[str, str]:
        return e["tenant"], e["object_id"]

    for name in ("expiries", "held"):
        alone[name].sort(key=by_object)
        shared[name].sort(key=by_object)
    assert alone == shared
    assert alone["expiries"] and alone["moves"]
    assert [tuple(h["holds"]) for h in alone["held"]] == [(hold.id,)] * 12


def test_a_plan_falls_back_to_one_process_when_workers_cannot_start(
        archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    put_study(archive, "8.1", date(2009, 1, 5), date(1950, 1, 1), n=6)
    expected = make_plan(archive, archive.lifecycle.policy, workers=1).to_json()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    fallback = make_plan(archive, archive.lifecycle.policy, workers=2, now=datetime.fromisoformat(
        expected["now"])).to_json()
    assert fallback["totals"] == expected["totals"] and fallback["objects"] == 6
