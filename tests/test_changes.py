"""The change feed: every object once, at its latest change, per tenant, rebuilt by reindex."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from mmarchive.archive import Archive
from mmarchive.errors import ArchiveStateError, InvalidInputError
from mmarchive.index.schema import DB_CHANGES, DB_META, META_SCHEMA
from tests.conftest import TINY


def _feed(archive: Archive, tenant: str = "default") -> list[tuple[int, str, bool]]:
    out: list[tuple[int, str, bool]] = []
    after = 0
    while True:
        page = archive.changes(tenant=tenant, after=after, limit=3)
        if not page:
            return out
        out.extend((c.seq, c.id, c.live) for c in page)
        after = page[-1].seq


def test_feed_lists_each_object_once_at_its_latest_change(archive: Archive) -> None:
    a = archive.put(b"alpha")
    b = archive.put(b"beta")
    c = archive.put(b"gamma", tenant="other")
    assert [i for _s, i, _l in _feed(archive)] == [a.id, b.id]
    assert [i for _s, i, _l in _feed(archive, "other")] == [c.id]
    archive.put(b"alpha", metadata={"fixed": True})  # a new manifest: alpha moves to the end
    archive.delete(b.id)
    feed = _feed(archive)
    assert [(i, live) for _s, i, live in feed] == [(a.id, True), (b.id, False)]
    assert [s for s, _i, _l in feed] == sorted(s for s, _i, _l in feed)
    newest = feed[-1][0]
    assert archive.changes(after=newest) == []
    assert archive.changes(after=feed[0][0])[0].id == b.id
    assert archive.changes()[0].metadata == {"fixed": True}
    assert archive.verify().ok


def test_feed_survives_reopen_reindex_and_gc(tmp_path: Path) -> None:
    with Archive.create(tmp_path / "a", TINY) as archive:
        infos = list(archive.put_many([f"object {i}".encode() * 50 for i in range(30)]))
        for info in infos[::3]:
            archive.delete(info.id)
        before = _feed(archive)
        assert len(before) == 30
        archive.reindex()
        assert _feed(archive) == before
        archive.gc(repack_below=1.0)
        after_gc = _feed(archive)
        # gc may forget deleted objects; everything it keeps is unchanged
        assert set(after_gc) <= set(before)
        assert {x for x in before if x[2]} <= set(after_gc)
        assert archive.verify().ok
    with Archive.open(tmp_path / "a", readonly=True) as archive:
        assert _feed(archive) == after_gc


def test_bad_arguments_are_refused(archive: Archive) -> None:
    with pytest.raises(InvalidInputError):
        archive.changes(after=-1)
    with pytest.raises(InvalidInputError):
        archive.changes(limit=0)


def test_verify_reports_a_missing_feed_entry(tmp_path: Path) -> None:
    with Archive.create(tmp_path / "a", TINY) as archive:
        archive.put(b"x" * 100)
    _wipe_feed(tmp_path / "a", schema=None)
    with Archive.open(tmp_path / "a") as archive:
        report = archive.verify()
        assert not report.ok and "change feed" in report.missing[0]
        archive.reindex()
        assert archive.verify().ok


def test_schema_1_index_gains_its_feed_on_first_writable_open(tmp_path: Path) -> None:
    with Archive.create(tmp_path / "a", TINY) as archive:
        ids = [i.id for i in archive.put_many([b"one", b"two", b"three"])]
    _wipe_feed(tmp_path / "a", schema=b"1")
    with pytest.raises(ArchiveStateError, match="schema 1"):
        Archive.open(tmp_path / "a", readonly=True)
    with Archive.open(tmp_path / "a") as archive:
        assert [i for _s, i, _l in _feed(archive)] == ids
        assert archive.verify().ok
    with Archive.open(tmp_path / "a", readonly=True) as archive:
        assert [i for _s, i, _l in _feed(archive)] == ids


def _wipe_feed(path: Path, schema: bytes | None) -> None:
    env = lmdb.open(str(path / "index"), max_dbs=10)
    try:
        with env.begin(write=True) as txn:
            txn.drop(env.open_db(DB_CHANGES, txn=txn), delete=False)
            if schema is not None:
                txn.put(META_SCHEMA, schema, db=env.open_db(DB_META, txn=txn))
    finally:
        env.close()
