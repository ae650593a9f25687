"""Garbage collection: delete packs nothing points at and repack packs that are mostly garbage.

Garbage is every record the index does not point at: chunks whose references fell to zero, manifests
superseded by newer ones or by tombstones, tombstones no longer needed (no older manifest of their object
is left in any pack), and uncommitted tails. Open packs are sealed first. A repack follows the move order
of docs/format.md: copy the live records into a new pack, seal and re-read it to verify, switch the index
to it in one transaction (only entries that still point at the old place), and only then delete the old
pack file. A crash at any step leaves either the old or the new copy referenced, never neither.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mmarchive.errors import IntegrityError, StorageError
from mmarchive.index.schema import (
    DB_CHANGES,
    DB_CHUNKS,
    DB_OBJECTS,
    DB_PACKS,
    PACK_DELETING,
    PACK_SEALED,
    ChunkEntry,
    ObjectEntry,
    PackEntry,
    RecordLocation,
    change_key,
    split_scoped_key,
)
from mmarchive.maintenance.moves import pending_moves
from mmarchive.maintenance.replicas import all_replicas, drop_all_replicas
from mmarchive.pack.format import (
    FOOTER_LEN,
    RECORD_HEADER_LEN,
    Footer,
    RecordKind,
    decode_toc,
    pack_id_from_name,
    pack_name,
)
from mmarchive.pack.reader import ScanResult, read_header, read_record, scan_pack, windowed
from mmarchive.pack.transfer import copy_pack
from mmarchive.records import GcReport
from mmarchive.tiers.base import Tier
from mmarchive.writepath import finish_deletion

if TYPE_CHECKING:
    from mmarchive.archive import Archive

log = logging.getLogger(__name__)

#: Leftovers of stores (temporary files, unfinished multipart uploads) older than this are removed.
INCOMPLETE_AFTER_S = 3600.0


@dataclass
class _PackRecords:
    """Index entries that point into one pack."""

    chunks: list[tuple[bytes, ChunkEntry]] = field(default_factory=list)
    objects: list[tuple[bytes, ObjectEntry]] = field(default_factory=list)


def collect_garbage(archive: Archive, *, repack_below: float,
                    progress: Callable[[int, int], None] | None = None) -> GcReport:
    write = archive._write
    assert write is not None
    write.seal_all()
    with archive.index.read() as txn:
        stopped = [(k, PackEntry.decode(v)) for k, v in txn.cursor(db=archive.index.db(DB_PACKS))]
    for pack_id, entry in stopped:  # deletions on colder tiers that a crash interrupted
        if entry.deleting:
            finish_deletion(archive.index, archive.tiers.get(entry.tier), bytes(pack_id))
    report = GcReport()
    report.bytes_before = _total_pack_bytes(archive)
    reachable = []
    for name in archive.tiers.names:  # housekeeping skips a tier it cannot reach (gc goes on)
        try:
            report.incomplete_removed += archive.tiers.get(name).clean_incomplete(INCOMPLETE_AFTER_S)
            reachable.append(name)
        except StorageError as e:
            log.warning("gc: skipping the housekeeping of tier %s: %s", name, e)
    report.stray_copies_removed = _remove_stray_copies(archive, reachable)
    for round_ in range(2):  # the second round collects what the first made droppable (tombstones)
        _drop_unneeded_tombstones(archive)
        with archive.index.read() as txn:
            packs = [(k, PackEntry.decode(v)) for k, v in txn.cursor(db=archive.index.db(DB_PACKS))]
        todo = {pack_id: entry for pack_id, entry in packs if entry.sealed and (
            entry.live_bytes == 0 or entry.live_bytes < repack_below * entry.length)}
        by_pack = _entries_by_pack(archive, set(todo))
        for done, (pack_id, entry) in enumerate(todo.items()):
            if progress is not None:
                progress(round_ * len(packs) + done, 2 * len(packs))
            records = by_pack.get(pack_id, _PackRecords())
            if entry.live_bytes == 0:
                report.chunks_dropped += _switch(archive, pack_id, None, {}, records)
                report.packs_deleted += 1
            else:
                report.chunks_dropped += _repack(archive, pack_id, entry, records)
                report.packs_repacked += 1
    if progress is not None:
        progress(1, 1)
    report.bytes_after = _total_pack_bytes(archive)
    return report


def _remove_stray_copies(archive: Archive, tiers: list[str]) -> int:
    """Remove copies of known packs from tiers where nothing wants them: not the pack's tier, not a
    recorded replica, not the source or target of a move in progress (a reindex during a move's grace
    period, or a crash between a copy and its record, leaves such copies). The pack's own copy must be
    present on its tier, so a stray copy is never the last one."""
    with archive.index.read() as txn:
        packs = {bytes(k): PackEntry.decode(v) for k, v in txn.cursor(db=archive.index.db(DB_PACKS))}
    replicas = all_replicas(archive)
    moving = {(bytes.fromhex(m.pack), t) for m in pending_moves(archive) for t in (m.source, m.target)}
    present: dict[str, set[str]] = {}
    for name in tiers:
        try:
            present[name] = {p.name for p in archive.tiers.get(name).list()}
        except StorageError as e:
            log.warning("gc: not looking for stray copies on tier %s: %s", name, e)
    removed = 0
    for tier_name, names in present.items():
        for name in names:
            pack_id = pack_id_from_name(name)
            entry = packs.get(pack_id) if pack_id is not None else None
            if pack_id is None or entry is None or entry.tier == tier_name or entry.deleting:
                continue  # unknown files are verify's "orphaned" report, not gc's to remove
            if tier_name in replicas.get(pack_id, {}) or (pack_id, tier_name) in moving:
                continue
            if name not in present.get(entry.tier, ()):
                continue  # the pack's own copy is missing: this one may be what repairs it
            archive.tiers.get(tier_name).remove(name)
            removed += 1
    return removed


def _total_pack_bytes(archive: Archive) -> int:
    with archive.index.read() as txn:
        return sum(PackEntry.decode(v).length for _k, v in txn.cursor(db=archive.index.db(DB_PACKS)))


def _entries_by_pack(archive: Archive, packs: set[bytes]) -> dict[bytes, _PackRecords]:
    """One pass over the chunk and object tables, grouping the entries that point into ``packs``."""
    out: dict[bytes, _PackRecords] = {}
    if not packs:
        return out
    index = archive.index
    with index.read() as txn:
        for key, value in txn.cursor(db=index.db(DB_CHUNKS)):
            c = ChunkEntry.decode(value)
            if c.record.pack in packs:
                out.setdefault(c.record.pack, _PackRecords()).chunks.append((key, c))
        for key, value in txn.cursor(db=index.db(DB_OBJECTS)):
            o = ObjectEntry.decode(value)
            if o.record.pack in packs:
                out.setdefault(o.record.pack, _PackRecords()).objects.append((key, o))
    return out


def _repack(archive: Archive, pack_id: bytes, entry: PackEntry, records: _PackRecords) -> int:
    """Copy the pack's live records into a new pack and switch to it; return chunks dropped."""
    write = archive._write
    assert write is not None
    name = pack_name(pack_id)
    new_id, writer = write.create_pack(entry.tenant, entry.group)
    moves: dict[tuple[int, int], RecordLocation] = {}  # (kind, old offset) -> new location
    todo = [(RecordKind.CHUNK, c.record, key[-32:]) for key, c in records.chunks if c.refs > 0] + [
        (RecordKind.MANIFEST if o.live else RecordKind.TOMBSTONE, o.record, key[-32:])
        for key, o in records.objects]
    try:
        with windowed(archive.tiers.get(entry.tier).reader(name)) as src:
            for kind, loc, rid in sorted(todo, key=lambda t: t[1].offset):
                head, payload = read_record(src, loc.offset, loc.stored_len, kind=kind, rid=rid)
                off = writer.append(head.kind, head.codec, head.id, head.raw_len, payload,
                                    head.checksum)
                moves[(kind, loc.offset)] = RecordLocation(new_id, off, loc.stored_len)
        size = writer.seal()
    finally:
        writer.close()
    # Verify the copy by reading it back through the checking scanner before the index may point at it.
    scan = ScanResult()
    with archive.tier.reader(pack_name(new_id)) as src:
        count = sum(1 for _ in scan_pack(src, scan, payloads=False))
    if scan.problems or not scan.sealed or count != len(moves):
        raise IntegrityError(f"repacking {name}: the new pack {pack_name(new_id)} did not verify "
                             f"({'; '.join(scan.problems or ['record count mismatch'])}); the old pack is "
                             "kept", pack=pack_name(new_id))
    live_new = sum(RECORD_HEADER_LEN + loc.stored_len for loc in moves.values())
    if entry.tier != archive.tier.name:
        # The old pack lives on a colder tier: so does its replacement (copied there and verified
        # before the switch; the landing tier's copy goes once the index reads the target's).
        copy_pack(archive.tier, archive.tiers.get(entry.tier), pack_name(new_id), size)
    dropped = _switch(archive, pack_id, (new_id, size, live_new, len(moves)), moves, records)
    if entry.tier != archive.tier.name:
        archive.tier.remove(pack_name(new_id))
    return dropped


