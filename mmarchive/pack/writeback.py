"""Starting the device write of pack bytes as soon as they reach the page cache.

A commit copies tens of MiB of records into the page cache and then waits in ``fdatasync`` while the
device writes them. Left to itself the kernel starts writing dirty pages only at its own thresholds
(here 10% of memory, or after 30 s), so the device idles while the copy runs and the copy idles while the
device writes. :func:`start_writeback` asks the kernel to start writing a range at once, without waiting
for it (Linux ``sync_file_range`` with ``SYNC_FILE_RANGE_WRITE``, as RocksDB's ``bytes_per_sync`` does):
the device writes one piece while the next is copied, and the ``fdatasync`` that follows waits only
for the tail. It is a hint and never a durability step: nothing is acknowledged until ``fdatasync``
returns, and where the call does not exist (other systems) or fails, nothing else changes.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

#: Ranges smaller than this are left to the ``fdatasync`` (one more system call would cost more).
WRITEBACK_MIN = 1024 * 1024

_SYNC_FILE_RANGE_WRITE = 2


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


# A ctypes call lets the GIL go while the kernel queues the writes.
_sync_file_range = _load()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to the device now."""
    if _sync_file_range is not None and length >= WRITEBACK_MIN:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: errors are ignored
