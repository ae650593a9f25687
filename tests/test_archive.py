"""The public API of Archive: put/get/open/stat/exists/list/delete/stats, tenants, errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import blake3
import pytest

from mmarchive.archive import Archive, PutItem
from mmarchive.config import ArchiveConfig, IndexConfig, StoreConfig
from mmarchive.errors import (
    ArchiveError,
    ArchiveLockedError,
    ArchiveStateError,
    InvalidInputError,
    NotFoundError,
)
from tests.conftest import TINY


def test_put_get_roundtrip_bytes_file_iterator_path(archive: Archive, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    a = archive.put(data)
    assert a.id == blake3.blake3(data).hexdigest()
    assert archive.get(a.id) == data
    b = archive.put(io.BytesIO(data))
    assert b.id == a.id and b.already_stored
    c = archive.put(iter([data[:1000], b"", data[1000:]]))
    assert c.id == a.id
    p = tmp_path / "f.bin"
    p.write_bytes(data + b"x")
    d = archive.put(p)
    assert archive.get(d.id) == data + b"x"
    assert d.chunk_count > 1


def test_id_is_content_hash_and_resend_is_free(archive: Archive) -> None:
    info = archive.put(b"x" * 1000, metadata={"k": "v"})
    before = archive.stats()
    again = archive.put(b"x" * 1000)
    assert again.already_stored and again.id == info.id
    assert archive.stats() == before
    # New metadata on the same bytes writes a new manifest, not new chunks.
    updated = archive.put(b"x" * 1000, metadata={"k": "w"})
    assert not updated.already_stored
    assert archive.stat(info.id).metadata == {"k": "w"}
    after = archive.stats()
    assert after.unique_bytes == before.unique_bytes and after.objects == before.objects


def test_empty_object(archive: Archive) -> None:
    info = archive.put(b"")
    assert info.size == 0 and info.chunk_count == 0
    assert archive.get(info.id) == b""
    assert archive.exists(info.id)


def test_open_is_seekable_streaming_reader(archive: Archive) -> None:
    data = os.urandom(200_000)
    info = archive.put(data)
    with archive.open_object(info.id) as r:
        assert r.seekable()
        r.seek(150_000)
        assert r.read(1000) == data[150_000:151_000]
        r.seek(-10, io.SEEK_END)
        assert r.read() == data[-10:]
        r.seek(0)
        assert r.read() == data
        # Reads that cross chunk boundaries return every byte asked for.
        r.seek(0)
        assert b"".join(iter(lambda: r.read(777), b"")) == data


def test_stat_exists_list_delete(archive: Archive) -> None:
    infos = [archive.put(os.urandom(n)) for n in (1, 10, 100, 20_000)]
    assert sorted(i.id for i in archive.list()) == sorted(i.id for i in infos)
    assert len(list(archive.list(limit=2))) == 2
    first = sorted(i.id for i in infos)[0]
    assert [i.id for i in archive.list(after=first)] == sorted(i.id for i in infos)[1:]
    gone = archive.delete(infos[0].id)
    assert gone.id == infos[0].id
    assert not archive.exists(infos[0].id)
    with pytest.raises(NotFoundError, match="deleted"):
        archive.get(infos[0].id)
    with pytest.raises(NotFoundError):
        archive.delete(infos[0].id)
    assert archive.stats().objects == 3


def test_tenants_are_isolated(archive: Archive) -> None:
    data = os.urandom(5000)
    a = archive.put(data, tenant="trust-a")
    with pytest.raises(NotFoundError):
        archive.get(a.id, tenant="trust-b")
    b = archive.put(data, tenant="trust-b")
    assert b.id == a.id and not b.already_stored  # no dedup across tenants
    assert archive.stats(tenant="trust-a").objects == 1
    assert archive.stats(tenant="trust-b").unique_bytes == 5000
    assert archive.stats().unique_bytes == 10_000
    assert {i.id for i in archive.list(tenant="trust-a")} == {a.id}
    assert list(archive.list(tenant="nobody")) == []
    archive.delete(a.id, tenant="trust-a")
    assert archive.get(b.id, tenant="trust-b") == data
    assert sorted(archive.tenants()) == ["trust-a", "trust-b"]


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "-lead", "t\x00", "é"])
def test_bad_tenant_names(archive: Archive, bad: str) -> None:
    with pytest.raises(InvalidInputError, match="tenant"):
        archive.put(b"x", tenant=bad)


def test_bad_ids_and_inputs(archive: Archive) -> None:
    with pytest.raises(InvalidInputError):
        archive.get("nothex")
    with pytest.raises(InvalidInputError):
        archive.put(12345)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        archive.put(b"x", metadata={"k": object()})
    with pytest.raises(NotFoundError):
        archive.get("00" * 32)
    with pytest.raises(InvalidInputError):
        archive.put(Path("/nonexistent/file"))


def test_dedup_and_compression_stats(archive: Archive) -> None:
    text = b"patient record line\n" * 5000  # compresses well
    archive.put(text)
    archive.put(text + b"tail")  # chunked: shares most chunks with the first
    s = archive.stats()
    assert s.logical_bytes == 2 * len(text) + 4
    assert s.dedup_ratio > 1.5
    assert s.compression_ratio > 5
    assert s.stored_bytes < s.unique_bytes


def test_put_many_yields_in_order_once_durable(archive: Archive, tmp_path: Path) -> None:
    blobs = [os.urandom(n) for n in (10, 9000, 40_000, 0, 9000)] + [b"dup"] * 3
    p = tmp_path / "x"
    p.write_bytes(b"from a file")
    items: list[object] = [*blobs, PutItem(p, name="x", metadata={"m": 1}),
                           PutItem(b"other tenant", tenant="t2")]
    infos = list(archive.put_many(items))  # type: ignore[arg-type]
    assert [i.size for i in infos] == [len(b) for b in blobs] + [11, 12]
    assert [i.already_stored for i in infos[-4:-2]] == [True, True]
    assert infos[-2].source == "x" and infos[-2].metadata == {"m": 1}
    assert infos[-1].tenant == "t2"
    for b, i in zip(blobs, infos, strict=False):
        assert archive.get(i.id) == b


def test_put_many_many_small_objects_group_commits(archive: Archive) -> None:
    blobs = [os.urandom(64) + i.to_bytes(4, "little") for i in range(2000)]
    infos = list(archive.put_many(blobs))
    assert len(infos) == 2000
    assert archive.stats().objects == 2000
    assert archive.get(infos[1234].id) == blobs[1234]


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with Archive.create(path, TINY) as a:
        infos = [a.put(os.urandom(n)) for n in range(0, 60_000, 7000)]
        stats = a.stats()
    with Archive.open(path) as a:
        assert a.stats() == stats
        for i in infos:
            assert len(a.get(i.id)) == i.size
        more = a.put(b"after reopen")  # continues the open pack
    with Archive.open(path, readonly=True) as r:
        assert r.get(more.id) == b"after reopen"
        with pytest.raises(ArchiveStateError):
            r.put(b"x")


def test_single_writer_lock(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with Archive.create(path, TINY):
        with pytest.raises(ArchiveLockedError, match="only one writer"):
            Archive.open(path)
        with Archive.open(path, readonly=True) as reader:
            assert reader.stats().objects == 0
    with Archive.open(path):
        pass  # released on close


def test_create_refuses_existing_and_open_missing(tmp_path: Path) -> None:
    with Archive.create(tmp_path / "a", TINY):
        pass
    with pytest.raises(InvalidInputError):
        Archive.create(tmp_path / "a")
    with pytest.raises(NotFoundError, match="mmarchive init"):
        Archive.open(tmp_path / "nothing")


def test_errors_form_one_tree_and_carry_exit_codes() -> None:
    for cls in (InvalidInputError, NotFoundError, ArchiveLockedError, ArchiveStateError):
        assert issubclass(cls, ArchiveError)
        assert cls.exit_code not in (0, 1)
    assert issubclass(NotFoundError, KeyError)
    assert str(NotFoundError("plain message")) == "plain message"


def test_config_roundtrip_and_validation(tmp_path: Path) -> None:
    cfg = ArchiveConfig(store=StoreConfig(pack_size=8 * 1024 * 1024, compression="none"))
    again = ArchiveConfig.from_dict(__import__("tomllib").loads(cfg.to_toml()))
    assert again == cfg
    with pytest.raises(InvalidInputError):
        ArchiveConfig.from_dict({"store": {"chunk_avg": "3MiB"}})
    with pytest.raises(InvalidInputError, match="unknown key"):
        ArchiveConfig.from_dict({"store": {"chunk_size": 1}})
    layered = ArchiveConfig(layers={"dicom": {"on_duplicate": "reject", "strict": True, "n": 2}})
    assert ArchiveConfig.from_dict(__import__("tomllib").loads(layered.to_toml())) == layered
    with pytest.raises(InvalidInputError, match="unknown sections"):
        ArchiveConfig.from_dict({"dicom": {"on_duplicate": "reject"}})
    nested = ArchiveConfig(layers={"dimse": {"allowed_calling_aes": ["CT1", "MR2"],
                                             "move_destinations": {"VIEWER": "10.0.0.7:104"}}})
    assert ArchiveConfig.from_dict(__import__("tomllib").loads(nested.to_toml())) == nested
    with pytest.raises(InvalidInputError, match="layers"):
        ArchiveConfig.from_dict({"layers": {"dicom": {"policy": [[1, 2]]}}})
    with pytest.raises(InvalidInputError, match="layers"):
        ArchiveConfig.from_dict({"layers": {"dicom": {"policy": {"a": {"b": 1}}}}})


def test_group_keeps_objects_in_their_own_packs(archive: Archive) -> None:
    archive.put(b"a" * 100, group="study-1")
    archive.put(b"b" * 100, group="study-2")
    assert archive.stats().packs == 2


def test_write_after_close_is_refused(tmp_path: Path) -> None:
    a = Archive.create(tmp_path / "a", TINY)
    a.close()
    a.close()
    with pytest.raises(ArchiveStateError):
        a.put(b"x")


def test_uncompressed_mode_stores_raw(tmp_path: Path) -> None:
    cfg = ArchiveConfig(store=StoreConfig(compression="none"))
    with Archive.create(tmp_path / "a", cfg) as a:
        a.put(b"z" * 100_000)
        assert a.stats().stored_bytes == 100_000


def test_resends_across_group_commits_write_each_record_once(tmp_path: Path) -> None:
    """A resend looked up before its first copy was committed, and staged after, is found stored.

    Commits after every object make the index views taken for a batch go stale while it waits to be
    staged; a view trusted after a commit that touched its key would write the record a second time.
    """
    blobs = [os.urandom(3000) for _ in range(1000)]
    # Resends a few batches of put_many after their first copy (batches are looked up ahead of staging).
    sequence = [b for i, first in enumerate(blobs)
                for b in ([first, blobs[i - 150]] if i >= 150 else [first])]
    sizes = []
    for name, items in (("resends", sequence), ("once", blobs)):
        config = ArchiveConfig(store=StoreConfig(compression="none"), index=IndexConfig(commit_objects=1))
        with Archive.create(tmp_path / name, config) as a:
            infos = list(a.put_many(items))
            assert sum(i.already_stored for i in infos) == len(items) - len(blobs)
            assert a.stats().objects == len(blobs)
            assert a.verify().ok
            sizes.append(sum(p.size for p in a.packs()))
    assert sizes[0] == sizes[1]