def _switch(archive: Archive, old_id: bytes, new: tuple[bytes, int, int, int] | None,
            moves: dict[tuple[int, int], RecordLocation], records: _PackRecords) -> int:
    """In one transaction, point entries at the new pack and drop the old; then delete its file.

    Only entries that still point into the old pack are changed. Returns how many (unreferenced) chunk
    entries were dropped with the old pack.
    """
    index = archive.index

    def apply(txn: Any) -> int:
        db_c, db_o, db_p = index.db(DB_CHUNKS), index.db(DB_OBJECTS), index.db(DB_PACKS)
        dropped = 0
        for key, _seen in records.chunks:
            raw = txn.get(key, db=db_c)
            if raw is None:
                continue
            c = ChunkEntry.decode(raw)
            if c.record.pack != old_id:
                continue
            to = moves.get((RecordKind.CHUNK, c.record.offset))
            if to is None:
                if c.refs > 0:
                    raise IntegrityError(f"gc: live chunk {key.hex()} was not copied; aborting")
                txn.delete(key, db=db_c)
                dropped += 1
            else:
                txn.put(key, ChunkEntry(to, c.raw_len, c.codec, c.refs).encode(), db=db_c)
        for key, _seen_o in records.objects:
            raw = txn.get(key, db=db_o)
            if raw is None:
                continue
            o = ObjectEntry.decode(raw)
            if o.record.pack != old_id:
                continue
            kind = RecordKind.MANIFEST if o.live else RecordKind.TOMBSTONE
            to = moves.get((kind, o.record.offset))
            if to is None:
                raise IntegrityError(f"gc: object {key.hex()} record was not copied; aborting")
            txn.put(key, ObjectEntry(o.state, o.seq, o.size, o.created_ns, to, o.metadata_json,
                                     o.chunks).encode(), db=db_o)
        old = PackEntry.decode(txn.get(old_id, db=db_p))
        if new is not None:
            new_id, size, live_new, count = new
            txn.put(new_id, replace(old, state=PACK_SEALED, length=size, live_bytes=live_new,
                                    records=count).encode(), db=db_p)  # on the old pack's tier
        # The old pack stays listed, as being deleted, until its file is gone: a crash before the
        # unlink leaves a pack the next open (or gc) finishes deleting, never an unknown file.
        txn.put(old_id, replace(old, state=PACK_DELETING, live_bytes=0).encode(), db=db_p)
        return dropped

    with index.read() as txn:
        tier = PackEntry.decode(txn.get(old_id, db=index.db(DB_PACKS))).tier
    dropped: int = index.write(apply)
    finish_deletion(index, archive.tiers.get(tier), old_id)
    archive.recall.discard(pack_name(old_id))  # a cached copy of it is never read again
    drop_all_replicas(archive, old_id)
    return dropped


