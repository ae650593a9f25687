"""The recall cache: reads of colder tiers stream, recently read packs are kept on the landing tier's disk.

Archives here have the ``ssd`` landing tier, a local ``disk`` tier and (in the S3 tests) a ``cold`` bucket on
the session's SeaweedFS; a "study" is a group of objects that shares a few packs. The background fetch is
held back where a test must see what a read does before the fetch (``held_fetches``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, RecallConfig
from mmarchive.errors import InvalidInputError
from mmarchive.tiers.base import PackFile, Tier
from mmarchive.tiers.recall import RECALL_DIR, RecallCache
from tests.s3server import S3Server
from tests.tiers.test_moves import check_all, two_tier_config
from tests.tiers.test_moves_s3 import s3_env, three_tier_config

__all__ = ["s3_env"]  # the fixture, imported for the S3 tests


def with_recall(cfg: ArchiveConfig, *, max_bytes: int = 64 * 1024 * 1024, after_reads: int = 1
                ) -> ArchiveConfig:
    return dataclasses.replace(cfg, recall=RecallConfig(enabled=True, max_bytes=max_bytes,
                                                        after_reads=after_reads))


def put_study(archive: Archive, group: str, n: int = 12, seed: int = 1) -> dict[str, str]:
    """Store n random objects (4-12 KiB) of one study (group) and seal its packs; return id -> sha256."""
    rng = random.Random(seed)
    expected = {}
    for _ in range(n):
        data = rng.randbytes(rng.randrange(4096, 12288))
        expected[archive.put(data, group=group).id] = hashlib.sha256(data).hexdigest()
    archive.gc(repack_below=0.0)  # seals every open pack, drops nothing live
    return expected


def move_all(archive: Archive, tier: str) -> list[str]:
    names = []
    for p in archive.packs():
        archive.move_pack(p.id, tier, grace_s=0)
        names.append(p.id)
    return names


def cached_on_disk(root: Path) -> set[str]:
    folder = root / RECALL_DIR
    return {f.name[:-5] for f in folder.glob("??/*.pack")} if folder.exists() else set()


class _CountingFile:
    def __init__(self, inner: PackFile, counter: list[int]) -> None:
        self.name = inner.name
        self._inner = inner
        self._counter = counter

    def read_at(self, offset: int, length: int) -> bytes:
        data = self._inner.read_at(offset, length)
        self._counter[0] += len(data)
        return data

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_reads(monkeypatch: pytest.MonkeyPatch, tier: Tier) -> list[int]:
    """Count the bytes read from ``tier`` through its readers (by reads and by fetches alike)."""
    counter = [0]
    original = tier.reader

    def reader(pack: str, size: int | None = None) -> _CountingFile:
        return _CountingFile(original(pack, size), counter)

    monkeypatch.setattr(tier, "reader", reader)
    return counter


@contextmanager
def held_fetches(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Background fetches wait until the event is set (set on leaving)."""
    go = threading.Event()
    original = RecallCache._fetch

    def fetch(self: RecallCache, name: str, tier: Tier, size: int) -> None:
        assert go.wait(10), "the test never let the fetch go"
        original(self, name, tier, size)

    monkeypatch.setattr(RecallCache, "_fetch", fetch)
    try:
        yield go
    finally:
        go.set()


def sizes(archive: Archive) -> dict[str, int]:
    return {p.id: p.size for p in archive.packs()}


# -- configuration ----------------------------------------------------------------------------------------


def test_recall_config_round_trips_and_is_checked() -> None:
    default = ArchiveConfig()
    assert "[recall]" not in default.to_toml()
    cfg = with_recall(default, max_bytes=3 * 1024**3, after_reads=2)
    text = cfg.to_toml()
    assert '[recall]\nenabled = true\nmax_bytes = "3GiB"\nafter_reads = 2' in text
    assert ArchiveConfig.from_dict(tomllib.loads(text)) == cfg
    parsed = ArchiveConfig.from_dict({"recall": {"enabled": True, "max_bytes": "512MiB"}})
    assert parsed.recall == RecallConfig(True, 512 * 1024**2, 1)
    for bad in ({"enabled": "yes"}, {"after_reads": 0}, {"max_bytes": "lots"}, {"size": 1},
                {"after_reads": True}):
        with pytest.raises(InvalidInputError):
            ArchiveConfig.from_dict({"recall": bad})


def test_disabled_recall_touches_nothing(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, two_tier_config(tmp_path)) as archive:
        expected = put_study(archive, "s1")
        move_all(archive, "disk")
        check_all(archive, expected)
        stats = archive.recall_stats()
        assert not stats.enabled and stats.hits == stats.misses == stats.packs == 0
    assert not (root / RECALL_DIR).exists()


