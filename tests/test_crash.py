"""Durability under SIGKILL, the writer lock across processes, and concurrent puts in one process.

The promise under test: a ``put`` that returned is durable; a crash at any moment leaves an archive that
opens, keeps every acknowledged object byte-exact, and at most holds unreferenced data that ``gc``
reclaims. ``tests/crash_writer.py`` writes in a loop and logs every step (intent before, acknowledgement
after, see its docstring); the tests kill it with SIGKILL and check the archive against that log.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import blake3
import pytest

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, IndexConfig, KiB, MiB, StoreConfig
from mmarchive.errors import ArchiveLockedError
from mmarchive.index.schema import DB_PACKS, PackEntry
from mmarchive.pack.format import pack_name
from mmarchive.records import ArchiveStats, VerifyReport

WRITER = Path(__file__).with_name("crash_writer.py")

#: Objects over 8 KiB are chunked (4-16 KiB chunks), packs seal at 32 KiB, put_many commits every 4
#: objects and the index starts at 1 MiB, so a few hundred small objects reach every edge (many seals,
#: repacks, map growth) cheaply.
CONFIG = ArchiveConfig(
    store=StoreConfig(chunk_threshold=8 * KiB, chunk_min=4 * KiB, chunk_avg=8 * KiB, chunk_max=16 * KiB,
                      pack_size=32 * KiB, parallel_threshold=4 * KiB),
    index=IndexConfig(map_size=1 * MiB, commit_objects=4, commit_bytes=64 * KiB),
)

Key = tuple[str, str]  # (tenant, object id)

LIVE, GONE, UNKNOWN = "live", "gone", "unknown"


# -- the writer process and its log ------------------------------------------------------------------


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_stray_writers() -> Iterator[None]:
    """Kill any writer a failing test left running (only the processes this module started)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Writer:
    """One ``crash_writer.py`` process; watches the lines it appends to its log."""

    def __init__(self, archive: Path, log: Path, seed: int, *args: str, early: bool = False) -> None:
        """Start the writer; ``early`` starts it waiting (imports done) until :meth:`go`."""
        self.log = log
        log.touch()
        self._pos = log.stat().st_size
        self._partial = b""
        self.last_line = ""
        self._stderr_path = log.with_name(log.name + f".{seed}.stderr")
        self._stderr: IO[bytes] = open(self._stderr_path, "wb")  # noqa: SIM115 (closed in _reap)
        self.proc = subprocess.Popen([sys.executable, str(WRITER), str(archive), str(seed), str(log),
                                      *args, *(["--wait-go"] if early else [])],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        _STARTED.append(self.proc)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def _new_lines(self) -> list[str]:
        with open(self.log, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        self._pos += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        out = [line.decode() for line in lines]
        if out:
            self.last_line = out[-1]
        return out

    def wait_for(self, pred: Callable[[str], bool], timeout: float) -> bool:
        """Wait until the writer logs a line matching ``pred``; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if any(pred(line) for line in self._new_lines()):
                return True
            if self.proc.poll() is not None:
                self._new_lines()
                pytest.fail(f"the writer exited by itself (rc {self.proc.returncode}):\n{self.stderr()}")
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)

    def stderr(self) -> str:
        self._stderr.flush()
        return self._stderr_path.read_text(errors="replace")[-5000:]

    def kill(self) -> str:
        """SIGKILL the writer; return the last line it logged (what it was doing)."""
        if self.proc.poll() is not None:
            pytest.fail(f"the writer exited by itself (rc {self.proc.returncode}):\n{self.stderr()}")
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._new_lines()
        self._reap()
        return self.last_line

    def wait_exit(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reap()
            pytest.fail(f"the writer did not exit in {timeout}s:\n{self.stderr()}")
        self._new_lines()
        self._reap()
        return rc

    def _reap(self) -> None:
        self._stderr.close()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()


@dataclass
class Ledger:
    """What the log says about each object: LIVE (acknowledged), GONE (deletion acknowledged), UNKNOWN."""

    state: dict[Key, str] = field(default_factory=dict)
    sha: dict[str, str] = field(default_factory=dict)  # object id -> sha256 of its bytes

    def live(self) -> set[Key]:
        return {k for k, s in self.state.items() if s == LIVE}


def read_ledger(log: Path) -> Ledger:
    ledger = Ledger()
    state = ledger.state
    raw = log.read_bytes()
    for line in raw.decode().split("\n")[:-1]:  # a last line without its newline was never finished
        parts = line.split()
        op = parts[0]
        if op in ("p", "P"):
            tenant, oid, sha = parts[1:]
            ledger.sha[oid] = sha
            key = (tenant, oid)
            if op == "P":
                state[key] = LIVE
            elif state.get(key) != LIVE:  # a put of something live keeps it live whatever happens
                state[key] = UNKNOWN
        elif op == "d":
            key = (parts[1], parts[2])
            state[key] = GONE if state.get(key) == GONE else UNKNOWN
        elif op == "D":
            state[(parts[1], parts[2])] = GONE
        elif op == "X":  # the parent's resolution of an UNKNOWN after a crash
            state[(parts[1], parts[2])] = parts[3]
    return ledger


def resolve(log: Path, resolved: dict[Key, str]) -> None:
    """Record what the reopened archive holds for objects whose last operation was cut off."""
    with open(log, "a") as f:
        for (tenant, oid), st in sorted(resolved.items()):
            f.write(f"X {tenant} {oid} {st}\n")


# -- checking an archive against the ledger ----------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_archive(archive: Archive, ledger: Ledger, *, where: str) -> tuple[dict[Key, str], VerifyReport]:
    """Every acknowledged object reads back byte-exact, deleted ones are gone, verify is ok.

    Returns the resolution of the UNKNOWN objects (present or not) and the verify report.
    """
    resolved: dict[Key, str] = {}
    sizes: dict[Key, int] = {}
    for key, st in sorted(ledger.state.items()):
        tenant, oid = key
        present = archive.exists(oid, tenant=tenant)
        if st == GONE:
            assert not present, f"{where}: object {key} was deleted (acknowledged) but exists"
            continue
        if st == LIVE:
            assert present, f"{where}: acknowledged object {key} is missing"
        if present:
            data = archive.get(oid, tenant=tenant)
            assert sha256(data) == ledger.sha[oid], f"{where}: object {key} reads back wrong bytes"
            if len(data) > CONFIG.store.chunk_threshold:
                with archive.open_object(oid, tenant=tenant) as f:
                    f.seek(len(data) // 3)
                    assert f.read() == data[len(data) // 3:], f"{where}: {key} wrong through open_object"
            sizes[key] = len(data)
        if st == UNKNOWN:
            resolved[key] = LIVE if present else GONE

    listed = {(t, info.id) for t in archive.tenants() for info in archive.list(tenant=t)}
    phantoms = {k for k in listed if k not in sizes}
    assert not phantoms, f"{where}: objects listed that were never put or were deleted: {phantoms}"
    assert listed == set(sizes), f"{where}: list() misses {set(sizes) - listed}"
    for tenant in {t for t, _ in listed} | set(archive.tenants()):
        stats = archive.stats(tenant=tenant)
        mine = {k: n for k, n in sizes.items() if k[0] == tenant}
        assert (stats.objects, stats.logical_bytes) == (len(mine), sum(mine.values())), \
            f"{where}: tenant {tenant} totals {stats} do not match its {len(mine)} objects"
    assert archive.stats().objects == len(listed)

    report = archive.verify()
    assert report.ok, f"{where}: verify failed: {report.to_json()}"
    assert report.objects_checked == len(listed)
    return resolved, report


def new_archive(path: Path) -> None:
    Archive.create(path, CONFIG).close()


def check_after_crash(archive_dir: Path, log: Path, *, where: str) -> VerifyReport:
    t0 = time.monotonic()
    with Archive.open(archive_dir) as archive:  # the writer lock of the killed process is not stale
        assert time.monotonic() - t0 < 10
        resolved, report = check_archive(archive, read_ledger(log), where=where)
    resolve(log, resolved)
    return report


# -- SIGKILL at random moments -----------------------------------------------------------------------

#: How the parent picks the moment of each kill; the last line the writer logged tells where it landed.
STRATEGIES = (["during-open"] * 4 + ["just-opened"] * 3 + ["during-gc"] * 5 + ["right-after-an-ack"] * 4
              + ["after-a-while"] * 10)


def test_sigkill_at_random_moments_loses_no_acknowledged_object(tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    log = tmp_path / "ack.log"
    new_archive(archive_dir)
    rng = random.Random(20240611)
    plan = list(STRATEGIES)
    rng.shuffle(plan)
    assert len(plan) >= 20
    landed: Counter[str] = Counter()
    orphans_seen: set[str] = set()
    writer = Writer(archive_dir, log, 1000, early=True)
    for i, strategy in enumerate(plan):
        writer.go()
        if strategy == "during-open":
            assert writer.wait_for(lambda line: line == "o", 30)
            time.sleep(rng.uniform(0, 0.0015))  # Archive.open and its recovery take about a millisecond
        else:
            assert writer.wait_for(lambda line: line == "r", 30)
            if strategy == "just-opened":
                time.sleep(rng.uniform(0, 0.003))
            elif strategy == "during-gc":
                writer.wait_for(lambda line: line == "g", 5)
                time.sleep(rng.uniform(0, 0.006))
            elif strategy == "right-after-an-ack":  # the put returned: its commit must be done
                time.sleep(rng.uniform(0, 0.1))
                writer.wait_for(lambda line: line.startswith("P "), 5)
            else:
                time.sleep(rng.uniform(0.02, 0.4))
        last = writer.kill()
        if i + 1 < len(plan):  # the next one imports while this archive is checked, then waits for go()
            writer = Writer(archive_dir, log, 1001 + i, early=True)
        landed[{"o": "open", "r": "opened", "p": "put", "P": "between operations", "d": "delete",
                "D": "between operations", "g": "gc", "G": "after gc"}.get(last[:1], last)] += 1
        where = f"after kill {i} ({strategy}, last line {last!r})"
        report = check_after_crash(archive_dir, log, where=where)
        new_orphans = set(report.orphaned) - orphans_seen
        # Only a gc killed between its index switch and the unlink of the old pack leaves one.
        assert not new_orphans or last == "g", f"{where}: unreferenced pack files {new_orphans}"
        orphans_seen |= new_orphans

    print(f"\n{len(plan)} kills landed: {dict(landed)}; orphaned packs seen: {sorted(orphans_seen)}")
    assert landed["put"] + landed["delete"] >= 2 and landed["gc"] >= 1, \
        f"kills did not reach the write phases: {landed}"
    ledger = read_ledger(log)
    assert len(ledger.live()) >= 50, "the writers acknowledged too little to test anything"

    with Archive.open(archive_dir) as archive:
        _resolved, _ = check_archive(archive, ledger, where="before reindex")
        before = {t: archive.stats(tenant=t) for t in archive.tenants()}
        archive.reindex()
        check_archive(archive, ledger, where="after reindex")
        for tenant, stats in before.items():
            assert _totals(archive.stats(tenant=tenant)) == _totals(stats), \
                f"tenant {tenant}: totals kept by the index differ from the ones rebuilt from the packs"
        archive.gc()
        _r, report = check_archive(archive, ledger, where="after gc")
        # (reindex adopts every pack file, so none is left unreferenced for gc here)
        assert report.orphaned == [], f"unreferenced pack files after reindex and gc: {report.orphaned}"
    with Archive.open(archive_dir, readonly=True) as archive:
        check_archive(archive, ledger, where="reopened read-only")


def _totals(s: ArchiveStats) -> tuple[int, int, int, int]:
    return (s.objects, s.logical_bytes, s.unique_bytes, s.stored_bytes)


# -- SIGKILL at exact moments ------------------------------------------------------------------------


def _fill(archive_dir: Path, log: Path, seed: int, seconds: float) -> None:
    """Let a writer run a while (no crash points) and kill it, so there is state to lose."""
    writer = Writer(archive_dir, log, seed)
    assert writer.wait_for(lambda line: line == "r", 30)
    time.sleep(seconds)
    writer.kill()
    check_after_crash(archive_dir, log, where="after filling")


@pytest.mark.parametrize("point", ["mark-sealed", "index-write:3", "index-write:25", "index-write:60"])
def test_sigkill_at_exact_points_of_the_write_path(tmp_path: Path, point: str) -> None:
    """Killed after a seal hit the disk but not the index, or just before an index commit."""
    archive_dir = tmp_path / "archive"
    log = tmp_path / "ack.log"
    new_archive(archive_dir)
    _fill(archive_dir, log, 7, 0.15)
    writer = Writer(archive_dir, log, 8, "--crash-at", point)
    rc = writer.wait_exit(60)
    assert rc == -signal.SIGKILL, f"the crash point {point} was not reached (rc {rc}):\n{writer.stderr()}"
    check_after_crash(archive_dir, log, where=f"after a kill at {point}")
    # And once more through recovery by a writer that keeps going.
    _fill(archive_dir, log, 9, 0.1)


def test_sigkill_during_reindex_swap_keeps_the_index(tmp_path: Path) -> None:
    """A crash during reindex must leave an index that knows every acknowledged object.

    The reindex docstring promises the old index stays in place; a kill between its two renames
    (``index`` -> ``index.old``, ``index.rebuild`` -> ``index``) leaves no ``index`` at all.
    """
    archive_dir = tmp_path / "archive"
    log = tmp_path / "ack.log"
    new_archive(archive_dir)
    _fill(archive_dir, log, 11, 0.15)
    writer = Writer(archive_dir, log, 12, "--mode", "reindex", "--crash-at", "reindex-swap")
    assert writer.wait_exit(60) == -signal.SIGKILL
    check_after_crash(archive_dir, log, where="after a kill in the middle of reindex")


def _setup_deleted_object_in_repackable_pack(archive_dir: Path) -> tuple[str, str, str]:
    """Object X in a pack (group g1) with live neighbours, then X deleted: gc will repack that pack.

    Returns (id of X, id of a live neighbour, name of the pack holding X's manifest).
    """
    with Archive.create(archive_dir, CONFIG) as a:
        x = a.put(b"object X " * 300, group="g1")
        keep = a.put(os.urandom(6000), group="g1")
        a.put(os.urandom(100), group="g2")
        a.delete(x.id)  # X's manifest is now garbage in pack g1; its tombstone is in a group "" pack
        with a.index.read() as txn:
            packs = {k: PackEntry.decode(v) for k, v in txn.cursor(db=a.index.db(DB_PACKS))}
        g1 = [pack_name(k) for k, e in packs.items() if e.group == "g1" and not e.unused]
        assert len(g1) == 1
        return x.id, keep.id, g1[0]


def test_sigkill_between_gc_switch_and_unlink_leaves_nothing_gc_cannot_reclaim(tmp_path: Path) -> None:
    """gc repacks a pack, switches the index to the copy, and is killed before unlinking the old file.

    The old file is then unreferenced data; the issue requires that it is reclaimed. The index marks
    it as being deleted in the same transaction as the switch, so a read-only look sees no orphan and
    the next writer finishes the deletion when it opens.
    """
    archive_dir = tmp_path / "archive"
    _x, keep, old_pack = _setup_deleted_object_in_repackable_pack(archive_dir)
    writer = Writer(archive_dir, tmp_path / "log", 1, "--mode", "gc", "--crash-at",
                    f"unlink-pack:{old_pack}")
    assert writer.wait_exit(60) == -signal.SIGKILL
    old_file = next((archive_dir / "packs").rglob(old_pack + ".pack"))
    with Archive.open(archive_dir, readonly=True) as r:
        report = r.verify()
        assert report.ok and report.orphaned == [], report
        assert r.get(keep)
    assert old_file.exists()
    with Archive.open(archive_dir) as a:
        assert not old_file.exists(), "the writer did not finish the deletion a killed gc left"
        assert a.get(keep)
        a.gc()
        assert a.verify().orphaned == []


def test_deleted_object_stays_deleted_after_gc_crash_and_reindex(tmp_path: Path) -> None:
    """An acknowledged delete must survive a gc killed after its switch, a later gc, and a reindex.

    The old pack left by the killed gc still holds X's manifest; the next gc drops X's tombstone
    (it sees no manifest in any pack it knows), and reindex, which scans every file, brings X back.
    """
    archive_dir = tmp_path / "archive"
    x, keep, old_pack = _setup_deleted_object_in_repackable_pack(archive_dir)
    writer = Writer(archive_dir, tmp_path / "log", 1, "--mode", "gc", "--crash-at",
                    f"unlink-pack:{old_pack}")
    assert writer.wait_exit(60) == -signal.SIGKILL
    with Archive.open(archive_dir) as a:
        assert not a.exists(x)
        a.gc()
        assert not a.exists(x)
        a.reindex()
        assert a.get(keep)
        assert not a.exists(x), "a deleted object came back after gc and reindex"


# -- the writer lock and readers in other processes --------------------------------------------------


def test_second_writer_is_refused_and_readers_are_not(tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    new_archive(archive_dir)
    with Archive.open(archive_dir) as a:
        info = a.put(b"before the holder")
    holder = Writer(archive_dir, tmp_path / "log", 0, "--mode", "hold")
    assert holder.wait_for(lambda line: line == "r", 30)
    try:
        with pytest.raises(ArchiveLockedError) as e:
            Archive.open(archive_dir)
        assert f"pid {holder.proc.pid}" in str(e.value)
        with Archive.open(archive_dir, readonly=True) as r:
            assert r.get(info.id) == b"before the holder"
            assert r.verify().ok
    finally:
        holder.kill()
    with Archive.open(archive_dir) as a:  # the lock died with its holder
        assert a.get(info.id) == b"before the holder"
        a.put(b"after the holder")


def test_readers_in_another_process_read_while_the_writer_writes(tmp_path: Path) -> None:
    """A read-only handle reads every acknowledged object while the writer writes (and grows the map)."""
    archive_dir = tmp_path / "archive"
    log = tmp_path / "ack.log"
    new_archive(archive_dir)
    writer = Writer(archive_dir, log, 5, "--no-gc", "--no-delete")
    assert writer.wait_for(lambda line: line == "r", 30)
    reads = 0
    try:
        with Archive.open(archive_dir, readonly=True) as reader:
            deadline = time.monotonic() + 2.0
            seen: set[Key] = set()
            while time.monotonic() < deadline:
                writer.wait_for(lambda line: False, 0)  # fail early if the writer died
                ledger = read_ledger(log)
                for key in sorted(ledger.live() - seen):
                    tenant, oid = key
                    data = reader.get(oid, tenant=tenant)
                    assert sha256(data) == ledger.sha[oid], f"reader got wrong bytes for {key}"
                    seen.add(key)
                    reads += 1
                time.sleep(0.01)
            assert reader.stats().objects >= len(seen)
    finally:
        writer.kill()
    assert reads >= 50, f"the reader only read {reads} objects"
    check_after_crash(archive_dir, log, where="after the reader test")


# -- concurrent puts in one process ------------------------------------------------------------------


def test_concurrent_puts_from_threads(tmp_path: Path) -> None:
    """Threads put distinct and identical objects at once; all read back, and totals add up."""
    threads = 6
    per_thread = 25
    rng = random.Random(3)
    threshold = CONFIG.store.chunk_threshold
    # Random bytes so that distinct objects share no chunk; sizes on both sides of the chunk threshold.
    shared = [rng.randbytes(rng.choice((0, 10, 500, threshold, threshold + 1, 3 * threshold)))
              for _ in range(12)]
    own = [[rng.randbytes(rng.choice((1, 200, 3000, threshold, 2 * threshold + 5)))
            for _ in range(per_thread)] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    with Archive.create(tmp_path / "archive", CONFIG) as archive:

        def work(n: int) -> None:
            try:
                tenant = "default" if n % 2 == 0 else "t2"
                start.wait()
                mine = own[n]
                if n == 0:  # one thread streams through put_many meanwhile
                    infos = list(archive.put_many(mine + shared, tenant=tenant))
                    assert [i.id for i in infos] == [blake3.blake3(d).hexdigest() for d in mine + shared]
                    return
                for i, data in enumerate(mine):
                    info = archive.put(data, tenant=tenant, group=f"g{n % 3}")
                    assert archive.get(info.id, tenant=tenant) == data
                    same = shared[(i + n) % len(shared)]  # identical objects from every thread at once
                    archive.put(same, tenant=tenant, metadata={"thread": n} if i % 5 == 0 else None)
            except BaseException as e:
                errors.append(e)

        pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert not errors, errors

        expected: dict[Key, bytes] = {}
        for n in range(threads):
            tenant = "default" if n % 2 == 0 else "t2"
            for data in own[n] + shared:
                expected[(tenant, blake3.blake3(data).hexdigest())] = data
        for (tenant, oid), data in expected.items():
            assert archive.get(oid, tenant=tenant) == data
        listed = {(t, i.id) for t in archive.tenants() for i in archive.list(tenant=t)}
        assert listed == set(expected)
        for tenant in ("default", "t2"):
            mine = [d for (t, _), d in expected.items() if t == tenant]
            stats = archive.stats(tenant=tenant)
            assert stats.objects == len(mine)
            assert stats.logical_bytes == sum(map(len, mine))
            assert stats.unique_bytes == sum(map(len, mine))  # random bytes: no chunk in common
        assert archive.verify().ok
        before = {t: _totals(archive.stats(tenant=t)) for t in ("default", "t2")}
        archive.reindex()
        assert {t: _totals(archive.stats(tenant=t)) for t in ("default", "t2")} == before

