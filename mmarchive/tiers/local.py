"""A tier in a local directory (an SSD or a disk mount): pack files under two-hex-digit fan-out folders.

Owns the file-system side of packs: creating a pack file durably (the file and its directory entry are
synced), opening packs for appending, positional reads through a bounded cache of read-only descriptors
that threads share, listing and removing. It knows nothing of the records inside.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from mmarchive.errors import IntegrityError, InvalidInputError, StorageError
from mmarchive.tiers.base import StoredPack

PACK_SUFFIX = ".pack"
#: The name the index records for packs on the archive's own pack directory.
LOCAL_TIER = "local"


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalPackFile:
    """Random access to one pack on a local tier (:class:`mmarchive.pack.reader.PackBytes`).

    Owns its own descriptor (a dup of the tier's cached one), so the tier may close cached descriptors at
    any time; close it (or use it as a context manager) when done.
    """

    #: Positional reads of a local file need no read-ahead window (:func:`mmarchive.pack.reader.windowed`).
    cheap_reads = True

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self._fd = fd

    def read_at(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self._fd, length, offset)
        except OSError as e:
            raise IntegrityError(f"pack {self.name}: read at offset {offset} failed ({e.strerror}); "
                                 "check the disk", pack=self.name, offset=offset) from e

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LocalPackFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalTier:
    """Pack files in one directory tree (a :class:`mmarchive.tiers.base.Tier`, plus the appending side
    the write path needs on the tier where new data lands)."""

    kind = "local"

    def __init__(self, root: Path, *, name: str = LOCAL_TIER, max_open: int = 256) -> None:
        self.root = root
        self.name = name
        self._max_open = max_open
        self._open: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        return self.root / name[:2] / (name + PACK_SUFFIX)

    def create(self, name: str, *, sync_directory: bool = True) -> int:
        """Create a new pack file (never an existing one) and return a read-write descriptor.

        Without ``sync_directory`` the new name (and a new shard folder) is not yet durable: the caller
        calls :meth:`sync_directory` before anything that must survive a crash points at the file.
        """
        path = self.path(name)
        try:
            new_dir = not path.parent.exists()
            path.parent.mkdir(parents=True, exist_ok=True)
            if new_dir and sync_directory:
                fsync_directory(self.root)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            if sync_directory:
                fsync_directory(path.parent)
        except OSError as e:
            raise StorageError(f"cannot create pack file {path}: {e.strerror or e}") from e
        return fd

    def sync_directory(self, name: str) -> None:
        """Make the name of pack ``name`` durable, and its shard folder's (after ``create(sync_directory=
        False)``)."""
        try:
            fsync_directory(self.path(name).parent)
            fsync_directory(self.root)
        except OSError as e:
            raise StorageError(f"cannot sync the folder of pack {name}: {e.strerror or e}") from e

    def open_append(self, name: str) -> int:
        path = self.path(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise IntegrityError(f"pack {name} is missing from {self.root}; restore it or run "
                                 "`mmarchive verify`", pack=name) from e
        os.lseek(fd, 0, os.SEEK_END)
        return fd

    def reader(self, name: str, size: int | None = None) -> LocalPackFile:
        """Open a pack for reading; the caller closes the returned file (``size`` is not needed here)."""
        with self._lock:
            fd = self._open.get(name)
            if fd is not None:
                self._open.move_to_end(name)
                return LocalPackFile(name, os.dup(fd))
        try:
            fd = os.open(self.path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise IntegrityError(f"pack {name} is missing from {self.root}; restore it from a replica "
                                 "or run `mmarchive verify`", pack=name) from e
        with self._lock:
            old = self._open.get(name)
            if old is not None:
                os.close(fd)
                fd = old
            else:
                self._open[name] = fd
            mine = os.dup(fd)
            while len(self._open) > self._max_open:
                _, old_fd = self._open.popitem(last=False)
                os.close(old_fd)
        return LocalPackFile(name, mine)

    def forget(self, name: str) -> None:
        """Close the cached read descriptor of a pack (after it was replaced or removed)."""
        with self._lock:
            fd = self._open.pop(name, None)
        if fd is not None:
            os.close(fd)

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def remove(self, name: str) -> None:
        self.forget(name)
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_directory(path.parent)

    def store(self, pack: str, pieces: Iterable[bytes | memoryview], size: int) -> None:
        """Write a whole pack through a temporary file, fsync it, rename it into place, fsync the folder."""

        def write(f: BinaryIO) -> int:
            written = 0
            for piece in pieces:
                written += len(piece)
                if written > size:
                    break
                f.write(piece)
            return written

        self._store_with(pack, size, "the data given to store", write)

    def copy_in(self, pack: str, source: Path, size: int) -> None:
        """Store a pack by copying the local file ``source`` inside the kernel (``copy_file_range``),
        with the same temp-file, fsync, rename and folder fsync as :meth:`store`."""
        try:
            src = open(source, "rb")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError as e:
            raise IntegrityError(f"pack {pack} is missing at {source}; restore it from a replica or run "
                                 "`mmarchive verify`", pack=pack) from e

        def write(f: BinaryIO) -> int:
            copied = 0
            while copied < size:
                n = os.copy_file_range(src.fileno(), f.fileno(), min(size - copied, 1 << 30))
                if n == 0:
                    break
                copied += n
            return copied

        with src:
            self._store_with(pack, size, str(source), write)

    def _store_with(self, pack: str, size: int, what: str, write: Callable[[BinaryIO], int]) -> None:
        """Create a pack atomically: ``write`` fills a temporary file and returns the bytes it had; only
        exactly ``size`` of them are fsynced, renamed into place and the folder fsynced."""
        path = self.path(pack)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                written = write(f)
                if written == size:
                    f.flush()
                    os.fsync(f.fileno())
            if written != size:
                raise InvalidInputError(f"pack {pack}: {what} had "
                                        f"{'more than ' if written > size else ''}{written} bytes, "
                                        f"not {size}; nothing was stored")
            os.replace(tmp, path)
            fsync_directory(path.parent)
        except OSError as e:
            raise StorageError(f"cannot store pack {pack} in {self.root}: {e.strerror or e}; "
                               "check the space and permissions of that directory") from e
        finally:
            tmp.unlink(missing_ok=True)
        self.forget(pack)

    def size_of(self, pack: str) -> int | None:
        try:
            return self.path(pack).stat().st_size
        except FileNotFoundError:
            return None

    def list(self) -> Iterator[StoredPack]:
        for name, path in self._files():
            try:
                yield StoredPack(name, path.stat().st_size)
            except FileNotFoundError:
                continue  # removed while listing

    def clean_incomplete(self, older_than_s: float) -> int:
        """Remove temporary files of stores a crash interrupted (``.NAME.pack.PID.TID.tmp``)."""
        removed = 0
        if not self.root.exists():
            return 0
        cutoff = time.time() - older_than_s
        for sub in self.root.iterdir():
            if not (sub.is_dir() and len(sub.name) == 2):
                continue
            for f in sub.iterdir():
                if f.name.startswith(".") and f.name.endswith(".tmp"):
                    try:
                        if f.stat().st_mtime < cutoff:
                            f.unlink()
                            removed += 1
                    except FileNotFoundError:
                        continue
        return removed

    def names(self) -> Iterator[str]:
        for name, _path in self._files():
            yield name

    def _files(self) -> Iterator[tuple[str, Path]]:
        """Every ``*.pack`` file in the fan-out folders (a stray file keeps the name it has)."""
        if not self.root.exists():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for f in sorted(sub.iterdir()):
                    if f.name.endswith(PACK_SUFFIX) and not f.name.startswith("."):
                        yield f.name[: -len(PACK_SUFFIX)], f

    def close(self) -> None:
        with self._lock:
            fds = list(self._open.values())
            self._open.clear()
        for fd in fds:
            os.close(fd)