# -- reads, fetches and hits --------------------------------------------------------------------------------


def _stream_then_hit(archive: Archive, root: Path, cold: str, monkeypatch: pytest.MonkeyPatch,
                     expected: dict[str, str], remote_bytes: Callable[[], int]) -> None:
    """The first read streams (no waiting for the pack), the fetch follows, later reads hit."""
    packs = sizes(archive)
    assert packs and all(p.tier == cold for p in archive.packs())
    tier_bytes = count_reads(monkeypatch, archive.tiers.get(cold))
    first = next(iter(expected))
    with held_fetches(monkeypatch) as go:
        before = remote_bytes()
        data = archive.get(first)
        assert hashlib.sha256(data).hexdigest() == expected[first]
        # Served by ranged reads while the fetch waits: nothing cached, about the object's bytes read.
        stats = archive.recall_stats()
        assert stats.misses >= 1 and stats.hits == 0 and stats.fetched_packs == 0 and stats.packs == 0
        assert not cached_on_disk(root)
        assert 0 < tier_bytes[0] < min(packs.values()) and tier_bytes[0] < len(data) + 4096
        assert remote_bytes() - before < len(data) + 4096
        go.set()
        assert archive.recall.wait_idle(10)
    stats = archive.recall_stats()
    assert stats.fetched_packs == 1 and stats.packs == 1 and stats.failed_fetches == 0
    (fetched,) = cached_on_disk(root)
    assert stats.fetched_bytes == stats.bytes == packs[fetched]
    read_before = tier_bytes[0]
    hits = stats.hits
    assert hashlib.sha256(archive.get(first)).hexdigest() == expected[first]
    assert archive.recall_stats().hits > hits and tier_bytes[0] == read_before  # from the local copy
    check_all(archive, expected)  # the other packs: streamed, then fetched
    assert archive.recall.wait_idle(10)
    assert cached_on_disk(root) == set(packs) and archive.recall_stats().fetched_packs == len(packs)
    read_before, misses = tier_bytes[0], archive.recall_stats().misses
    check_all(archive, expected)
    assert tier_bytes[0] == read_before and archive.recall_stats().misses == misses


def test_first_read_streams_then_the_pack_is_fetched_and_later_reads_hit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1", n=40)  # several packs
        move_all(archive, "disk")
        _stream_then_hit(archive, root, "disk", monkeypatch, expected, lambda: 0)
        assert archive.verify().ok


def test_first_read_from_s3_is_ranged_gets_then_reads_hit_the_cache(
        s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(three_tier_config(tmp_path, s3_env))) as archive:
        expected = put_study(archive, "s1", n=40)
        move_all(archive, "cold")
        got = [0]

        def on_get(parsed: dict[str, Any], **_kw: Any) -> None:
            got[0] += int(parsed.get("ContentLength", 0))

        client = archive.tiers.get("cold").client  # type: ignore[attr-defined]
        client.meta.events.register("after-call.s3.GetObject", on_get)
        _stream_then_hit(archive, root, "cold", monkeypatch, expected, lambda: got[0])
        assert archive.verify().ok


def test_after_reads_delays_the_fetch(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path), after_reads=3)) as archive:
        expected = put_study(archive, "s1", n=4)
        (pack,) = move_all(archive, "disk")
        oid = next(iter(expected))
        for _ in range(2):
            archive.get(oid)
            assert archive.recall.wait_idle(10)
            assert archive.recall_stats().fetched_packs == 0
        archive.get(oid)
        assert archive.recall.wait_idle(10)
        assert cached_on_disk(root) == {pack}


