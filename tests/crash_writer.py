"""A writer process for the crash tests: it writes to an archive until it is killed with SIGKILL.

Run as ``python tests/crash_writer.py ARCHIVE SEED LOG [--mode loop|hold] [--no-gc] [--no-delete]``.

``loop`` opens the archive for writing and loops forever: ``put`` and ``put_many`` of objects of varied
sizes (empty, tiny, around the chunk threshold, multi-chunk; random, compressible and repeated bytes),
deletes, and now and then a ``gc``. Every step is written to the append-only ``LOG``, one line each:

- ``o``                      before ``Archive.open`` (the parent may kill the process during recovery)
- ``r``                      the archive is open
- ``p TENANT ID SHA256``     before a put of that object (intent: it may or may not exist after a crash)
- ``P TENANT ID SHA256``     after the put returned (acknowledged: it must exist, byte-exact)
- ``d TENANT ID``            before a delete (intent)
- ``D TENANT ID``            after the delete returned, or when it found no such object (must not exist)
- ``g`` / ``G``              before / after a gc

Intent lines are written with ``os.write`` (a SIGKILL does not lose what reached the kernel); each
acknowledgement is fsynced, and written only after the call returned. ``hold`` opens the archive for
writing, writes ``r`` and sleeps, holding the writer lock until it is killed. ``gc`` and ``reindex`` open
the archive, run that one operation and exit.

``--crash-at POINT`` makes the process SIGKILL itself at one exact moment that a kill at a random time
would hardly ever hit (the library code runs unchanged up to that moment):

- ``unlink-pack:NAME``  gc switched the index away from pack NAME, its file is not removed yet
- ``reindex-swap``      reindex moved the old index aside, the rebuilt one is not renamed into place yet
- ``mark-sealed``       a pack has its TOC and footer on disk, the index does not say sealed yet
- ``index-write:N``     the N-th index transaction is about to run (pack data of a commit is synced)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import blake3

from mmarchive.archive import Archive, PutItem
from mmarchive.errors import NotFoundError
from mmarchive.index.env import IndexEnv
from mmarchive.tiers.local import LocalTier
from mmarchive.writepath import WritePath

T = TypeVar("T")

TENANTS = ("default", "t2")
GROUPS = ("", "study-a", "study-b")
#: How many objects the writer keeps live before it leans towards deleting.
SOFT_LIVE_LIMIT = 150


class Log:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def intent(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def ack(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())
        os.fsync(self.fd)


def make_content(rng: random.Random, threshold: int, shared: list[bytes]) -> bytes:
    """Bytes of a new object; sometimes one of ``shared`` (dedup) or built from its pieces."""
    r = rng.random()
    if r < 0.15 and shared:
        return rng.choice(shared)
    if r < 0.22 and shared:  # shares chunks with an earlier multi-chunk object, then diverges
        base = max(shared, key=len)
        return base[: rng.randrange(1, len(base) + 1)] + rng.randbytes(rng.randrange(0, threshold))
    size_class = rng.random()
    if size_class < 0.05:
        size = 0
    elif size_class < 0.35:
        size = rng.randrange(1, 300)
    elif size_class < 0.60:
        size = threshold + rng.randrange(-3, 4)  # right at the chunk threshold
    elif size_class < 0.75:
        size = rng.randrange(300, threshold)
    else:
        size = rng.randrange(threshold + 1, 6 * threshold)  # several chunks
    style = rng.random()
    if style < 0.4:
        data = rng.randbytes(size)
    elif style < 0.8:
        words = [b"PatientName", b"^", b"CT", b"1.2.840.10008", b" ", b"\x00\x00", b"MR", b"series"]
        data = b"".join(rng.choice(words) for _ in range(size // 3 + 1))[:size]
    else:
        data = bytes([rng.randrange(256)]) * size
    return data


def ids(data: bytes) -> tuple[str, str]:
    return blake3.blake3(data).hexdigest(), hashlib.sha256(data).hexdigest()


def run_loop(archive_dir: str, seed: int, log: Log, *, gc: bool, delete: bool) -> None:
    rng = random.Random(seed)
    log.intent("o")
    archive = Archive.open(archive_dir)
    log.intent("r")
    threshold = archive.config.store.chunk_threshold
    live: dict[tuple[str, str], None] = {}
    for tenant in archive.tenants():
        for info in archive.list(tenant=tenant):
            live[(tenant, info.id)] = None
    shared: list[bytes] = [rng.randbytes(3 * threshold), b"shared object " * 40, b""]
    counter = 0
    while True:
        counter += 1
        r = rng.random()
        lean_delete = len(live) > SOFT_LIVE_LIMIT
        if delete and live and (r < 0.15 or (lean_delete and r < 0.5)):
            tenant, oid = rng.choice(list(live))
            log.intent(f"d {tenant} {oid}")
            with contextlib.suppress(NotFoundError):  # then it is gone as well
                archive.delete(oid, tenant=tenant)
            log.ack(f"D {tenant} {oid}")
            del live[(tenant, oid)]
        elif gc and r > 0.985:
            log.intent("g")
            archive.gc(repack_below=rng.choice((0.3, 0.5, 0.9)))
            log.intent("G")
        elif r < 0.65:
            data = make_content(rng, threshold, shared)
            tenant = rng.choice(TENANTS)
            oid, sha = ids(data)
            metadata = {"n": counter} if rng.random() < 0.3 else None
            log.intent(f"p {tenant} {oid} {sha}")
            info = archive.put(data, tenant=tenant, group=rng.choice(GROUPS), metadata=metadata)
            assert info.id == oid
            log.ack(f"P {tenant} {oid} {sha}")
            live[(tenant, oid)] = None
            if len(data) > threshold and rng.random() < 0.3:
                shared.append(data)
                del shared[3:-12]  # keep a few, bounded
        else:
            batch: list[tuple[str, bytes]] = []
            for _ in range(rng.randrange(1, 9)):
                batch.append((rng.choice(TENANTS), make_content(rng, threshold, shared)))
            expect: list[tuple[str, str, str]] = []
            for tenant, data in batch:
                oid, sha = ids(data)
                expect.append((tenant, oid, sha))
                log.intent(f"p {tenant} {oid} {sha}")
            items: Iterator[PutItem] = (PutItem(data, tenant=tenant, group=rng.choice(GROUPS))
                                        for tenant, data in batch)
            for (tenant, oid, sha), info in zip(expect, archive.put_many(items), strict=True):
                assert info.id == oid and info.tenant == tenant
                log.ack(f"P {tenant} {oid} {sha}")
                live[(tenant, oid)] = None


def run_hold(archive_dir: str, log: Log) -> None:
    log.intent("o")
    archive = Archive.open(archive_dir)
    log.intent("r")
    try:
        while True:
            time.sleep(3600)
    finally:
        archive.close()


def die() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def install_crash_point(spec: str) -> None:
    kind, _, arg = spec.partition(":")
    if kind == "unlink-pack":
        remove = LocalTier.remove

        def remove_or_die(self: LocalTier, name: str) -> None:
            if name == arg:
                die()
            remove(self, name)

        LocalTier.remove = remove_or_die  # type: ignore[method-assign]
    elif kind == "reindex-swap":
        rename = Path.rename

        def rename_or_die(self: Path, target: Any) -> Path:
            if self.name.endswith(".rebuild"):
                die()
            return rename(self, target)

        Path.rename = rename_or_die  # type: ignore[method-assign,assignment]
    elif kind == "mark-sealed":
        def mark_sealed_die(self: WritePath, pack_id: bytes, size: int) -> None:
            die()

        WritePath._mark_sealed = mark_sealed_die  # type: ignore[method-assign]
    elif kind == "index-write":
        write = IndexEnv.write
        left = [int(arg)]

        def write_or_die(self: IndexEnv, fn: Callable[[Any], T]) -> T:
            left[0] -= 1
            if left[0] <= 0:
                die()
            return write(self, fn)

        IndexEnv.write = write_or_die  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {spec!r}")


def run_once(archive_dir: str, log: Log, op: str) -> None:
    log.intent("o")
    with Archive.open(archive_dir) as archive:
        log.intent("r")
        if op == "gc":
            archive.gc(repack_below=0.99)
        else:
            archive.reindex()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("archive")
    parser.add_argument("seed", type=int)
    parser.add_argument("log")
    parser.add_argument("--mode", choices=("loop", "hold", "gc", "reindex"), default="loop")
    parser.add_argument("--no-gc", action="store_true")
    parser.add_argument("--no-delete", action="store_true")
    parser.add_argument("--crash-at", metavar="POINT")
    parser.add_argument("--wait-go", action="store_true",
                        help="read one line from stdin before starting (lets the parent start us early)")
    args = parser.parse_args(argv)
    log = Log(args.log)
    if args.wait_go and sys.stdin.readline().strip() != "go":
        return 1  # the parent went away
    if args.crash_at:
        install_crash_point(args.crash_at)
    if args.mode == "hold":
        run_hold(args.archive, log)
    elif args.mode in ("gc", "reindex"):
        run_once(args.archive, log, args.mode)
    else:
        run_loop(args.archive, args.seed, log, gc=not args.no_gc, delete=not args.no_delete)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