def _drop_unneeded_tombstones(archive: Archive) -> None:
    """Forget deleted objects whose older manifests no pack file holds any more.

    Every pack file that reindex would read counts, known to the index or not; a pack that cannot be
    read is assumed to hold any manifest of its tenant (nothing of that tenant is dropped).
    """
    index = archive.index
    with index.read() as txn:
        known = {k: PackEntry.decode(v) for k, v in txn.cursor(db=index.db(DB_PACKS))}
        deleted = [(k, ObjectEntry.decode(v)) for k, v in txn.cursor(db=index.db(DB_OBJECTS))
                   if not ObjectEntry.decode(v).live]
    if not deleted:
        return
    manifests: set[tuple[str, bytes]] = set()
    unsure: set[str] = set()
    for tier_name, name in _stored_packs(archive):
        pack_id = pack_id_from_name(name)
        if pack_id is None:
            continue  # reindex ignores files not named by a pack id
        entry = known.get(pack_id)
        try:
            tenant, ids = _manifest_ids(archive.tiers.get(tier_name), name)
        except IntegrityError:
            if entry is None:
                return  # an unreadable pack of unknown tenant: drop nothing this time
            unsure.add(entry.tenant)
            continue
        manifests.update((tenant, oid) for oid in ids)
    drop = [(k, o) for k, o in deleted
            if split_scoped_key(k)[0] not in unsure and split_scoped_key(k) not in manifests]
    if not drop:
        return

    def apply(txn: Any) -> None:
        db_o, db_p, db_ch = index.db(DB_OBJECTS), index.db(DB_PACKS), index.db(DB_CHANGES)
        for key, o in drop:
            txn.delete(key, db=db_o)
            txn.delete(change_key(split_scoped_key(key)[0], o.seq), db=db_ch)
            p = PackEntry.decode(txn.get(o.record.pack, db=db_p))
            txn.put(o.record.pack, replace(
                p, live_bytes=p.live_bytes - RECORD_HEADER_LEN - o.record.stored_len).encode(), db=db_p)

    index.write(apply)


