"""The one exception tree of mmarchive.

Every error the library raises on purpose derives from :class:`ArchiveError`. Each class also inherits the
builtin it refines (``KeyError``, ``ValueError``, ...), carries a stable CLI exit code, and its message says
what happened and what to do. Protocol adapters (CLI, DICOMweb, DIMSE) translate these classes once, in one
table each; nothing else in the library catches broadly. This module imports nothing from mmarchive.
"""

from __future__ import annotations


class ArchiveError(Exception):
    """Base of every error mmarchive raises on purpose."""

    #: Exit code of the ``mmarchive`` CLI when a command fails with this error (see docs/cli.md).
    exit_code: int = 1

    def __str__(self) -> str:  # KeyError would otherwise repr() its message
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidInputError(ArchiveError, ValueError):
    """The caller passed something the archive cannot accept (bad tenant name, bad id, bad config)."""

    exit_code = 2


class NotFoundError(ArchiveError, KeyError):
    """The named object, tenant or archive does not exist (or was deleted)."""

    exit_code = 3


class ArchiveLockedError(ArchiveError, BlockingIOError):
    """Another process holds the archive's writer lock."""

    exit_code = 4


class IntegrityError(ArchiveError):
    """Stored data failed a check: a checksum mismatch, a torn record, a pack that is missing or damaged.

    ``pack`` names the damaged pack and ``object_id`` the affected object when they are known.
    """

    exit_code = 5

    def __init__(self, message: str, *, pack: str | None = None, object_id: str | None = None,
                 offset: int | None = None) -> None:
        super().__init__(message)
        self.pack = pack
        self.object_id = object_id
        self.offset = offset


class FormatError(IntegrityError):
    """A file is not in a format (or a format version) this mmarchive understands."""


class RetentionError(ArchiveError, PermissionError):
    """An operation was refused because a retention rule or legal hold protects the data."""

    exit_code = 6


class StorageError(ArchiveError, OSError):
    """The storage under the archive failed (disk full, permission denied, backend unreachable).

    ``transient`` tells whether retrying later may succeed.
    """

    exit_code = 7

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ArchiveStateError(ArchiveError, RuntimeError):
    """The archive handle cannot do this now (closed, read-only, used across fork())."""

    exit_code = 8
