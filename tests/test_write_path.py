"""The write path's ordering around new packs, and put_many's distance ahead of durability.

A pack is registered in the index before its file exists; the group commit registers the next packs
of every (tenant, group) being written (reservations), so that staging creates the next file without
an index commit of its own; the folder entry of such a file is synced by the commit thread before the
index commit that first points into it; reservations nothing was written to are forgotten on close and
by recovery. These tests watch the real tier and index through spies that record and pass every call
through.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, IndexConfig, KiB, MiB, StoreConfig
from mmarchive.index.schema import DB_PACKS, PACK_OPEN, PackEntry
from mmarchive.pack.format import pack_name

#: Packs seal at 64 KiB and put_many commits every 8 objects: a few hundred small objects fill dozens
#: of packs, most of them created from a reservation.
CONFIG = ArchiveConfig(
    store=StoreConfig(chunk_threshold=64 * KiB, chunk_min=8 * KiB, chunk_avg=16 * KiB, chunk_max=64 * KiB,
                      pack_size=64 * KiB, parallel_threshold=64 * KiB),
    index=IndexConfig(map_size=1 * MiB, commit_objects=8, commit_bytes=1 * MiB),
)


def _index_packs(archive: Archive) -> dict[str, PackEntry]:
    with archive.index.read() as txn:
        return {pack_name(bytes(k)): PackEntry.decode(v)
                for k, v in txn.cursor(db=archive.index.db(DB_PACKS))}


def _pack_files(archive_dir: Path) -> set[str]:
    return {p.stem for p in (archive_dir / "packs").rglob("*.pack")}


def _objects(n: int, size: int = 6 * KiB) -> list[bytes]:
    return [os.urandom(size - 4) + i.to_bytes(4, "little") for i in range(n)]


def test_new_pack_names_are_synced_before_the_commit_that_points_into_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = Archive.create(tmp_path / "a", CONFIG)
    write = archive._write
    assert write is not None
    tier, index = write.tier, write.index
    synced: set[str] = set()  # packs whose folder entry is durable
    deferred: list[str] = []  # packs created without syncing their folder
    checked_commits = 0

    real_create, real_sync, real_write = tier.create, tier.sync_directory, index.write

    def create(name: str, *, sync_directory: bool = True) -> int:
        fd = real_create(name, sync_directory=sync_directory)
        (synced.add if sync_directory else deferred.append)(name)
        return fd

    def sync_directory(name: str) -> None:
        real_sync(name)
        synced.add(name)

    def write_index(fn: Any) -> Any:
        nonlocal checked_commits
        result = real_write(fn)
        for name, entry in _index_packs(archive).items():
            if entry.length > 0:
                assert name in synced, f"the index points into pack {name} before its name is durable"
        checked_commits += 1
        return result

    monkeypatch.setattr(tier, "create", create)
    monkeypatch.setattr(tier, "sync_directory", sync_directory)
    monkeypatch.setattr(index, "write", write_index)
    blobs = _objects(600)
    infos = list(archive.put_many(blobs))
    assert len(deferred) >= 20, f"only {len(deferred)} packs came from a reservation"
    assert checked_commits >= 20
    monkeypatch.undo()
    archive.close()

    with Archive.open(tmp_path / "a") as again:
        assert all(again.get(info.id) == blob for info, blob in zip(infos, blobs, strict=True))
        assert again.verify().ok


def test_reserved_packs_are_registered_ahead_and_forgotten_on_close(tmp_path: Path) -> None:
    archive_dir = tmp_path / "a"
    with Archive.create(archive_dir, CONFIG) as archive:
        list(archive.put_many(_objects(100)))
        entries = _index_packs(archive)
        files = _pack_files(archive_dir)
        reserved = {name for name, e in entries.items() if e.state == PACK_OPEN and name not in files}
        assert reserved, "no pack was registered ahead"
        assert all(entries[name].length == 0 for name in reserved)
        assert files <= set(entries), "a pack file the index does not know"
    with Archive.open(archive_dir, readonly=True) as archive:
        entries = _index_packs(archive)
        assert set(entries) == _pack_files(archive_dir), "close left reservations or files behind"
        assert archive.verify().ok


def test_seal_packs_forgets_reservations(tmp_path: Path) -> None:
    with Archive.create(tmp_path / "a", CONFIG) as archive:
        list(archive.put_many(_objects(100)))
        archive.seal_packs()
        entries = _index_packs(archive)
        assert entries and all(e.state != PACK_OPEN for e in entries.values())
        assert set(entries) == _pack_files(tmp_path / "a")


_KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from mmarchive.archive import Archive
    from tests.test_write_path import CONFIG, _objects
    archive = Archive.create(sys.argv[1], CONFIG)
    infos = list(archive.put_many(_objects(200)))
    with open(sys.argv[2], "w") as f:
        f.write("\\n".join(info.id for info in infos))
        f.flush()
        os.fsync(f.fileno())
    print("acknowledged", flush=True)
    time.sleep(60)
""")


