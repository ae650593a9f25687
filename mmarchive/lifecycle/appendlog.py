"""Append-only JSON-lines files that several processes write: the storage under holds and the audit log.

The lifecycle's primary records (the legal-hold events, the audit log) are plain files of one JSON object
per line, only ever appended to. This module holds what both need from such a file: an append that returns
only once the bytes are fsynced (and that cuts a failed write back off, so an error never leaves half a
line), a new file made durable by fsyncing its directory, reading the complete lines from an offset
(an unterminated last line is an append in progress, or torn by a crash, and is never returned), and the
repair a writer makes under its exclusive ``flock`` before appending: a torn tail is copied to a
``NAME.torn-OFFSET`` file beside the log for inspection, logged, and cut off, never merged with what
follows. Locking itself (which file, shared or exclusive) is left to the callers.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mmarchive.errors import NotFoundError, StorageError

log = logging.getLogger(__name__)

#: The mode of new log files (as the archive's pack files: no access for others; they name patients).
FILE_MODE = 0o640
_BLOCK = 64 * 1024


def storage_error(action: str, path: Path, e: OSError) -> StorageError:
    return StorageError(f"cannot {action} {path}: {e.strerror or e}")


def fsync_directory(path: Path) -> None:
    """Make the directory entries in ``path`` durable (after a file in it was created)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise storage_error("sync the directory", path, e) from e


def make_directory(path: Path) -> None:
    """Create ``path`` (a directory inside the archive directory) durably, if it does not exist."""
    if path.is_dir():
        return
    if not path.parent.is_dir():
        raise NotFoundError(f"no archive at {path.parent}")
    try:
        path.mkdir(mode=0o750, exist_ok=True)
    except OSError as e:
        raise storage_error("create the directory", path, e) from e
    fsync_directory(path.parent)


def open_for_append(path: Path) -> tuple[int, bool]:
    """Open ``path`` to append, creating it if missing; return the descriptor and whether it was created.

    A created file's directory entry is fsynced before this returns.
    """
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            return fd, False
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:  # another process created it meanwhile
            return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC), False
    except OSError as e:
        raise storage_error("open", path, e) from e
    try:
        fsync_directory(path.parent)
    except StorageError:
        os.close(fd)
        raise
    return fd, True


@contextmanager
def flocked(fd: int, *, exclusive: bool = True) -> Iterator[None]:
    """Hold a ``flock`` on ``fd`` (blocking until granted) while the block runs."""
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (tests replace it to write in slow pieces)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def append_durably(fd: int, data: bytes, path: Path) -> int:
    """Append ``data`` to the file open on ``fd`` (``O_APPEND``), fsync it, return the new size.

    If writing or syncing fails, the file is cut back to its size before the call (so a failed append
    leaves no partial line) and :class:`StorageError` is raised. The caller holds the file's lock.
    """
    try:
        start = os.fstat(fd).st_size
    except OSError as e:
        raise storage_error("append to", path, e) from e
    try:
        write_all(fd, data)
        os.fsync(fd)
    except OSError as e:
        try:
            os.ftruncate(fd, start)
            os.fsync(fd)
        except OSError:
            log.error("could not cut a failed append off %s at %d; the next writer will", path, start)
        raise storage_error("append to", path, e) from e
    return start + len(data)


def last_line(fd: int, end: int) -> tuple[int, bytes]:
    """The line that ends at ``end`` (the byte before ``end`` is its newline): its start and its bytes.

    ``end`` 0 gives ``(0, b"")``.
    """
    if end <= 0:
        return 0, b""
    pos = end - 1  # the newline itself
    pieces: list[bytes] = []
    while pos > 0:
        n = min(_BLOCK, pos)
        block = os.pread(fd, n, pos - n)
        i = block.rfind(b"\n")
        if i >= 0:
            pieces.append(block[i + 1:])
            start = pos - n + i + 1
            return start, b"".join(reversed(pieces))
        pieces.append(block)
        pos -= n
    return 0, b"".join(reversed(pieces))


def cut_torn_tail(fd: int, path: Path, valid: Callable[[bytes], bool]) -> int:
    """Cut what an interrupted append left at the end of the file; return the number of lines cut.

    Cut are: a last line without its newline, then any complete last lines ``valid`` rejects (bytes a
    crash left, zeros after a power loss). What is cut is first appended to ``PATH.torn-OFFSET`` and
    logged. The caller holds the file's exclusive lock, so no append is in progress.
    """
    try:
        size = os.fstat(fd).st_size
        end = size
        cut = 0
        if end > 0 and os.pread(fd, 1, end - 1) != b"\n":
            end = _line_start_before(fd, end)
            cut += 1
        while end > 0:
            start, line = last_line(fd, end)
            if valid(line):
                break
            end = start
            cut += 1
        if end == size:
            return 0
        torn = path.with_name(f"{path.name}.torn-{end}")
        removed = os.pread(fd, size - end, end)
        keep, _ = open_for_append(torn)
        try:
            write_all(keep, removed)
            os.fsync(keep)
        finally:
            os.close(keep)
        os.ftruncate(fd, end)
        os.fsync(fd)
    except OSError as e:
        raise storage_error("repair the end of", path, e) from e
    log.warning("%s ended in %d torn or unreadable line(s) (%d bytes, an interrupted append); cut them "
                "off and kept them in %s", path, cut, size - end, torn)
    return cut


def _line_start_before(fd: int, pos: int) -> int:
    """The offset just after the last newline before ``pos`` (0 if there is none)."""
    while pos > 0:
        n = min(_BLOCK, pos)
        block = os.pread(fd, n, pos - n)
        i = block.rfind(b"\n")
        if i >= 0:
            return pos - n + i + 1
        pos -= n
    return 0


def complete_lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """The complete lines of ``path`` from offset ``start``: (offset after the line, line without newline).

    Stops before an unterminated last line. A missing file has no lines.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; a generator)
    except FileNotFoundError:
        return
    except OSError as e:
        raise storage_error("read", path, e) from e
    with f:
        f.seek(start)
        offset = start
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            offset += len(raw)
            yield offset, raw[:-1]
