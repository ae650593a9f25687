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
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from mmarchive.config import IndexConfig
from mmarchive.errors import ArchiveStateError, StorageError
from mmarchive.index.schema import ALL_DBS

T = TypeVar("T")


class _SharedExclusive:
    """Many readers or one map resizer; resizing needs no transaction open in this process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False

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


class IndexEnv:
    """The archive's LMDB environment and its named databases."""

    def __init__(self, path: Path, cfg: IndexConfig, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        try:
            path.mkdir(parents=True, exist_ok=True) if not readonly else None
            self.env = lmdb.open(str(path), map_size=cfg.map_size, max_dbs=len(ALL_DBS) + 2,
                                 max_readers=cfg.max_readers, readonly=readonly, subdir=True,
                                 lock=True, sync=True, metasync=True, readahead=False,
                                 meminit=False, create=not readonly)
        except lmdb.Error as e:
            raise StorageError(f"cannot open the index at {path}: {e}; check the path and "
                               "permissions, or rebuild it with `mmarchive reindex`") from e
        self._pid = os.getpid()
        self._gate = _SharedExclusive()
        self.env.reader_check()  # free slots of readers that died without closing
        self.dbs: dict[bytes, Any] = {}
        if readonly:
            with self.env.begin() as txn:
                for name in ALL_DBS:
                    try:
                        self.dbs[name] = self.env.open_db(name, txn=txn, create=False)
                    except lmdb.NotFoundError as e:
                        raise StorageError(f"the index at {path} lacks database {name.decode()}; "
                                           "run `mmarchive reindex`") from e
        else:
            with self.env.begin(write=True) as txn:
                for name in ALL_DBS:
                    self.dbs[name] = self.env.open_db(name, txn=txn)

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise ArchiveStateError("this archive handle was opened before fork(); LMDB handles must "
                                    "not cross a fork: open the archive again in the child process")

    def db(self, name: bytes) -> Any:
        return self.dbs[name]

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A short read-only transaction."""
        self._check_process()
        with self._gate.shared():
            try:
                txn = self.env.begin(buffers=False)
            except lmdb.MapResizedError:
                txn = None
            if txn is None:
                self._adopt_size()
                txn = self.env.begin(buffers=False)
            try:
                yield txn
            finally:
                txn.abort()

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
        if os.getpid() == self._pid:
            self.env.close()
