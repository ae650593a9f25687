"""Verify: read every record of every pack and check the index against what the packs hold.

Each pack is scanned end to end (record headers, payload xxh3, and for sealed packs the table of contents,
footer and whole-pack checksum); each chunk is also decoded and its BLAKE3 compared with its id. Then
every index entry must point at an intact record of the right kind, and every live object's chunks must
be present. Damage is reported by pack and offset, with the objects it makes unreadable; pack files the
index does not know are reported as orphaned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import blake3

from mmarchive.errors import IntegrityError, StorageError
from mmarchive.index.schema import (
    DB_CHANGES,
    DB_CHUNKS,
    DB_OBJECTS,
    DB_PACKS,
    ChunkEntry,
    ObjectEntry,
    PackEntry,
    change_key,
    scoped_key,
    split_scoped_key,
)
from mmarchive.maintenance.replicas import all_replicas
from mmarchive.pack.format import RecordKind, pack_id_from_name, pack_name
from mmarchive.pack.reader import ScanResult, scan_pack, windowed
from mmarchive.pack.transfer import check_sealed_copy
from mmarchive.records import VerifyReport

if TYPE_CHECKING:
    from mmarchive.archive import Archive


@dataclass(frozen=True, slots=True)
class _Seen:
    kind: int
    id: bytes
    stored_len: int


def verify_archive(archive: Archive, *, progress: Callable[[int, int], None] | None = None
                   ) -> VerifyReport:
    report = VerifyReport()
    index = archive.index
    with index.read() as txn:
        packs = {k: PackEntry.decode(v) for k, v in txn.cursor(db=index.db(DB_PACKS))}
    stored = {name: {p.name for p in archive.tiers.get(name).list()} for name in archive.tiers.names}
    # Files not named by a known pack id: leftovers, stray copies. Never read as part of the archive.
    # (A copy of a known pack on another tier than the index's, such as the source of a move within
    # its grace period, is not reported here; the lifecycle owns those.)
    report.orphaned = sorted(n if tier == archive.tier.name else f"{tier}:{n}"
                             for tier, names in stored.items() for n in names
                             if pack_id_from_name(n) not in packs)
    packs = {k: e for k, e in packs.items() if not e.deleting}
    good: dict[tuple[bytes, int], _Seen] = {}
    total = len(packs)
    for i, (pack_id, entry) in enumerate(sorted(packs.items())):
        name = pack_name(pack_id)
        if progress is not None:
            progress(i, total)
        if name not in stored.get(entry.tier, ()):
            if entry.length > 0:
                report.missing.append(f"pack {name} ({entry.length} bytes, tenant {entry.tenant}) "
                                      f"is missing from tier {entry.tier}")
                report.damaged_packs.append(name)
            continue
        report.packs_checked += 1
        scan = ScanResult()
        with windowed(archive.tiers.get(entry.tier).reader(name)) as src:
            src_short = src.size() < entry.length
            if src_short:
                report.damaged.append(f"pack {name}: file has {src.size()} bytes, the index "
                                      f"committed {entry.length}")
            limit = None if entry.sealed else entry.length
            for rec in scan_pack(src, scan, limit=limit):
                report.records_checked += 1
                report.bytes_checked += rec.header.stored_len
                if rec.header.kind == RecordKind.CHUNK:
                    try:
                        plain = archive.codecs.decode(rec.header.codec, rec.payload, rec.header.raw_len,
                                                      where=f"pack {name}, offset {rec.offset}")
                        if blake3.blake3(plain).digest() != rec.header.id:
                            raise IntegrityError(f"pack {name}: chunk at offset {rec.offset} does "
                                                 "not match its id (BLAKE3 mismatch)")
                    except IntegrityError as e:
                        report.damaged.append(str(e))
                        continue
                good[(pack_id, rec.offset)] = _Seen(rec.header.kind, rec.header.id,
                                                    rec.header.stored_len)
        if entry.sealed and not scan.sealed:
            report.damaged.append(f"pack {name}: the index says sealed but it has no valid footer")
        report.damaged.extend(scan.problems or [])
        if scan.problems or (entry.sealed and not scan.sealed) or src_short:
            report.damaged_packs.append(name)
    if progress is not None:
        progress(total, total)
    for pack_id, tiers in sorted(all_replicas(archive).items()):
        primary = packs.get(pack_id)
        if primary is None:
            continue
        for tier in sorted(tiers):
            try:
                check_sealed_copy(archive.tiers.get(tier), pack_name(pack_id), primary.length)
                report.replicas_checked += 1
            except (IntegrityError, StorageError) as e:
                report.damaged.append(f"replica of pack {pack_name(pack_id)} on tier {tier}: {e}")
                report.damaged_replicas.append(f"{tier}:{pack_name(pack_id)}")

    bad_chunks: set[bytes] = set()
    with index.read() as txn:
        for key, value in txn.cursor(db=index.db(DB_CHUNKS)):
            chunk = ChunkEntry.decode(value)
            seen = good.get((chunk.record.pack, chunk.record.offset))
            intact = (seen is not None and seen.kind == RecordKind.CHUNK and seen.id == key[-32:]
                      and seen.stored_len == chunk.record.stored_len)
            if not intact and chunk.refs > 0:
                bad_chunks.add(key)
                tenant, cid = split_scoped_key(key)
                report.damaged.append(f"chunk {cid.hex()} (tenant {tenant}) is not intact at pack "
                                      f"{pack_name(chunk.record.pack)} offset {chunk.record.offset}")
        chunk_db, changes_db = index.db(DB_CHUNKS), index.db(DB_CHANGES)
        for key, value in txn.cursor(db=index.db(DB_OBJECTS)):
            obj = ObjectEntry.decode(value)
            tenant, oid = split_scoped_key(key)
            if txn.get(change_key(tenant, obj.seq), db=changes_db) != oid:
                report.missing.append(f"the change feed of tenant {tenant} lacks object {oid.hex()} at "
                                      f"seq {obj.seq}; run `mmarchive reindex`")
            seen = good.get((obj.record.pack, obj.record.offset))
            want = RecordKind.MANIFEST if obj.live else RecordKind.TOMBSTONE
            problem = None
            if seen is None or seen.kind != want or seen.id != oid:
                problem = (f"the {want.name.lower()} of object {oid.hex()} (tenant {tenant}) is not "
                           f"intact at pack {pack_name(obj.record.pack)} offset {obj.record.offset}")
                report.damaged.append(problem)
            if not obj.live:
                continue
            report.objects_checked += 1
            for cid, _n in obj.chunks:
                ckey = scoped_key(tenant, cid)
                if ckey in bad_chunks or txn.get(ckey, db=chunk_db) is None:
                    problem = problem or f"chunk {cid.hex()} is damaged or missing"
            if problem is not None:
                report.affected_objects.append(f"{tenant}/{oid.hex()}")
    return report
