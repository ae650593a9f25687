"""The recall cache: whole copies of recently read packs of colder tiers, kept on the landing tier's disk.

A read from a colder tier is served by ranged reads of the pack where it is (never by waiting for a whole
download). With ``[recall] enabled``, every such read counts as an access of its pack; after
``after_reads`` accesses the whole sealed pack is fetched, on one background thread fed by a bounded queue
(a pack is fetched at most once at a time), into a private staging directory, checked there with
:func:`mmarchive.pack.transfer.check_sealed_copy` (length, footer, whole-pack checksum) and only then
renamed into ``ARCHIVE/recall/`` (two-hex-digit fan-out like the packs). So every file under its final name
was verified when it arrived, and later reads of the pack are positional reads of that local file. The
copies are a cache, never the truth: the archive asks for a copy only when the index says the pack is on a
colder tier, copies of packs the index no longer places there are removed (:meth:`RecallCache.prune`, on
open and by the move and gc paths through :meth:`RecallCache.discard`), and a copy whose record fails its
checksum is removed and the read served from the tier (:meth:`RecallCache.read`). The least recently used
copies are removed when they exceed ``max_bytes``; last use is kept in memory, seeded from file times on
open and written back to them at most once a minute per pack. Several processes may share the directory:
each stages in a folder of its own and renames, so two fetching the same pack only replace one verified
copy with another; each keeps the budget with what it sees on disk after every fetch. Read-only archive
handles use and fill the cache too (it is not part of the archive); a handle that cannot write there (a
read-only mount, permissions) reads without it. This module knows packs by name and size only: the
archive tells it what the index says.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mmarchive.config import RecallConfig
from mmarchive.errors import IntegrityError, StorageError
from mmarchive.pack.transfer import TRANSFER_BLOCK, check_sealed_copy
from mmarchive.tiers.base import PackFile, Tier
from mmarchive.tiers.local import LocalPackFile, LocalTier, fsync_directory

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The cache's directory inside the archive.
RECALL_DIR = "recall"
#: Where fetches are staged, one folder per cache instance (``PID-TOKEN``), inside the cache directory.
INCOMING_DIR = ".incoming"
#: Fetches waiting at most; reads that would queue more leave their pack for a later read.
QUEUE_DEPTH = 64
#: A cached copy's file time is brought up to date at most this often (seconds).
TOUCH_INTERVAL_S = 60.0
#: Packs whose accesses are counted (before their fetch) at most; the oldest counts are forgotten.
MAX_COUNTED = 65536
#: A pack whose fetch failed is not fetched again for this long (seconds); reads use its tier meanwhile.
RETRY_AFTER_S = 300.0


@dataclass(frozen=True)
class RecallStats:
    """What one archive handle's recall cache did since it opened, and what it holds now."""

    enabled: bool
    #: Chunk reads served from a cached copy.
    hits: int = 0
    #: Chunk reads of packs on colder tiers served by the tier (no usable cached copy).
    misses: int = 0
    #: Packs fetched into the cache (verified), and their bytes.
    fetched_packs: int = 0
    fetched_bytes: int = 0
    #: Fetches that failed (the tier could not be read, the copy did not verify, no space).
    failed_fetches: int = 0
    #: Copies removed to keep the cache within ``max_bytes``.
    evictions: int = 0
    #: Copies removed because they were damaged or the index no longer places their pack on a colder tier.
    dropped: int = 0
    #: Copies held now, and their bytes.
    packs: int = 0
    bytes: int = 0
    max_bytes: int = 0