def test_a_killed_writers_reservations_are_removed_on_the_next_open(tmp_path: Path) -> None:
    archive_dir, ids_file = tmp_path / "a", tmp_path / "ids"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(archive_dir), str(ids_file)],
                            stdout=subprocess.PIPE, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"acknowledged"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Archive.open(archive_dir, readonly=True) as archive:  # (no recovery when read-only)
        entries = _index_packs(archive)
        files = _pack_files(archive_dir)
        assert any(e.state == PACK_OPEN and e.length == 0 and name not in files
                   for name, e in entries.items()), "the writer died holding no reservation"
    with Archive.open(archive_dir) as archive:  # recovery
        entries = _index_packs(archive)
        assert not [name for name, e in entries.items() if e.state == PACK_OPEN and e.length == 0]
        assert set(entries) == _pack_files(archive_dir)
        report = archive.verify()
        assert report.ok and not report.orphaned
        for oid in ids_file.read_text().split():
            archive.get(oid)  # every read is checked


def test_put_many_stays_a_bounded_distance_ahead_of_durability(tmp_path: Path) -> None:
    config = ArchiveConfig(store=StoreConfig(pack_size=64 * MiB),
                           index=IndexConfig(commit_objects=1000, commit_bytes=512 * KiB))
    size = 512 * KiB
    consumed = 0

    def source() -> Iterator[bytes]:
        nonlocal consumed
        for blob in _objects(200, size):
            consumed += 1
            yield blob

    ahead = []
    with Archive.create(tmp_path / "a", config) as archive:
        # Taken from the source and not yet reported: four commits' bytes staged beyond what was
        # reported durable, plus the batches of 2 MiB being prepared on the worker pool or filled.
        bound = 4 * config.index.commit_bytes // size + (archive._worker_count + 4) * (2 * MiB // size)
        for n, _info in enumerate(archive.put_many(source()), start=1):
            ahead.append(consumed - n)
    assert len(ahead) == 200
    assert max(ahead) <= bound, (max(ahead), bound)


def test_a_reservation_takes_the_group_of_the_pack_made_from_it(tmp_path: Path) -> None:
    """Reservations are per tenant: a group's first pack may come from one; the index records its group
    with its first commit, as a reindex from the pack headers does."""
    with Archive.create(tmp_path / "a", CONFIG) as archive:
        for group in ("2023-01", "2023-02", "2023-03"):
            list(archive.put_many(_objects(40), group=group))
        before = sorted((p.id, p.group, p.tenant) for p in archive.packs())
        assert {group for _id, group, _tenant in before} == {"2023-01", "2023-02", "2023-03"}
        archive.reindex()
        after = sorted((p.id, p.group, p.tenant) for p in archive.packs())
    assert after == before


def test_look_ups_wait_while_a_commit_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """look_up_many and a commit's apply take turns (py-lmdb lets the GIL go at every call, so running
    both at once makes the two threads trade it at every get and put): a look-up that starts while a
    commit applies its changes waits for the apply. (Its answer is of the index as its transaction
    found it, with the generation that tells stagers so.)"""
    archive = Archive.create(tmp_path / "a", CONFIG)
    write = archive._write
    assert write is not None
    applying, release = threading.Event(), threading.Event()
    real_apply = write._apply

    def slow_apply(*args: Any) -> None:
        applying.set()
        assert release.wait(10)
        real_apply(*args)

    monkeypatch.setattr(write, "_apply", slow_apply)
    data = os.urandom(3000)
    put = threading.Thread(target=archive.put, args=(data,))
    put.start()
    assert applying.wait(10)
    key = next(iter(write._pending_objects))
    looked: list[Any] = []
    look = threading.Thread(target=lambda: looked.extend(write.look_up_many([key])))
    look.start()
    look.join(0.3)
    assert look.is_alive()  # waiting for the apply
    release.set()
    look.join(10)
    put.join(10)
    assert not look.is_alive() and not put.is_alive()
    assert len(looked) == 1 and looked[0].generation == 0
    assert write.look_up_many([key])[0].object_raw is not None  # the commit's entry, for a new look-up
    archive.close()
