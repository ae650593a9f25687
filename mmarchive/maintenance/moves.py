"""Moving sealed packs between tiers: copy, verify, switch, and delete the source after a grace period.

A move is recorded in the index's ``moves`` database before anything is copied, so every step can be
finished or undone by whoever opens the archive next:

1. record the move (phase ``copying``) in one commit;
2. stream the pack to the target tier and read the copy back to check its length, footer and whole-pack
   checksum (:func:`mmarchive.pack.transfer.copy_pack`);
3. switch: in one commit, the pack's index entry names the target tier and the move enters phase
   ``switched`` with a release time (now + grace);
4. once the release time has passed, remove the source copy and forget the move.

A crash (SIGKILL) before 3 leaves the index reading the source, which was never touched: the next
:func:`finish_moves` removes whatever reached the target and forgets the move (a rollback; the planner
simply moves the pack again). A crash after 3 leaves both copies, the index reading the verified target: the
source is removed once the grace period has passed. Readers are never without a copy: the grace period
covers reads that looked up the old tier just before the switch. Only sealed packs move; the landing tier's
open packs never do. Nothing here decides *what* moves: the lifecycle runner does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mmarchive.errors import InvalidInputError, NotFoundError, StorageError
from mmarchive.index.schema import (
    DB_MOVES,
    DB_PACKS,
    MOVE_COPYING,
    MOVE_SWITCHED,
    MoveEntry,
    PackEntry,
)
from mmarchive.maintenance.replicas import forget_record, record_replica, replicas_of
from mmarchive.pack.format import pack_name
from mmarchive.pack.transfer import check_sealed_copy, copy_pack

if TYPE_CHECKING:
    from mmarchive.archive import Archive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackMove:
    """A move the index records (started and not finished)."""

    pack: str
    source: str
    target: str
    phase: str
    started_ns: int
    release_after_ns: int


@dataclass
class MovesFinished:
    """What :func:`finish_moves` did."""

    rolled_back: int = 0
    released: int = 0
    waiting: int = 0


def pending_moves(archive: Archive) -> list[PackMove]:
    index = archive.index
    with index.read() as txn:
        return [PackMove(pack_name(bytes(k)), m.source, m.target, m.phase, m.started_ns,
                         m.release_after_ns)
                for k, v in txn.cursor(db=index.db(DB_MOVES)) for m in (MoveEntry.decode(v),)]


def move_pack(archive: Archive, pack_id: bytes, target: str, *, grace_s: float,
              before_switch: Callable[[], None] | None = None) -> int:
    """Move one sealed pack to tier ``target``; return the bytes copied (0 when it is already there).

    ``before_switch`` is called between the verified copy and the index switch (tests use it to stop a
    move at that point).
    """
    index, tiers = archive.index, archive.tiers
    dst = tiers.get(target)  # refuses an unknown tier name
    tiers.config(target)
    name = pack_name(pack_id)
    started = time.time_ns()
    db_p, db_m = index.db(DB_PACKS), index.db(DB_MOVES)

    def begin(txn: Any) -> PackEntry | None:
        raw = txn.get(pack_id, db=db_p)
        if raw is None:
            raise NotFoundError(f"pack {name} is not in the index")
        entry = PackEntry.decode(raw)
        if not entry.sealed:
            raise InvalidInputError(f"pack {name} is not sealed (only sealed packs move between tiers); "
                                    "run `mmarchive gc` or wait until it fills")
        if txn.get(pack_id, db=db_m) is not None:
            raise InvalidInputError(f"pack {name} has a move in progress; run the lifecycle again to "
                                    "finish it first")
        if entry.tier == target:
            return None
        txn.put(pack_id, MoveEntry(entry.tier, target, MOVE_COPYING, started).encode(), db=db_m)
        return entry

    entry: PackEntry | None = index.write(begin)
    if entry is None:
        return 0
    has_replica = target in replicas_of(archive, pack_id)
    try:
        if has_replica:  # the target keeps a verified replica: check it again, copy nothing
            check_sealed_copy(dst, name, entry.length)
        else:
            copy_pack(tiers.get(entry.tier), dst, name, entry.length)
    except BaseException:
        _roll_back(archive, pack_id, MoveEntry(entry.tier, target, MOVE_COPYING, started))
        raise
    if before_switch is not None:
        before_switch()
    release = time.time_ns() + int(grace_s * 1e9)

    def switch(txn: Any) -> None:
        cur = PackEntry.decode(txn.get(pack_id, db=db_p))
        txn.put(pack_id, replace(cur, tier=target).encode(), db=db_p)
        txn.put(pack_id, MoveEntry(entry.tier, target, MOVE_SWITCHED, started, release).encode(),
                db=db_m)

    index.write(switch)
    if target == tiers.landing.name:
        archive.recall.discard(name)  # reads of it no longer go to the recall cache
    if has_replica:
        forget_record(archive, pack_id, target)  # that file is the primary copy now
    if grace_s <= 0:
        _release(archive, pack_id, MoveEntry(entry.tier, target, MOVE_SWITCHED, started, release))
    return 0 if has_replica else entry.length


def finish_moves(archive: Archive, *, now_ns: int | None = None) -> MovesFinished:
    """Roll back moves stopped before their switch; remove sources whose grace period has passed."""
    now = time.time_ns() if now_ns is None else now_ns
    done = MovesFinished()
    index = archive.index
    with index.read() as txn:
        moves = [(bytes(k), MoveEntry.decode(v)) for k, v in txn.cursor(db=index.db(DB_MOVES))]
    for pack_id, move in moves:
        if move.phase == MOVE_COPYING:
            if _roll_back(archive, pack_id, move):
                done.rolled_back += 1
            else:
                done.waiting += 1
        elif move.release_after_ns <= now and _release(archive, pack_id, move):
            done.released += 1
        else:
            done.waiting += 1
    return done


def _roll_back(archive: Archive, pack_id: bytes, move: MoveEntry) -> bool:
    """Undo a move that did not switch: remove what reached the target, forget the move.

    Returns False when the target could not be reached (the move stays recorded for the next run)."""
    # Never remove a recorded replica.
    if move.target not in replicas_of(archive, pack_id) and not _remove_copy(
            archive, pack_id, move.target, "the partial copy"):
        return False
    _forget_move(archive, pack_id)
    return True


def _remove_copy(archive: Archive, pack_id: bytes, tier: str, what: str) -> bool:
    """Remove one copy of a pack for a move; False (logged) when the tier cannot be reached."""
    try:
        archive.tiers.get(tier).remove(pack_name(pack_id))
    except StorageError as e:
        log.warning("could not remove %s of pack %s from tier %s (%s); the move stays recorded and is "
                    "finished by a later run", what, pack_name(pack_id), tier, e)
        return False
    return True


def _forget_move(archive: Archive, pack_id: bytes) -> None:
    archive.index.write(lambda txn: txn.delete(pack_id, db=archive.index.db(DB_MOVES)))


def _release(archive: Archive, pack_id: bytes, move: MoveEntry) -> bool:
    """Remove the source copy of a switched move, then forget the move (False: the source tier could
    not be reached; the move stays recorded)."""
    with archive.index.read() as txn:
        raw = txn.get(pack_id, db=archive.index.db(DB_PACKS))
    # Never remove the copy the index reads (a later move may have gone back to the source tier).
    if raw is None or PackEntry.decode(raw).tier != move.source:
        if raw is not None and archive.tiers.config(move.target).replica == move.source:
            record_replica(archive, pack_id, move.source)  # the old copy is the new tier's replica
        elif move.source not in replicas_of(archive, pack_id) and not _remove_copy(
                archive, pack_id, move.source, "the source copy"):
            return False
    _forget_move(archive, pack_id)
    return True
