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


def collect_garbage(archive: Archive, *, repack_below: float) -> GcReport:
    write = archive._write
    assert write is not None
    write.seal_all()
    report = GcReport()
    index = archive.index
    with index.read() as txn:
        report.bytes_before = sum(PackEntry.decode(v).length for _k, v in txn.cursor(db=index.db(DB_PACKS)))
    for _round in range(2):
        _drop_unneeded_tombstones(archive)
        with index.read() as txn:
            packs = [(k, PackEntry.decode(v)) for k, v in txn.cursor(db=index.db(DB_PACKS))]
        for pack_id, entry in packs:
            if not entry.sealed:
                continue
            if entry.live_bytes == 0:
                _switch(archive, pack_id, None, {})
                report.packs_deleted += 1
            elif entry.live_bytes < repack_below * entry.length:
                _repack(archive, pack_id, entry)
                report.packs_repacked += 1
    with index.read() as txn:
        report.bytes_after = sum(PackEntry.decode(v).length for _k, v in txn.cursor(db=index.db(DB_PACKS)))
    return report


def _live_records(archive: Archive, pack_id: bytes) -> tuple[list[tuple[bytes, ChunkEntry]],
                                                             list[tuple[bytes, ObjectEntry]],
                                                             list[bytes]]:
    """(live chunk entries, object entries, dead chunk keys) located in the pack."""
    index = archive.index
    chunks: list[tuple[bytes, ChunkEntry]] = []
    dead: list[bytes] = []
    objects: list[tuple[bytes, ObjectEntry]] = []
    with index.read() as txn:
        for key, value in txn.cursor(db=index.db(DB_CHUNKS)):
            c = ChunkEntry.decode(value)
            if c.record.pack == pack_id:
                (chunks.append((key, c)) if c.refs > 0 else dead.append(key))
        for key, value in txn.cursor(db=index.db(DB_OBJECTS)):
            o = ObjectEntry.decode(value)
            if o.record.pack == pack_id:
                objects.append((key, o))
    return chunks, objects, dead


def _repack(archive: Archive, pack_id: bytes, entry: PackEntry) -> None:
    write = archive._write
    assert write is not None
    chunks, objects, _dead = _live_records(archive, pack_id)
    name = pack_name(pack_id)
    new_id, writer = write.create_pack(entry.tenant, entry.group)
    moves: dict[tuple[int, int], RecordLocation] = {}  # (kind, old offset) -> new location
    with archive.tier.reader(name) as src:
        todo = [(RecordKind.CHUNK, c.record, key[-32:]) for key, c in chunks] + [
            (RecordKind.MANIFEST if o.live else RecordKind.TOMBSTONE, o.record, key[-32:])
            for key, o in objects]
        for kind, loc, rid in sorted(todo, key=lambda t: t[1].offset):
            head, payload = read_record(src, loc.offset, loc.stored_len, kind=kind, rid=rid)
            off = writer.append(head.kind, head.codec, head.id, head.raw_len, payload, head.checksum)
            moves[(kind, loc.offset)] = RecordLocation(new_id, off, loc.stored_len)
    size = writer.seal()
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
    _switch(archive, pack_id, (new_id, size, live_new, len(moves)), moves)


def _switch(archive: Archive, old_id: bytes, new: tuple[bytes, int, int, int] | None,
            moves: dict[tuple[int, int], RecordLocation]) -> None:
    """In one transaction, point entries at the new pack and drop the old; then delete its file."""
    index = archive.index

    def apply(txn: Any) -> None:
        db_c, db_o, db_p = index.db(DB_CHUNKS), index.db(DB_OBJECTS), index.db(DB_PACKS)
        for key, value in list(txn.cursor(db=db_c)):
            c = ChunkEntry.decode(value)
            if c.record.pack != old_id:
                continue
            to = moves.get((RecordKind.CHUNK, c.record.offset))
            if to is None:
                if c.refs > 0:
                    raise IntegrityError(f"gc: live chunk {key.hex()} was not copied; aborting")
                txn.delete(key, db=db_c)
            else:
                txn.put(key, ChunkEntry(to, c.raw_len, c.codec, c.refs).encode(), db=db_c)
        for key, value in list(txn.cursor(db=db_o)):
            o = ObjectEntry.decode(value)
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
            new_id, size, live_new, records = new
            txn.put(new_id, PackEntry(PACK_SEALED, size, live_new, records, old.created_ns, old.tier,
                                      old.tenant, old.group).encode(), db=db_p)
        txn.delete(old_id, db=db_p)

    index.write(apply)
    archive.tier.remove(pack_name(old_id))


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