class _SourceFailed(Exception):
    """The tier being fetched from failed (as opposed to the cache's own disk)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Stopped(Exception):
    """The cache is closing: the fetch in progress gives up."""


@dataclass
class _Entry:
    size: int
    last_used: float  # wall-clock seconds
    touched: float  # when the file time was last set (wall-clock seconds)


class RecallCache:
    """The recall cache of one archive handle (a no-op when ``config.enabled`` is false).

    ``known(names)`` returns, of the given pack names, those the index places (sealed) on a colder tier,
    with their sizes; it is used to prune copies on open and by :meth:`prune`.
    """

    def __init__(self, root: Path, config: RecallConfig, *,
                 known: Callable[[list[str]], Mapping[str, int]] | None = None) -> None:
        self.root = root
        self.config = config
        self.enabled = config.enabled
        self._known = known
        self._tier = LocalTier(root, name="recall", max_open=64)
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._pending: set[str] = set()
        self._failed_at: dict[str, float] = {}
        self._queue: queue.Queue[tuple[str, Tier, int] | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._fill = True  # false once this handle found it cannot write the cache
        self._incoming: LocalTier | None = None
        self._closed = False
        self._hits = self._misses = self._fetched = self._fetched_bytes = 0
        self._failed = self._evictions = self._dropped = 0
        if self.enabled:
            try:
                self._clean_incoming()
                self._rescan()
                if known is not None:
                    self.prune()
            except OSError as e:
                log.warning("recall cache: cannot use %s (%s); reads of colder tiers go to the tiers",
                            root, e)
                self.enabled = False

    # -- reading ------------------------------------------------------------------------------------

    def read(self, name: str, size: int, read: Callable[[PackFile], T]) -> T | None:
        """``read(copy)`` on the cached copy of pack ``name`` (``size`` bytes), or None when there is none.

        Call it only for a pack the index places on a colder tier. A copy whose read raises
        :class:`IntegrityError` (a record failed its checksum, the file is cut short) is removed and None
        returned, for the caller to read from the tier; such damage is the cache's, not the archive's.
        """
        if not self.enabled:
            return None
        src = self._open(name, size)
        if src is None:
            return None
        try:
            with src:
                result = read(src)
        except IntegrityError as e:
            log.warning("recall cache: the copy of pack %s in %s is damaged (%s); removed it, reading "
                        "from the pack's tier", name, self.root, e)
            self._remove(name, dropped=True)
            return None
        with self._lock:
            self._hits += 1
        return result

    def note_read(self, name: str, tier: Tier, size: int) -> None:
        """Count a read of pack ``name`` served by ``tier`` (a miss); queue its fetch when it is due."""
        if not self.enabled:
            return
        with self._lock:
            self._misses += 1
            if not self._fill or self._closed or name in self._entries or name in self._pending \
                    or size > self.config.max_bytes:
                return
            failed = self._failed_at.get(name)
            if failed is not None:
                if time.monotonic() - failed < RETRY_AFTER_S:
                    return
                del self._failed_at[name]
            count = self._counts.pop(name, 0) + 1
            if count < self.config.after_reads:
                self._counts[name] = count
                while len(self._counts) > MAX_COUNTED:
                    self._counts.popitem(last=False)
                return
            try:
                self._queue.put_nowait((name, tier, size))
            except queue.Full:
                self._counts[name] = count  # fetched after a later read, when the queue has room
                return
            self._pending.add(name)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="mmarchive-recall", daemon=True)
                self._thread.start()

    def _open(self, name: str, size: int) -> LocalPackFile | None:
        now = time.time()
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            entry = self._adopt(name, size)  # another handle or process may have fetched it
            if entry is None:
                return None
        if entry.size != size:
            self._remove(name, dropped=True)  # not the pack the index describes (cannot happen)
            return None
        try:
            src = self._tier.reader(name)
        except IntegrityError:  # removed meanwhile (another process evicted it)
            with self._lock:
                self._entries.pop(name, None)
            return None
        with self._lock:
            entry.last_used = now
            touch = now - entry.touched >= TOUCH_INTERVAL_S
            if touch:
                entry.touched = now
        if touch:  # on a read-only mount, or when removed meanwhile, last use stays in memory
            with contextlib.suppress(OSError):
                os.utime(self._tier.path(name), (now, now))
        return src

    def _adopt(self, name: str, size: int) -> _Entry | None:
        try:
            st = self._tier.path(name).stat()
        except OSError:
            return None
        if st.st_size != size:
            return None
        with self._lock:
            entry = self._entries.setdefault(name, _Entry(st.st_size, st.st_mtime, st.st_mtime))
        return entry

    # -- keeping it true and within budget -------------------------------------------------------------

    def discard(self, name: str) -> None:
        """Remove the copy of pack ``name`` (its pack left the colder tiers, or is gone)."""
        if self.enabled:
            self._remove(name, dropped=True)

    def prune(self, known_packs: Mapping[str, int] | None = None) -> int:
        """Remove every copy whose pack is not in ``known_packs`` (name -> size) or has another size.

        Without ``known_packs``, the archive's ``known`` callback says which cached packs the index still
        places on a colder tier. Returns how many copies were removed.
        """
        if not self.enabled:
            return 0
        names = self.names()
        if known_packs is None:
            if self._known is None:
                return 0
            known_packs = self._known(names)
        removed = 0
        for name in names:
            with self._lock:
                entry = self._entries.get(name)
            if entry is not None and known_packs.get(name) != entry.size:
                self._remove(name, dropped=True)
                removed += 1
        return removed

    def names(self) -> list[str]:
        """The packs with a copy in the cache (as this handle knows them)."""
        with self._lock:
            return list(self._entries)

    def _remove(self, name: str, *, dropped: bool = False, evicted: bool = False) -> None:
        with self._lock:
            had = self._entries.pop(name, None) is not None
        try:
            self._tier.remove(name)
        except OSError as e:
            log.debug("recall cache: could not remove %s: %s", name, e)
        if had:
            with self._lock:
                self._dropped += dropped
                self._evictions += evicted

    def _rescan(self) -> None:
        """Bring the in-memory view up to what is on disk (other processes add and remove copies)."""
        on_disk = {}
        for stored in self._tier.list():
            on_disk[stored.name] = stored.size
        with self._lock:
            gone = [n for n in self._entries if n not in on_disk]
            for name in gone:
                del self._entries[name]
            for name, size in on_disk.items():
                entry = self._entries.get(name)
                if entry is None:
                    try:
                        mtime = self._tier.path(name).stat().st_mtime
                    except OSError:
                        continue
                    self._entries[name] = _Entry(size, mtime, mtime)
                else:
                    entry.size = size
        for name in gone:
            self._tier.forget(name)  # removed by another process: let its space go

    def _evict(self, keep: str | None = None) -> None:
        """Remove the least recently used copies until the cache is within ``max_bytes``."""
        with self._lock:
            total = sum(e.size for e in self._entries.values())
            order = sorted(((e.last_used, n, e.size) for n, e in self._entries.items() if n != keep))
        for _used, name, size in order:
            if total <= self.config.max_bytes:
                break
            self._remove(name, evicted=True)
            total -= size

    # -- fetching ---------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            name, tier, size = job
            try:
                if not self._stop.is_set():
                    self._fetch(name, tier, size)
            except _Stopped:
                pass
            except Exception as e:  # never let one pack stop the thread
                log.warning("recall cache: fetching pack %s failed unexpectedly: %s", name, e)
                self._fetch_failed(name, tier, e)
            finally:
                with self._lock:
                    self._pending.discard(name)
                    self._idle.notify_all()

    def _fetch(self, name: str, tier: Tier, size: int) -> None:
        if self._adopt(name, size) is not None:
            return
        incoming = self._staging()
        try:
            src = tier.reader(name)
        except (IntegrityError, StorageError) as e:
            self._fetch_failed(name, tier, e)
            return
        try:
            incoming.store(name, self._blocks(src, size), size)
            check_sealed_copy(incoming, name, size)
            final = self._tier.path(name)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(incoming.path(name), final)
            fsync_directory(final.parent)
        except _SourceFailed as e:
            self._fetch_failed(name, tier, e.cause)
            return
        except IntegrityError as e:
            self._fetch_failed(name, tier, e)
            return
        except (StorageError, OSError) as e:
            with self._lock:
                self._fill = False
                self._failed += 1
            log.warning("recall cache: cannot write to %s (%s); this archive handle reads packs of "
                        "colder tiers without caching them", self.root, e)
            return
        finally:
            src.close()
            incoming.remove(name)
        self._tier.forget(name)
        now = time.time()
        self._rescan()
        with self._lock:
            self._entries[name] = _Entry(size, now, now)
            self._fetched += 1
            self._fetched_bytes += size
            self._counts.pop(name, None)
        self._evict(keep=name)

    def _fetch_failed(self, name: str, tier: Tier, e: BaseException) -> None:
        with self._lock:
            self._failed += 1
            self._counts.pop(name, None)
            if len(self._failed_at) >= MAX_COUNTED:
                self._failed_at.clear()
            self._failed_at[name] = time.monotonic()
        log.info("recall cache: could not fetch pack %s from tier %s (%s); reads keep using the tier",
                 name, tier.name, e)

    def _blocks(self, src: PackFile, size: int) -> Iterator[bytes]:
        pos = 0
        while pos < size:
            if self._stop.is_set():
                raise _Stopped
            try:
                data = src.read_at(pos, min(TRANSFER_BLOCK, size - pos))
            except Exception as e:
                raise _SourceFailed(e) from e
            if not data:
                raise _SourceFailed(IntegrityError(f"pack {src.name}: ends at {pos} bytes, expected {size}"))
            yield data
            pos += len(data)

    def _staging(self) -> LocalTier:
        if self._incoming is None:
            folder = self.root / INCOMING_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self._incoming = LocalTier(folder, name="recall-incoming", max_open=4)
        return self._incoming

    def _clean_incoming(self) -> None:
        """Remove staging folders left by processes that are gone (a crash mid-fetch)."""
        base = self.root / INCOMING_DIR
        try:
            folders = list(base.iterdir())
        except OSError:
            return
        for folder in folders:
            pid_text = folder.name.split("-", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text)):
                shutil.rmtree(folder, ignore_errors=True)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no fetch is queued or running; False when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stats(self) -> RecallStats:
        with self._lock:
            return RecallStats(self.enabled, self._hits, self._misses, self._fetched, self._fetched_bytes,
                               self._failed, self._evictions, self._dropped, len(self._entries),
                               sum(e.size for e in self._entries.values()), self.config.max_bytes)

    def close(self) -> None:
        """Stop the background fetch (a fetch in progress is abandoned) and release descriptors."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop.set()
        if thread is not None:
            self._queue.put(None)  # the worker skips what is still queued once stopping
            thread.join()
        if self._incoming is not None:
            self._incoming.close()
            shutil.rmtree(self._incoming.root, ignore_errors=True)
        self._tier.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
