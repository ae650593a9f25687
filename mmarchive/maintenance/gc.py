"""Garbage collection: delete packs nothing points at and repack packs that are mostly garbage.

Garbage is every record the index does not point at: chunks whose references fell to zero, manifests
superseded by newer ones or by tombstones, tombstones no longer needed (no older manifest of their object
is left in any pack), and uncommitted tails. Open packs are sealed first. A repack follows the move order
of docs/format.md: copy the live records into a new pack, seal and re-read it to verify, switch the index
to it in one transaction (only entries that still point at the old place), and only then delete the old
pack file. A crash at any step leaves either the old or the new copy referenced, never neither.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmarchive.errors import IntegrityError
from mmarchive.index.schema import (
    DB_CHUNKS,
    DB_OBJECTS,
    DB_PACKS,
    PACK_SEALED,
    ChunkEntry,
    ObjectEntry,
    PackEntry,
    RecordLocation,
    split_scoped_key,
)
from mmarchive.pack.format import (
    FOOTER_LEN,
    RECORD_HEADER_LEN,
    Footer,
    RecordKind,
    decode_toc,
    pack_name,
)
from mmarchive.pack.reader import ScanResult, read_record, scan_pack
from mmarchive.records import GcReport

if TYPE_CHECKING:
    from mmarchive.archive import Archive


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
    report = GcReport()
    report.bytes_before = _total_pack_bytes(archive)
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
        with archive.tier.reader(name) as src:
            for kind, loc, rid in sorted(todo, key=lambda t: t[1].offset):
                head, payload = read_record(src, loc.offset, loc.stored_len, kind=kind, rid=rid)
                off = writer.append(head.kind, head.codec, head.id, head.raw_len, payload,
                                    head.checksum)
                moves[(kind, loc.offset)] = RecordLocation(new_id, off, loc.stored_len)
        size = writer.seal()
    finally:
        os.close(writer.fd)
    # Verify the copy by reading it back through the checking scanner before the index may point at it.
    scan = ScanResult()
    with archive.tier.reader(pack_name(new_id)) as src:
        count = sum(1 for _ in scan_pack(src, scan, payloads=False))
    if scan.problems or not scan.sealed or count != len(moves):
        raise IntegrityError(f"repacking {name}: the new pack {pack_name(new_id)} did not verify "
                             f"({'; '.join(scan.problems or ['record count mismatch'])}); the old pack is "
                             "kept", pack=pack_name(new_id))
    live_new = sum(RECORD_HEADER_LEN + loc.stored_len for loc in moves.values())
    return _switch(archive, pack_id, (new_id, size, live_new, len(moves)), moves, records)


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
            txn.put(new_id, PackEntry(PACK_SEALED, size, live_new, count, old.created_ns, old.tier,
                                      old.tenant, old.group).encode(), db=db_p)
        txn.delete(old_id, db=db_p)
        return dropped

    dropped: int = index.write(apply)
    archive.tier.remove(pack_name(old_id))
    return dropped


def _drop_unneeded_tombstones(archive: Archive) -> None:
    """Forget deleted objects whose older manifests no pack holds any more."""
    index, tier = archive.index, archive.tier
    manifests: set[tuple[str, bytes]] = set()
    with index.read() as txn:
        packs = [(k, PackEntry.decode(v)) for k, v in txn.cursor(db=index.db(DB_PACKS))]
        deleted = [(k, ObjectEntry.decode(v)) for k, v in txn.cursor(db=index.db(DB_OBJECTS))
                   if not ObjectEntry.decode(v).live]
    if not deleted:
        return
    for pack_id, entry in packs:
        name = pack_name(pack_id)
        with tier.reader(name) as src:
            footer = Footer.decode(src.read_at(entry.length - FOOTER_LEN, FOOTER_LEN), pack=name) \
                if entry.sealed else None
            if footer is None:
                raise IntegrityError(f"gc: pack {name} has no table of contents", pack=name)
            _h, toc = read_record(src, footer.toc_offset, footer.toc_len - RECORD_HEADER_LEN,
                                  kind=RecordKind.TOC)
        for e in decode_toc(toc, pack=name):
            if e.kind == RecordKind.MANIFEST:
                manifests.add((entry.tenant, e.id))
    drop = [(k, o) for k, o in deleted if split_scoped_key(k) not in manifests]
    if not drop:
        return

    def apply(txn: Any) -> None:
        db_o, db_p = index.db(DB_OBJECTS), index.db(DB_PACKS)
        for key, o in drop:
            txn.delete(key, db=db_o)
            p = PackEntry.decode(txn.get(o.record.pack, db=db_p))
            txn.put(o.record.pack, PackEntry(p.state, p.length,
                                             p.live_bytes - RECORD_HEADER_LEN - o.record.stored_len,
                                             p.records, p.created_ns, p.tier, p.tenant,
                                             p.group).encode(), db=db_p)

    index.write(apply)
