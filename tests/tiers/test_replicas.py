"""Replicas: a tier's packs keep a verified second copy on its replica tier; verify --repair restores from it.

Tiers: ``ssd`` (the packs directory, replica on ``mirror``), ``disk`` and ``mirror`` (two more directories);
the S3 case keeps ``disk``'s replicas in a bucket on the session's SeaweedFS.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, TierConfig
from mmarchive.errors import IntegrityError
from mmarchive.lifecycle.runner import make_plan, run_plan
from mmarchive.maintenance.replicas import all_replicas
from tests.cli.conftest import run_cli
from tests.conftest import TINY
from tests.s3server import S3Server
from tests.tiers.test_moves import check_all, fill, stored_on


def replica_config(tmp_path: Path) -> ArchiveConfig:
    return dataclasses.replace(TINY, tiers=(
        TierConfig("ssd", path="packs", replica="mirror"),
        TierConfig("disk", path=str(tmp_path / "disk")),
        TierConfig("mirror", path=str(tmp_path / "mirror"))), lifecycle={"move_grace_seconds": 0})


def replicate(archive: Archive) -> None:
    plan = make_plan(archive, archive.lifecycle.policy)
    report = run_plan(archive, plan)
    assert not report.failed, report.failed


def flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.fixture
def replicated(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "archive"
    with Archive.create(root, replica_config(tmp_path)) as archive:
        expected = fill(archive, n=40)
        plan = make_plan(archive, archive.lifecycle.policy)
        packs = {p.id for p in archive.packs()}
        assert {(r.pack, r.tier, r.drop) for r in plan.replicas} == {(p, "mirror", False) for p in packs}
        replicate(archive)
        assert stored_on(archive, "mirror") == packs
        assert {bytes(k).hex() for k in all_replicas(archive)} == packs
        assert not make_plan(archive, archive.lifecycle.policy).replicas  # done: nothing left to copy
        report = archive.verify()
        assert report.ok and report.replicas_checked == len(packs)
        usage = {u.name: u for u in archive.tier_usage()}
        assert usage["mirror"].replicas == len(packs) and usage["mirror"].packs == 0
    return root, expected


def test_a_damaged_pack_is_repaired_from_its_replica(replicated: tuple[Path, dict[str, str]]) -> None:
    root, expected = replicated
    with Archive.open(root) as archive:
        damaged, missing = archive.packs()[:2]
        flip_byte(archive.tier.path(damaged.id))
        archive.tier.forget(damaged.id)
        archive.tier.path(missing.id).unlink()
        with pytest.raises(IntegrityError):
            check_all(archive, expected)
        report = archive.verify()
        assert not report.ok and set(report.damaged_packs) == {damaged.id, missing.id}
        fixed = archive.verify(repair=True, actor="ops")
        assert fixed.ok, fixed
        assert sorted(fixed.repaired) == sorted(f"pack {p} from tier mirror"
                                                for p in (damaged.id, missing.id))
        check_all(archive, expected)
        repairs = [e for e in archive.lifecycle.audit.entries() if e.action == "pack.repair"]
        assert {e.subject for e in repairs} == {damaged.id, missing.id} and repairs[0].actor == "ops"


def test_a_damaged_replica_is_copied_again(replicated: tuple[Path, dict[str, str]]) -> None:
    root, _expected = replicated
    with Archive.open(root) as archive:
        pack = archive.packs()[0]
        flip_byte(archive.tiers.get("mirror").path(pack.id))  # type: ignore[attr-defined]
        report = archive.verify()
        assert not report.ok and report.damaged_replicas == [f"mirror:{pack.id}"]
        assert not report.affected_objects  # the pack itself is fine
        fixed = archive.verify(repair=True)
        assert fixed.ok and fixed.repaired == [f"replica mirror:{pack.id}"]


def test_without_a_replica_repair_reports_and_exits_5(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, replica_config(tmp_path)) as archive:
        fill(archive, n=10)
        pack = archive.packs()[0]
        flip_byte(archive.tier.path(pack.id))
    result = run_cli("verify", "--repair", "--archive", root, "--json")
    assert result.code == 5
    (body, *_rest) = result.json_lines()
    assert body["unrepaired"] and pack.id in body["unrepaired"][0]


def test_cli_verify_repair(replicated: tuple[Path, dict[str, str]]) -> None:
    root, expected = replicated
    with Archive.open(root) as archive:
        pack = archive.packs()[0]
        path = archive.tier.path(pack.id)
    path.unlink()
    assert run_cli("verify", "--archive", root).code == 5
    fixed = run_cli("verify", "--repair", "--archive", root, "--json")
    assert fixed.code == 0, fixed.stderr
    assert fixed.json_lines()[0]["repaired"] == [f"pack {pack.id} from tier mirror"]
    with Archive.open(root, readonly=True) as archive:
        check_all(archive, expected)


def test_moves_gc_and_reindex_keep_replicas_right(replicated: tuple[Path, dict[str, str]]) -> None:
    root, expected = replicated
    with Archive.open(root) as archive:
        first, second = archive.packs()[:2]
        # To the replica's tier: nothing is copied, the replica file becomes the primary copy.
        assert archive.move_pack(first.id, "mirror", grace_s=0) == 0
        assert first.id in stored_on(archive, "mirror") and first.id not in stored_on(archive, "ssd")
        assert bytes.fromhex(first.id) not in all_replicas(archive)
        # Elsewhere: the replica stays until the plan drops it (disk keeps no replicas).
        archive.move_pack(second.id, "disk", grace_s=0)
        plan = make_plan(archive, archive.lifecycle.policy)
        assert [(r.pack, r.tier, r.drop) for r in plan.replicas] == [(second.id, "mirror", True)]
        run_plan(archive, plan)
        assert second.id not in stored_on(archive, "mirror")
        check_all(archive, expected)
        # gc replaces mostly-dead packs: their replicas go with them, the new packs get theirs.
        for oid in list(expected)[::2]:
            archive.delete(oid)
            del expected[oid]
        archive.gc(repack_below=0.9)
        replicate(archive)
        want = {p.id for p in archive.packs() if p.tier == "ssd"}
        assert {bytes(k).hex() for k in all_replicas(archive)} == want
        assert stored_on(archive, "mirror") == want | {p.id for p in archive.packs() if p.tier == "mirror"}
        before = all_replicas(archive)
        archive.reindex()
        assert set(all_replicas(archive)) == set(before)
        assert archive.verify().ok
        check_all(archive, expected)


def test_replica_on_s3_repairs_a_lost_pack(s3_server: S3Server, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    cfg = dataclasses.replace(TINY, tiers=(
        TierConfig("ssd", path="packs", replica="cold"),
        TierConfig("cold", kind="s3", path="", options={
            "bucket": s3_server.new_bucket("replica"), "endpoint_url": s3_server.endpoint_url,
            "region": s3_server.region})))
    with Archive.create(tmp_path / "archive", cfg) as archive:
        expected = fill(archive, n=20)
        replicate(archive)
        pack = archive.packs()[0]
        archive.tier.path(pack.id).unlink()
        archive.tier.forget(pack.id)
        fixed = archive.verify(repair=True)
        assert fixed.ok and fixed.repaired == [f"pack {pack.id} from tier cold"]
        check_all(archive, expected)
