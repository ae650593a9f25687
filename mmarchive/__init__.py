"""mmarchive: the embeddable core of a medical imaging and multimedia archive.

Deduplicated, checksummed, compressed object storage in self-describing pack files over an LMDB index,
scoped by tenant. Start with :class:`Archive`::

    from mmarchive import Archive

    with Archive.create("/srv/archive") as archive:
        info = archive.put(b"...", tenant="trust-a", metadata={"kind": "pdf"})
        data = archive.get(info.id, tenant="trust-a")
"""

from mmarchive.archive import DEFAULT_TENANT, Archive, PutItem
from mmarchive.config import ArchiveConfig, IndexConfig, StoreConfig
from mmarchive.errors import (
    ArchiveError,
    ArchiveLockedError,
    ArchiveStateError,
    FormatError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RetentionError,
    StorageError,
)
from mmarchive.records import ArchiveStats, GcReport, ObjectInfo, VerifyReport

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TENANT",
    "Archive",
    "ArchiveConfig",
    "ArchiveError",
    "ArchiveLockedError",
    "ArchiveStateError",
    "ArchiveStats",
    "FormatError",
    "GcReport",
    "IndexConfig",
    "IntegrityError",
    "InvalidInputError",
    "NotFoundError",
    "ObjectInfo",
    "PutItem",
    "RetentionError",
    "StorageError",
    "StoreConfig",
    "VerifyReport",
    "__version__",
]
