"""Pack moves to and from an S3 tier on a real SeaweedFS: the same promises as between local tiers.

The archive's config declares ``ssd`` (its packs directory), ``disk`` (another directory) and ``cold`` (a
bucket on the session's SeaweedFS). Credentials reach boto3 the usual way, through the environment.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, TierConfig
from mmarchive.errors import StorageError
from tests.s3server import S3Server
from tests.tiers.test_moves import check_all, fill, kill_cycles, stored_on, two_tier_config


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """The server's credentials in the environment (where boto3 and the mover subprocess find them)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield s3_server


def three_tier_config(tmp_path: Path, server: S3Server, *, endpoint: str | None = None) -> ArchiveConfig:
    cold = TierConfig("cold", kind="s3", path="", options={
        "bucket": server.new_bucket("cold"), "prefix": "packs/",
        "endpoint_url": endpoint or server.endpoint_url, "region": server.region, "max_attempts": 2})
    return two_tier_config(tmp_path, cold)


def test_packs_move_to_s3_and_back_and_read_while_there(s3_env: S3Server, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, three_tier_config(tmp_path, s3_env)) as archive:
        expected = fill(archive)
        packs = archive.packs()
        for p in packs:
            assert archive.move_pack(p.id, "cold", grace_s=0) == p.size
        assert not stored_on(archive, "ssd")
        assert stored_on(archive, "cold") == {p.id for p in packs}
        check_all(archive, expected)
        usage = {u.name: u for u in archive.tier_usage()}
        assert usage["cold"].packs == len(packs) and usage["cold"].objects == len(expected)
        report = archive.verify()
        assert report.ok and not report.orphaned, report
        some = packs[0]
        archive.move_pack(some.id, "disk", grace_s=0)
        assert some.id in stored_on(archive, "disk") and some.id not in stored_on(archive, "cold")
        check_all(archive, expected)
    with Archive.open(root, readonly=True) as archive:
        check_all(archive, expected)


def test_reindex_finds_packs_on_s3(s3_env: S3Server, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, three_tier_config(tmp_path, s3_env)) as archive:
        expected = fill(archive, n=30)
        for p in archive.packs()[::2]:
            archive.move_pack(p.id, "cold", grace_s=0)
        where = {p.id: p.tier for p in archive.packs()}
        archive.reindex()
        assert {p.id: p.tier for p in archive.packs()} == where
        check_all(archive, expected)


def test_gc_repacks_on_s3(s3_env: S3Server, tmp_path: Path) -> None:
    with Archive.create(tmp_path / "archive", three_tier_config(tmp_path, s3_env)) as archive:
        expected = fill(archive, n=40)
        for p in archive.packs():
            archive.move_pack(p.id, "cold", grace_s=0)
        for oid in list(expected)[::2]:
            archive.delete(oid)
            del expected[oid]
        report = archive.gc(repack_below=0.9)
        assert report.packs_repacked + report.packs_deleted > 0
        assert all(p.tier == "cold" for p in archive.packs() if p.sealed)
        assert stored_on(archive, "cold") == {p.id for p in archive.packs() if p.tier == "cold"}
        check_all(archive, expected)
        assert archive.verify().ok


def test_an_unreachable_s3_tier_fails_the_move_and_keeps_the_pack(s3_env: S3Server, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with socket_closed_port() as port:
        cfg = three_tier_config(tmp_path, s3_env, endpoint=f"http://127.0.0.1:{port}")
        with Archive.create(root, dataclasses.replace(cfg)) as archive:
            expected = fill(archive, n=10)
            pack = archive.packs()[0]
            start = time.monotonic()
            with pytest.raises(StorageError) as err:
                archive.move_pack(pack.id, "cold")
            assert err.value.transient and time.monotonic() - start < 30
            assert {p.id: p.tier for p in archive.packs()}[pack.id] == "ssd"
            # The rollback could not reach the target either: the move stays recorded, for the next
            # run to roll back, and the index reads the source as before.
            assert [m.phase for m in archive.pack_moves()] == ["copying"]
            assert archive.finish_moves().waiting == 1
            check_all(archive, expected)


class socket_closed_port:
    """A loopback port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.slow
def test_sigkill_during_moves_to_s3_loses_nothing(s3_env: S3Server, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, three_tier_config(tmp_path, s3_env)) as archive:
        expected = fill(archive, n=60)
    assert os.environ["AWS_ACCESS_KEY_ID"] == s3_env.access_key
    moved = kill_cycles(root, tmp_path, expected, cycles=12, seed=random.randrange(1000))
    assert moved >= 5  # the kills landed among real moves


def test_reading_one_object_from_s3_is_one_ranged_get(s3_env: S3Server, tmp_path: Path) -> None:
    with Archive.create(tmp_path / "archive", three_tier_config(tmp_path, s3_env)) as archive:
        expected = fill(archive, n=20)
        for p in archive.packs():
            archive.move_pack(p.id, "cold", grace_s=0)
        calls: list[str] = []
        client = archive.tiers.get("cold").client  # type: ignore[attr-defined]
        client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
        # One object stored whole (not chunked): one record, so one request, no HEAD for the size.
        single = next(oid for oid in expected if archive.stat(oid).chunk_count == 1)
        archive.get(single)
        assert calls == ["GetObject"]


def test_gc_aborts_unfinished_multipart_uploads(s3_env: S3Server, tmp_path: Path) -> None:
    with Archive.create(tmp_path / "archive", three_tier_config(tmp_path, s3_env)) as archive:
        cold = archive.tiers.get("cold")
        client = cold.client  # type: ignore[attr-defined]
        bucket, key = cold.bucket, cold.key("ab" * 16)  # type: ignore[attr-defined]
        client.create_multipart_upload(Bucket=bucket, Key=key)
        assert cold.clean_incomplete(3600) == 0  # too recent: may be a store in progress
        assert cold.clean_incomplete(0) == 1
        assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
