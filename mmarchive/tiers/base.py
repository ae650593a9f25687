"""The one interface every tier backend implements: whole sealed pack files stored and read by name.

A tier is a place packs live (an SSD directory, a disk mount, an S3 bucket and prefix). The lifecycle moves
sealed packs between tiers by streaming a pack out of one (:meth:`Tier.reader`) into another
(:meth:`Tier.store`), reading it back to verify it, switching the index and removing the source later. The
interface is deliberately small so that a new backend is a few hundred lines and the conformance suite
(``tests/tiers/test_conformance.py``) proves it. Tiers know nothing of records, objects or the index; the
records they return are plain.

Errors: a pack that is not there raises :class:`mmarchive.errors.IntegrityError` naming it (a missing pack
the index points at is damage); a backend that fails raises :class:`mmarchive.errors.StorageError` with
``transient=True`` when retrying later may succeed (network down, throttling, 5xx) and ``False`` when it will
not (access denied, no such bucket, disk full is reported as not transient too: it needs an operator).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

#: The kinds of tier a config may declare.
TIER_KINDS = ("local", "s3")


@dataclass(frozen=True, slots=True)
class StoredPack:
    """One pack as a tier lists it."""

    name: str
    size: int


@runtime_checkable
class PackFile(Protocol):
    """Random access to one stored pack (satisfies :class:`mmarchive.pack.reader.PackBytes`).

    Reads are positional and never load the whole pack: on S3 each is a ranged GET. Close it (or use it as
    a context manager) when done.
    """

    name: str

    def read_at(self, offset: int, length: int) -> bytes: ...

    def size(self) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> PackFile: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Tier(Protocol):
    """Where sealed packs are kept: store, read, list and remove whole packs by name."""

    #: The name the config gives the tier (``ssd``, ``disk``, ``s3-cold``); the index records it per pack.
    name: str
    #: One of :data:`TIER_KINDS`.
    kind: str

    def store(self, pack: str, pieces: Iterable[bytes | memoryview], size: int) -> None:
        """Write a whole pack from ``pieces`` (``size`` bytes in all), durably and atomically.

        When this returns the pack is complete and durable on the tier; until then no reader sees it under
        its name. Storing a name that exists replaces it (a move that was interrupted is redone). If the
        pieces do not add up to ``size`` nothing is stored and :class:`InvalidInputError` is raised.
        """
        ...

    def reader(self, pack: str, size: int | None = None) -> PackFile:
        """Open a stored pack for positional reads; raises IntegrityError naming it when it is missing.

        ``size``, when the caller knows it (a sealed pack's length from the index), saves a request on
        remote tiers; a missing pack is then reported by the first read instead.
        """
        ...

    def size_of(self, pack: str) -> int | None:
        """The stored size of a pack, or None when the tier does not hold it."""
        ...

    def remove(self, pack: str) -> None:
        """Remove a pack; removing one that is not there is not an error."""
        ...

    def list(self) -> Iterator[StoredPack]:
        """Every pack the tier holds, by name (in no promised order)."""
        ...

    def clean_incomplete(self, older_than_s: float) -> int:
        """Remove what stores stopped by a crash left behind (temporary files, unfinished multipart
        uploads) that is older than ``older_than_s`` seconds; return how many were removed."""
        ...

    def close(self) -> None:
        """Release descriptors and connections; the tier is not used afterwards."""
        ...
