"""The writer lock: at most one process writes an archive at a time.

An exclusive, non-blocking ``flock`` on ``ARCHIVE/lock`` held for as long as a writable archive handle is
open. The kernel drops it when the process dies, even by SIGKILL, so a crash never leaves a stale lock.
The holder's pid and host are written into the file for the error message of the next would-be writer.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mmarchive.errors import ArchiveLockedError


class WriterLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ArchiveLockedError(
                f"the archive {self.path.parent} is being written by {holder}; only one writer at a "
                "time: wait for it to finish, or open the archive read-only") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
