"""Opening and using the LMDB environment safely from many threads and processes.

:class:`IndexEnv` owns one ``lmdb.Environment``: it opens the named databases, clears stale reader slots on
open, grows the map when a write finds it full (and adopts a size another process chose), and refuses to be
used in a child after ``fork()`` (LMDB environments must not cross a fork; open the archive again there).
Read transactions are short and per call; writes go through :meth:`IndexEnv.write`, which retries a
transaction function after growing the map.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from mmarchive.config import IndexConfig
from mmarchive.errors import ArchiveStateError, StorageError
from mmarchive.index.schema import ALL_DBS, LATER_DBS

T = TypeVar("T")


class SharedExclusiveLock:
    """Many readers or one map resizer; resizing needs no transaction open in this process."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._exclusive = False

    def enter_shared(self) -> None:
        mutex = self._mutex
        mutex.acquire()  # plain acquire/release: this runs on every read transaction
        if not self._exclusive:
            self._readers += 1
            mutex.release()
            return
        mutex.release()
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._readers += 1

    def leave_shared(self) -> None:
        mutex = self._mutex
        mutex.acquire()
        self._readers -= 1
        wake = not self._readers and self._exclusive
        mutex.release()
        if wake:
            with self._cond:
                self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class _ReadTxn:
    """Context manager for one read transaction (a class, not a generator: it is on every hot path)."""

    __slots__ = ("_index", "_txn")

    def __init__(self, index: IndexEnv) -> None:
        self._index = index
        self._txn: Any = None

    def __enter__(self) -> Any:
        self._txn = self._index._begin_read()
        return self._txn

    def __exit__(self, *exc: object) -> None:
        try:
            self._txn.abort()
        finally:
            self._index._gate.leave_shared()


@dataclass
class _OpenEnv:
    env: Any
    dbs: dict[bytes, Any]
    readonly: bool
    users: int
    gate: SharedExclusiveLock


# LMDB forbids opening one environment twice in a process (its locks would break), so handles to the
# same index directory share one environment. This registry is the only process-wide state in mmarchive.
_OPEN: dict[tuple[int, str], _OpenEnv] = {}
_OPEN_LOCK = threading.Lock()


def _open_env(path: Path, cfg: IndexConfig, readonly: bool, n_dbs: int) -> Any:
    try:
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
        return lmdb.open(str(path), map_size=cfg.map_size, max_dbs=n_dbs + 2,
                         max_readers=cfg.max_readers, readonly=readonly, subdir=True,
                         lock=True, sync=True, metasync=True, readahead=False,
                         meminit=False, create=not readonly)
    except lmdb.Error as e:
        raise StorageError(f"cannot open the index at {path}: {e}; check the path and "
                           "permissions, or rebuild it with `mmarchive reindex`") from e


def _open_dbs(env: Any, path: Path, readonly: bool, names: tuple[bytes, ...]) -> dict[bytes, Any]:
    dbs: dict[bytes, Any] = {}
    if readonly:
        for name in names:
            try:
                # Without an explicit txn py-lmdb commits its read txn, so the handle persists.
                dbs[name] = env.open_db(name, create=False)
            except lmdb.NotFoundError as e:
                if name in LATER_DBS:
                    continue
                raise StorageError(f"the index at {path} lacks database {name.decode()}; "
                                   "run `mmarchive reindex`") from e
    else:
        with env.begin(write=True) as txn:
            for name in names:
                dbs[name] = env.open_db(name, txn=txn)
    return dbs


class IndexEnv:
    """One LMDB environment and its named databases (by default the archive index's, :data:`ALL_DBS`).

    A layer above the store (the DICOM catalog) opens its own environment with its own ``dbs``.
    """

    def __init__(self, path: Path, cfg: IndexConfig, *, readonly: bool = False,
                 dbs: tuple[bytes, ...] = ALL_DBS) -> None:
        self.path = path
        self.readonly = readonly
        # The pid is part of the key: a child after fork() must open its own environment.
        self._key = (os.getpid(), os.path.realpath(path))
        with _OPEN_LOCK:
            shared = _OPEN.get(self._key)
            if shared is not None and shared.readonly and not readonly:
                raise ArchiveStateError(f"the index at {path} is open read-only in this process; "
                                        "close those handles before opening it for writing")
            if shared is None:
                env = _open_env(path, cfg, readonly, len(dbs))
                try:
                    env.reader_check()  # free slots of readers that died without closing
                    shared = _OpenEnv(env, _open_dbs(env, path, readonly, dbs), readonly, 0,
                                      SharedExclusiveLock())
                except BaseException:
                    env.close()
                    raise
                _OPEN[self._key] = shared
            shared.users += 1
        self.env = shared.env
        self.dbs = shared.dbs
        self._pid = os.getpid()
        self._gate = shared.gate
        self._closed = False

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise ArchiveStateError("this archive handle was opened before fork(); LMDB handles must "
                                    "not cross a fork: open the archive again in the child process")

    def db(self, name: bytes) -> Any:
        try:
            return self.dbs[name]
        except KeyError:
            raise StorageError(f"the index at {self.path} has no {name.decode()} database yet (it "
                               "predates it); open the archive for writing once to upgrade it") from None

    def read(self) -> _ReadTxn:
        """A short read-only transaction (a context manager yielding the lmdb transaction)."""
        if os.getpid() != self._pid:
            self._check_process()
        return _ReadTxn(self)

    def _begin_read(self) -> Any:
        gate = self._gate
        gate.enter_shared()
        try:
            try:
                return self.env.begin(buffers=False)
            except lmdb.MapResizedError:
                pass
            gate.leave_shared()
            self._adopt_size()
            gate.enter_shared()
            return self.env.begin(buffers=False)
        except BaseException:
            gate.leave_shared()
            raise

    def _adopt_size(self) -> None:
        """Another process grew the map: adopt its size (needs no open transaction here)."""
        with self._gate.exclusive():
            self.env.set_mapsize(0)

    def write(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(txn)`` in one write transaction and commit; grow the map and retry when full."""
        self._check_process()
        if self.readonly:
            raise ArchiveStateError("the archive is open read-only")
        while True:
            try:
                with self._gate.shared():
                    try:
                        txn = self.env.begin(write=True)
                    except lmdb.MapResizedError:
                        txn = None
                    if txn is not None:
                        try:
                            result = fn(txn)
                            txn.commit()
                            return result
                        except BaseException:
                            txn.abort()
                            raise
                self._adopt_size()
            except lmdb.MapFullError:
                self._grow()
            except lmdb.DiskError as e:
                raise StorageError(f"the index at {self.path} could not be written: {e}; free "
                                   "space and retry") from e

    def _grow(self) -> None:
        with self._gate.exclusive():
            size = self.env.info()["map_size"]
            self.env.set_mapsize(size * 2)

    def sync(self) -> None:
        self.env.sync(True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _OPEN_LOCK:
            shared = _OPEN.get(self._key)
            if shared is None or shared.env is not self.env:
                return
            shared.users -= 1
            if shared.users == 0:
                del _OPEN[self._key]
                if os.getpid() == self._pid:
                    self.env.close()
