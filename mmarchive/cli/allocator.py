"""glibc malloc settings for the process of a bulk command (``ingest``, ``put``): keep freed memory.

A bulk command allocates and frees a buffer per file or record, hundreds of MB in all. Left to its
defaults, glibc serves each request over its mmap threshold with a fresh mapping and hands memory freed at
the top of its heap back to the kernel, so most buffers land on pages the process has to fault in again.
On a virtual machine that returns freed pages to its host, such a fault costs microseconds (3.5 us
measured on this project's 2-core test machine). The command's process instead takes buffers of up to
``MMAP_THRESHOLD`` bytes from its heap and keeps up to ``TRIM_THRESHOLD`` bytes of freed heap. It
exits when the command ends, so nothing is held for long. Only the command-line process does this: the
library never changes the allocator of a process that embeds it, and a ``MALLOC_*`` environment variable
set by the user wins. Elsewhere than glibc the call does not exist and nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: Requests up to this size come from the heap, whose freed memory is reused (a CT slice, a DICOM file).
MMAP_THRESHOLD = 4 * 1024 * 1024
#: Freed memory at the top of the heap kept for the next buffers, at most.
TRIM_THRESHOLD = 128 * 1024 * 1024

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Apply the settings to this process; return whether they were applied."""
    if not sys.platform.startswith("linux") or any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success. (Setting either one fixes both, which glibc otherwise adapts.)
    mmap_set = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(mmap_set) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
