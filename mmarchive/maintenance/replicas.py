"""Second copies of packs on another tier, and repairing a damaged or missing pack from one.

A tier's config may name a ``replica`` tier: every sealed pack on the first keeps a verified copy on the
second (for example disk and S3). A replica is made like a move's copy (stream, then read back and check
the whole-pack checksum) and only then recorded in the index's ``replicas`` database; it is forgotten
(record first, file after) when the pack leaves or is replaced. A replica and a primary copy on the same
tier are the same file (tiers key packs by name), so a move to the tier holding a replica reuses it, and
removing a replica never removes a file the index reads as primary. :func:`repair_pack` restores a damaged
or missing primary from the first replica that verifies, and verifies the restored copy.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from mmarchive.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from mmarchive.index.schema import DB_PACKS, DB_REPLICAS, PackEntry
from mmarchive.pack.format import pack_name
from mmarchive.pack.transfer import check_sealed_copy, copy_pack

if TYPE_CHECKING:
    from mmarchive.archive import Archive

log = logging.getLogger(__name__)


def _decode(raw: bytes | None) -> dict[str, int]:
    return {str(k): int(v) for k, v in json.loads(bytes(raw)).items()} if raw else {}


def replicas_of(archive: Archive, pack_id: bytes) -> dict[str, int]:
    """Tiers holding a verified replica of the pack -> when it was verified (ns)."""
    with archive.index.read() as txn:
        return _decode(txn.get(pack_id, db=archive.index.db(DB_REPLICAS)))


def all_replicas(archive: Archive) -> dict[bytes, dict[str, int]]:
    try:
        db = archive.index.db(DB_REPLICAS)
    except StorageError:
        return {}  # a read-only handle on an index that predates replicas
    with archive.index.read() as txn:
        return {bytes(k): _decode(v) for k, v in txn.cursor(db=db)}


def _update(archive: Archive, pack_id: bytes, change: Any) -> Any:
    """Apply ``change(tiers, txn)`` to a pack's replica record (a dict, written back or deleted when
    empty) in one write transaction; return what ``change`` returns."""
    db = archive.index.db(DB_REPLICAS)

    def apply(txn: Any) -> Any:
        current = _decode(txn.get(pack_id, db=db))
        result = change(current, txn)
        if current:
            txn.put(pack_id, json.dumps(current, sort_keys=True).encode(), db=db)
        else:
            txn.delete(pack_id, db=db)
        return result

    return archive.index.write(apply)


def record_replica(archive: Archive, pack_id: bytes, tier: str, verified_ns: int | None = None) -> None:
    when = verified_ns if verified_ns is not None else time.time_ns()
    _update(archive, pack_id, lambda tiers, _txn: tiers.__setitem__(tier, when))


def add_replica(archive: Archive, pack_id: bytes, tier: str) -> int:
    """Copy a sealed pack to ``tier``, verify it there, record it; return bytes copied (0: had one)."""
    name = pack_name(pack_id)
    with archive.index.read() as txn:
        raw = txn.get(pack_id, db=archive.index.db(DB_PACKS))
    if raw is None:
        raise NotFoundError(f"pack {name} is not in the index")
    entry = PackEntry.decode(raw)
    if not entry.sealed:
        raise InvalidInputError(f"pack {name} is not sealed; only sealed packs are replicated")
    if entry.tier == tier:
        raise InvalidInputError(f"pack {name} is on tier {tier} already; a replica goes to another tier")
    if tier in replicas_of(archive, pack_id):
        return 0
    copy_pack(archive.tiers.get(entry.tier), archive.tiers.get(tier), name, entry.length)
    record_replica(archive, pack_id, tier)
    return entry.length


def drop_replica(archive: Archive, pack_id: bytes, tier: str) -> None:
    """Forget a replica, then remove its file unless the index reads that file as the pack's primary."""

    def forget(tiers: dict[str, int], txn: Any) -> str | None:
        tiers.pop(tier, None)
        raw = txn.get(pack_id, db=archive.index.db(DB_PACKS))
        return PackEntry.decode(raw).tier if raw is not None else None

    if _update(archive, pack_id, forget) != tier:
        archive.tiers.get(tier).remove(pack_name(pack_id))


def forget_record(archive: Archive, pack_id: bytes, tier: str) -> None:
    """Forget a replica record but keep the file (it became the pack's primary copy)."""
    _update(archive, pack_id, lambda tiers, _txn: tiers.pop(tier, None))


def drop_all_replicas(archive: Archive, pack_id: bytes) -> None:
    """Forget and remove every replica of a pack that is gone (deleted or replaced by gc)."""
    for tier in replicas_of(archive, pack_id):
        drop_replica(archive, pack_id, tier)


def repair_pack(archive: Archive, pack_id: bytes) -> str | None:
    """Restore a pack's primary copy from the first replica that verifies; return that replica's tier.

    Returns None when no replica verifies (nothing is changed then). The restored copy is verified on
    its tier before this returns.
    """
    name = pack_name(pack_id)
    with archive.index.read() as txn:
        raw = txn.get(pack_id, db=archive.index.db(DB_PACKS))
    if raw is None:
        return None
    entry = PackEntry.decode(raw)
    for tier in replicas_of(archive, pack_id):
        source = archive.tiers.get(tier)
        try:
            check_sealed_copy(source, name, entry.length)
        except (IntegrityError, StorageError) as e:
            log.warning("replica of pack %s on tier %s cannot repair it: %s", name, tier, e)
            continue
        copy_pack(source, archive.tiers.get(entry.tier), name, entry.length)
        return tier
    return None