def test_packs_on_the_landing_tier_are_never_cached(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1")
        check_all(archive, expected)
        assert archive.recall.wait_idle(10)
        stats = archive.recall_stats()
        assert stats.misses == stats.hits == stats.fetched_packs == 0 and not cached_on_disk(root)


# -- eviction ------------------------------------------------------------------------------------------------


def test_eviction_keeps_the_cache_within_max_bytes_least_recently_used_first(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    cfg = two_tier_config(tmp_path)
    with Archive.create(root, cfg) as archive:
        studies = {g: put_study(archive, g, n=10, seed=i) for i, g in enumerate("abc")}
        move_all(archive, "disk")
        by_group = {p.group: p for p in archive.packs()}
        assert sorted(by_group) == ["a", "b", "c"]  # one pack per study
    budget = 2 * max(p.size for p in by_group.values())
    assert 3 * min(p.size for p in by_group.values()) > budget
    cfg = with_recall(cfg, max_bytes=budget)
    (root / "mmarchive.toml").write_text(dataclasses.replace(cfg, archive_id=archive.config.archive_id)
                                         .to_toml())

    def read_study(archive: Archive, group: str) -> None:
        check_all(archive, studies[group])
        assert archive.recall.wait_idle(10)

    with Archive.open(root) as archive:
        read_study(archive, "a")
        read_study(archive, "b")
        assert cached_on_disk(root) == {by_group["a"].id, by_group["b"].id}
        hits = archive.recall_stats().hits
        read_study(archive, "a")  # a is now more recently used than b
        assert archive.recall_stats().hits > hits
        read_study(archive, "c")
        stats = archive.recall_stats()
        assert cached_on_disk(root) == {by_group["a"].id, by_group["c"].id}
        assert stats.evictions == 1 and stats.bytes <= budget and stats.max_bytes == budget
        read_study(archive, "b")  # back in, evicting a (c was fetched later than a's last read)
        assert cached_on_disk(root) == {by_group["b"].id, by_group["c"].id}
        assert archive.recall_stats().bytes <= budget
    # Last use is seeded from file times on open: c, made the oldest by its file time, goes first.
    os.utime(root / RECALL_DIR / by_group["c"].id[:2] / (by_group["c"].id + ".pack"), (1, 1))
    with Archive.open(root) as archive:
        assert archive.recall_stats().packs == 2
        read_study(archive, "a")
        assert cached_on_disk(root) == {by_group["a"].id, by_group["b"].id}


def test_a_pack_larger_than_the_budget_is_never_fetched(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path), max_bytes=4096)) as archive:
        expected = put_study(archive, "s1")
        move_all(archive, "disk")
        check_all(archive, expected)
        assert archive.recall.wait_idle(10)
        assert archive.recall_stats().fetched_packs == 0 and not cached_on_disk(root)


# -- correctness: damage and staleness ---------------------------------------------------------------------


