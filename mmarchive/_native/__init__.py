"""Compiled extensions built from native/ by setup.py.

The package needs them: a missing extension means the install was not built (for example a source tree
used without ``pip install``), and the error says so instead of silently falling back to slow code.
"""

from __future__ import annotations

try:
    from mmarchive._native import byteshuffle, contentid, gearcdc, recordtuple
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    from mmarchive.errors import ArchiveStateError

    raise ArchiveStateError(
        "mmarchive's compiled extensions are missing (mmarchive._native); install the package "
        "with `pip install .` (or `pip install -e .`) on a machine with a C compiler") from e

__all__ = ["byteshuffle", "contentid", "gearcdc", "recordtuple"]
