"""Plain frozen records that the archive's public API returns and its stages exchange.

Nothing here does I/O or holds state; every field is a plain value so records can be logged, compared,
turned into JSON by the CLI, and passed between threads.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, TypeVar

from mmarchive._native.recordtuple import make_record

_T = TypeVar("_T")


def tuple_maker(cls: type[_T]) -> Callable[[tuple[Any, ...]], _T]:
    """A constructor of NamedTuple ``cls`` from a tuple of all its fields, in order.

    It skips the generated ``__new__`` (a Python function), and leaves a record that holds no container
    untracked by the cyclic GC (see native/recordtuple.pyx): the write path keeps thousands of records in
    flight, and this halves what each costs to build and stops full collections from walking them.
    """
    return functools.partial(make_record, cls)


class ObjectInfo(NamedTuple):
    """One stored object as the index knows it (immutable; a NamedTuple because put_many makes one per
    object and a frozen dataclass costs several times more to build)."""

    tenant: str
    id: str  # BLAKE3-256 of the object's bytes, hex
    size: int
    created_ns: int
    #: The metadata as stored: canonical JSON (sorted keys), b"" for none. See :attr:`metadata`.
    metadata_json: bytes
    chunk_count: int
    #: True when a put found these exact bytes (and metadata) already stored: nothing new was written.
    already_stored: bool = False
    #: What the caller gave put (a path, "stdin", "bytes"), for reporting; not stored.
    source: str | None = None
    #: The seq of the object's latest change (its place in the change feed, see Archive.changes).
    seq: int = 0

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata kept with the object (decoded on each access; ingest never needs it)."""
        return json.loads(self.metadata_json) if self.metadata_json else {}

    def to_json(self) -> dict[str, Any]:
        d = self._asdict()
        del d["metadata_json"]
        d["metadata"] = self.metadata
        return d


class ObjectChange(NamedTuple):
    """One entry of a tenant's change feed: an object's latest change and its state now."""

    seq: int  # archive-wide, increasing; the feed holds each object once, at its latest change
    tenant: str
    id: str
    live: bool  # False: the object was deleted
    size: int
    created_ns: int  # when the change was made
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class ArchiveStats:
    """Totals of one tenant, or of the whole archive when ``tenant`` is None."""

    tenant: str | None
    objects: int
    logical_bytes: int  # sum of the sizes of live objects
    unique_bytes: int  # plaintext bytes of the distinct chunks they use
    stored_bytes: int  # those chunks as stored (after compression)
    packs: int
    pack_bytes: int  # pack files on disk, garbage and overhead included (archive-wide only)

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.unique_bytes if self.unique_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        return self.unique_bytes / self.stored_bytes if self.stored_bytes else 1.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["dedup_ratio"] = round(self.dedup_ratio, 4)
        d["compression_ratio"] = round(self.compression_ratio, 4)
        return d


@dataclass
class VerifyReport:
    """What ``verify`` found; ``ok`` is False when anything is damaged or missing."""

    packs_checked: int = 0
    records_checked: int = 0
    objects_checked: int = 0
    bytes_checked: int = 0
    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    #: Objects that cannot be read completely because of the damage above.
    affected_objects: list[str] = field(default_factory=list)
    #: Names of the packs found damaged or missing on their tier.
    damaged_packs: list[str] = field(default_factory=list)
    replicas_checked: int = 0
    #: ``TIER:PACK`` of replicas that failed their check.
    damaged_replicas: list[str] = field(default_factory=list)
    #: With repair: what was restored (``PACK from TIER``, ``replica TIER:PACK``) and what could not be.
    repaired: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.damaged or self.missing or self.affected_objects)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


@dataclass
class GcReport:
    packs_deleted: int = 0
    packs_repacked: int = 0
    chunks_dropped: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    #: Copies of packs on a tier where the index neither places nor replicates them (and no move
    #: involves them), removed; and leftovers of stores a crash interrupted, removed.
    stray_copies_removed: int = 0
    incomplete_removed: int = 0

    @property
    def bytes_reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes_reclaimed"] = self.bytes_reclaimed
        return d


@dataclass(frozen=True)
class PackInfo:
    """One pack as the index knows it."""

    id: str
    tier: str
    tenant: str
    group: str
    sealed: bool
    #: Bytes of the pack file (the committed length while it is open).
    size: int
    #: Bytes of records the index points at (the rest is garbage for gc).
    live_bytes: int
    records: int
    created_ns: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TierUsage:
    """What one tier holds, by the index (``mmarchive tiers``)."""

    name: str
    kind: str
    packs: int
    bytes: int
    live_bytes: int
    #: Objects whose manifest is in a pack on this tier.
    objects: int
    #: Configured capacity in bytes (0: not limited) and the fraction above which data moves down.
    capacity: int
    high_water: float
    #: Packs with a move to or from this tier in progress.
    moving: int = 0
    #: Replicas (second copies of packs of another tier) kept on this tier, and their bytes.
    replicas: int = 0
    replica_bytes: int = 0

    @property
    def fill(self) -> float | None:
        return self.bytes / self.capacity if self.capacity else None

    @property
    def above_high_water(self) -> bool:
        return bool(self.capacity) and self.bytes > self.high_water * self.capacity

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["fill"] = self.fill
        d["above_high_water"] = self.above_high_water
        return d


class StoredObject(NamedTuple):
    """One live object as :meth:`Archive.scan_objects` yields it: what the lifecycle plans with."""

    tenant: str
    id: str
    size: int
    created_ns: int
    metadata_json: bytes
    #: The pack holding the object's manifest (16 bytes; :func:`mmarchive.pack.format.pack_name` names it).
    pack_id: bytes
    #: UTC day number (days since 1970-01-01) of the last read through a writable handle, or None.
    last_access_day: int | None