def test_a_damaged_cached_copy_is_dropped_and_the_read_served_from_the_tier(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1", n=6)
        (pack,) = move_all(archive, "disk")
        check_all(archive, expected)
        assert archive.recall.wait_idle(10) and cached_on_disk(root) == {pack}
        path = root / RECALL_DIR / pack[:2] / f"{pack}.pack"
        size = path.stat().st_size
        with open(path, "r+b") as f:  # damage every record (same file: the cache's open descriptor sees it)
            f.seek(64)
            f.write(bytes(size - 128))
        check_all(archive, expected)  # correct bytes, from the disk tier
        stats = archive.recall_stats()
        assert stats.dropped == 1
        assert archive.recall.wait_idle(10)  # fetched again (the read counted), verified
        assert cached_on_disk(root) == {pack} and archive.recall_stats().fetched_packs == 2
        hits = archive.recall_stats().hits
        check_all(archive, expected)
        assert archive.recall_stats().hits >= hits + len(expected)
        path = root / RECALL_DIR / pack[:2] / f"{pack}.pack"
        os.truncate(path, size // 2)  # cut short: damage too
        check_all(archive, expected)
        assert archive.recall_stats().dropped == 2
        report = archive.verify()
        assert report.ok, report  # the cache's damage is not the archive's


def test_a_copy_that_does_not_verify_on_fetch_is_never_used(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1", n=6)
        move_all(archive, "disk")
        disk = archive.tiers.get("disk")
        original = disk.reader

        def damaged(pack: str, size: int | None = None) -> PackFile:  # the fetch reads a flipped byte
            src = original(pack, size)
            real = src.read_at

            def read_at(offset: int, length: int) -> bytes:
                data = real(offset, length)
                return bytes([data[0] ^ 1]) + data[1:] if offset == 0 and length > 1024 else data

            src.read_at = read_at  # type: ignore[method-assign]
            return src

        monkeypatch.setattr(disk, "reader", damaged)
        check_all(archive, expected)
        assert archive.recall.wait_idle(10)
        stats = archive.recall_stats()
        assert stats.failed_fetches == 1 and stats.fetched_packs == 0 and not cached_on_disk(root)
        assert not list((root / RECALL_DIR).rglob("*.pack"))  # nothing left in staging either
        check_all(archive, expected)  # not retried at once (a back-off), reads still from the tier
        assert archive.recall.wait_idle(10) and archive.recall_stats().failed_fetches == 1


def test_a_pack_moved_back_to_landing_is_not_served_from_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1", n=6)
        (pack,) = move_all(archive, "disk")
        check_all(archive, expected)
        assert archive.recall.wait_idle(10) and cached_on_disk(root) == {pack}
        kept = tmp_path / "kept.pack"
        shutil.copy(root / RECALL_DIR / pack[:2] / f"{pack}.pack", kept)
        archive.move_pack(pack, "ssd", grace_s=0)
        assert not cached_on_disk(root)  # the move dropped the copy
        # Even a copy put back behind the cache's back is not consulted: the index says landing.
        shutil.copy(kept, root / RECALL_DIR / pack[:2] / f"{pack}.pack")
        stats = archive.recall_stats()
        check_all(archive, expected)
        assert archive.recall.wait_idle(10)
        after = archive.recall_stats()
        assert (after.hits, after.misses, after.fetched_packs) == (stats.hits, stats.misses,
                                                                  stats.fetched_packs)
    with Archive.open(root) as archive:  # and the next open prunes it
        assert not cached_on_disk(root) and archive.recall_stats().dropped == 1
        archive.move_pack(pack, "disk", grace_s=0)  # cold again: cached again once read
        check_all(archive, expected)
        assert archive.recall.wait_idle(10) and cached_on_disk(root) == {pack}


def test_a_pack_repacked_by_gc_is_not_served_from_a_stale_copy(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1", n=10)
        (old,) = move_all(archive, "disk")
        check_all(archive, expected)
        assert archive.recall.wait_idle(10) and cached_on_disk(root) == {old}
        for oid in list(expected)[::2]:
            archive.delete(oid)
            del expected[oid]
        report = archive.gc(repack_below=0.9)
        assert report.packs_repacked >= 1
        (new,) = [p.id for p in archive.packs() if p.tier == "disk"]
        assert new != old
        assert not cached_on_disk(root)  # gc dropped the old pack's copy
        hits = archive.recall_stats().hits
        check_all(archive, expected)
        assert archive.recall_stats().hits == hits  # the new pack: streamed, then fetched
        assert archive.recall.wait_idle(10) and cached_on_disk(root) == {new}
        check_all(archive, expected)
        assert archive.recall_stats().hits > hits
        assert archive.verify().ok


def test_copies_of_packs_the_index_does_not_know_are_pruned_on_open(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1", n=6)
        (pack,) = move_all(archive, "disk")
        check_all(archive, expected)
        assert archive.recall.wait_idle(10)
    stray = "ab" + "0" * 30
    (root / RECALL_DIR / "ab").mkdir(exist_ok=True)
    shutil.copy(root / RECALL_DIR / pack[:2] / f"{pack}.pack", root / RECALL_DIR / "ab" / f"{stray}.pack")
    (root / RECALL_DIR / ".incoming" / "999999999-dead").mkdir(parents=True)  # a crashed fetcher's
    with Archive.open(root, readonly=True) as archive:
        assert cached_on_disk(root) == {pack} and archive.recall_stats().dropped == 1
        assert not (root / RECALL_DIR / ".incoming" / "999999999-dead").exists()


# -- reopening and read-only handles ------------------------------------------------------------------------


def test_the_cache_survives_reopen_and_serves_read_only_handles(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1", n=40)
        names = move_all(archive, "disk")
        check_all(archive, expected)
        assert archive.recall.wait_idle(10)
        total = archive.recall_stats().bytes
    assert cached_on_disk(root) == set(names)
    for readonly in (False, True):
        with Archive.open(root, readonly=readonly) as archive:
            stats = archive.recall_stats()
            assert stats.packs == len(names) and stats.bytes == total
            tier_bytes = count_reads(monkeypatch, archive.tiers.get("disk"))
            check_all(archive, expected)
            assert tier_bytes[0] == 0 and archive.recall_stats().misses == 0
            monkeypatch.undo()


def test_a_read_only_handle_fills_the_cache_too(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1", n=6)
        (pack,) = move_all(archive, "disk")
    with Archive.open(root) as writer, Archive.open(root, readonly=True) as reader:
        check_all(reader, expected)
        assert reader.recall.wait_idle(10) and cached_on_disk(root) == {pack}
        check_all(writer, expected)  # the writer finds the reader's copy on disk
        stats = writer.recall_stats()
        assert stats.hits >= len(expected) and stats.fetched_packs == 0 and stats.misses == 0


def test_closing_abandons_a_fetch_in_progress_and_leaves_no_staging(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    root = tmp_path / "archive"
    with Archive.create(root, with_recall(two_tier_config(tmp_path))) as archive:
        expected = put_study(archive, "s1", n=6)
        move_all(archive, "disk")
        with held_fetches(monkeypatch):
            check_all(archive, expected)
            assert not archive.recall.wait_idle(0.05)
            closer = threading.Thread(target=archive.close)
            closer.start()
            while not archive.recall._stop.is_set():  # the fetch is let go only once closing began
                time.sleep(0.001)
        closer.join(10)
        assert not closer.is_alive()
    assert not cached_on_disk(root)
    assert not list((root / RECALL_DIR).rglob("*.pack")) if (root / RECALL_DIR).exists() else True