def _stored_packs(archive: Archive) -> list[tuple[str, str]]:
    """(tier, pack name) of every pack file on every tier (a pack on two tiers is listed twice)."""
    return [(tier_name, stored.name) for tier_name in archive.tiers.names
            for stored in archive.tiers.get(tier_name).list()]


def _manifest_ids(tier: Tier, name: str) -> tuple[str, list[bytes]]:
    """(tenant, ids of every manifest record) of one pack file: from its TOC, or by scanning it."""
    with tier.reader(name) as src:
        header = read_header(src)
        size = src.size()
        footer = Footer.decode(src.read_at(size - FOOTER_LEN, FOOTER_LEN), pack=name) \
            if size >= FOOTER_LEN else None
        if footer is not None:
            _h, toc = read_record(src, footer.toc_offset, footer.toc_len - RECORD_HEADER_LEN,
                                  kind=RecordKind.TOC)
            return header.tenant, [e.id for e in decode_toc(toc, pack=name)
                                   if e.kind == RecordKind.MANIFEST]
        scan = ScanResult()
        ids = [rec.header.id for rec in scan_pack(src, scan, payloads=False)
               if rec.header.kind == RecordKind.MANIFEST]
        if scan.problems:
            raise IntegrityError(f"pack {name}: {scan.problems[0]}", pack=name)
        return header.tenant, ids
