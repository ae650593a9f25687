"""Reindex: rebuild the whole LMDB index from the pack files alone.

Every pack on the tier is scanned; chunk records give the chunk table, the manifest or tombstone with the
highest sequence number per (tenant, object) gives the object table, and reference counts, pack live bytes
and tenant totals are recomputed from those. The new index is built beside the old one and swapped in by
rename, so a crash during reindex leaves the old index in place.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmarchive.errors import IntegrityError, NotFoundError
from mmarchive.index.env import IndexEnv
from mmarchive.index.schema import (
    DB_CHANGES,
    DB_CHUNKS,
    DB_META,
    DB_OBJECTS,
    DB_PACKS,
    DB_REPLICAS,
    DB_TENANTS,
    META_ARCHIVE_ID,
    META_SCHEMA,
    META_SEQ,
    PACK_OPEN,
    PACK_SEALED,
    SCHEMA_VERSION,
    STATE_DELETED,
    STATE_LIVE,
    ChunkEntry,
    ObjectEntry,
    PackEntry,
    RecordLocation,
    TenantTotals,
    change_key,
    scoped_key,
    split_scoped_key,
)
from mmarchive.pack.format import (
    RECORD_HEADER_LEN,
    Manifest,
    RecordKind,
    Tombstone,
    encode_metadata,
    pack_id_from_name,
)
from mmarchive.pack.reader import ScanResult, scan_pack, windowed
from mmarchive.tiers.local import fsync_directory
from mmarchive.tiers.tierset import TierSet

if TYPE_CHECKING:
    from mmarchive.archive import Archive


@dataclass
class _PackFacts:
    tenant: str
    group: str
    created_ns: int
    sealed: bool
    length: int
    records: int
    tier: str


def recover_index_directory(index_dir: Path, tiers: TierSet, *, readonly: bool) -> bool:
    """Finish or undo a reindex that was stopped, before the index is opened.

    Returns True when there is no index but a tier holds packs: the caller must rebuild it (a
    writer does so at once; a read-only open is refused).
    """
    new_dir = _rebuild_dir(index_dir)
    old_dir = _old_dir(index_dir)
    if not readonly:
        if not index_dir.exists() and old_dir.exists():
            old_dir.rename(index_dir)  # stopped between the two renames: the old index is intact
            fsync_directory(index_dir.parent)
        shutil.rmtree(new_dir, ignore_errors=True)
        shutil.rmtree(old_dir, ignore_errors=True)
    if (index_dir / "data.mdb").exists():
        return False
    if not any(next(iter(tiers.get(name).list()), None) is not None for name in tiers.names):
        return False
    if readonly:
        raise NotFoundError(f"the archive at {index_dir.parent} has no index; open it for writing "
                            "(which rebuilds it from the packs) or run `mmarchive reindex`")
    return True


def _rebuild_dir(index_dir: Path) -> Path:
    return index_dir.with_name(index_dir.name + ".rebuild")


def _old_dir(index_dir: Path) -> Path:
    return index_dir.with_name(index_dir.name + ".old")


def rebuild_index(archive: Archive, *, progress: Callable[[int, int], None] | None = None) -> None:
    index_dir = archive.index.path
    new_dir = _rebuild_dir(index_dir)
    old_dir = _old_dir(index_dir)
    shutil.rmtree(new_dir, ignore_errors=True)
    shutil.rmtree(old_dir, ignore_errors=True)

    packs: dict[bytes, _PackFacts] = {}
    chunks: dict[bytes, tuple[RecordLocation, int, int]] = {}  # key -> (loc, raw_len, codec)
    winners: dict[bytes, tuple[int, RecordLocation, Manifest | Tombstone]] = {}
    max_seq = 0
    # Every tier is listed, hottest first; a pack found on several (a move whose source was not yet
    # removed, a replica) is read from the hottest copy and recorded there.
    names: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    copies: dict[str, list[str]] = {}  # pack name -> the other tiers holding it
    for tier_name in archive.tiers.names:
        for stored in archive.tiers.get(tier_name).list():
            if pack_id_from_name(stored.name) is None:
                continue
            if stored.name in seen:
                copies.setdefault(stored.name, []).append(tier_name)
            else:
                seen[stored.name] = tier_name
                names.append((tier_name, stored.name))
    # A copy on the replica tier of the primary's tier is that pack's replica again (verify checks it).
    replicas = {name: [t for t in others if archive.tiers.config(seen[name]).replica == t]
                for name, others in copies.items()}
    for done, (tier_name, name) in enumerate(names):
        if progress is not None:
            progress(done, len(names))
        pack_id = bytes.fromhex(name)
        scan = ScanResult()
        last_end = 0
        records = 0
        with windowed(archive.tiers.get(tier_name).reader(name)) as src:
            for rec in scan_pack(src, scan):
                h = rec.header
                if scan.header is None or scan.header.pack_id != pack_id:
                    break
                tenant = scan.header.tenant
                loc = RecordLocation(pack_id, rec.offset, h.stored_len)
                records += 1
                last_end = rec.offset + RECORD_HEADER_LEN + h.stored_len
                if h.kind == RecordKind.CHUNK:
                    chunks.setdefault(scoped_key(tenant, h.id), (loc, h.raw_len, h.codec))
                elif h.kind in (RecordKind.MANIFEST, RecordKind.TOMBSTONE):
                    payload = bytes(rec.payload)
                    item: Manifest | Tombstone = (
                        Manifest.decode_payload(h.id, payload, pack=name)
                        if h.kind == RecordKind.MANIFEST
                        else Tombstone.decode_payload(h.id, payload, pack=name))
                    key = scoped_key(item.tenant, h.id)
                    max_seq = max(max_seq, item.seq)
                    prev = winners.get(key)
                    if prev is None or item.seq > prev[0]:
                        winners[key] = (item.seq, loc, item)
            header = scan.header
            if header is None:
                continue  # not a pack we can read at all; verify reports it
            if header.pack_id != pack_id:
                raise IntegrityError(f"pack file {name} holds pack {header.pack_id.hex()}; rename or "
                                     "remove it before reindexing", pack=name)
            length = src.size() if scan.sealed else max(last_end, len(header.encode()))
        packs[pack_id] = _PackFacts(header.tenant, header.group, header.created_ns, scan.sealed,
                                    length, records, tier_name)

    refs: dict[bytes, int] = {}
    live: dict[bytes, int] = {}
    totals: dict[str, TenantTotals] = {}
    objects: list[tuple[bytes, ObjectEntry]] = []
    for key, (seq, loc, item) in winners.items():
        live[loc.pack] = live.get(loc.pack, 0) + RECORD_HEADER_LEN + loc.stored_len
        if isinstance(item, Manifest):
            entry = ObjectEntry(STATE_LIVE, seq, item.size, item.created_ns, loc,
                                encode_metadata(item.metadata), item.chunks)
            t = totals.get(item.tenant, TenantTotals())
            totals[item.tenant] = t.plus(TenantTotals(1, item.size))
            for cid, _n in item.chunks:
                ck = scoped_key(item.tenant, cid)
                refs[ck] = refs.get(ck, 0) + 1
        else:
            entry = ObjectEntry(STATE_DELETED, seq, 0, item.deleted_ns, loc, b"", ())
        objects.append((key, entry))

    def build(txn: Any, env: IndexEnv) -> None:
        for key, entry in objects:
            txn.put(key, entry.encode(), db=env.db(DB_OBJECTS))
            tenant, oid = split_scoped_key(key)
            txn.put(change_key(tenant, entry.seq), oid, db=env.db(DB_CHANGES))
        for key, (loc, raw_len, codec) in chunks.items():
            n = refs.get(key, 0)
            txn.put(key, ChunkEntry(loc, raw_len, codec, n).encode(), db=env.db(DB_CHUNKS))
            if n:
                live[loc.pack] = live.get(loc.pack, 0) + RECORD_HEADER_LEN + loc.stored_len
                tenant = split_scoped_key(key)[0]
                t = totals.get(tenant, TenantTotals())
                totals[tenant] = t.plus(TenantTotals(0, 0, 1, raw_len, loc.stored_len))
        for pack_id, f in packs.items():
            txn.put(pack_id, PackEntry(PACK_SEALED if f.sealed else PACK_OPEN, f.length,
                                       live.get(pack_id, 0), f.records, f.created_ns, f.tier,
                                       f.tenant, f.group).encode(), db=env.db(DB_PACKS))
        for tenant, t in totals.items():
            txn.put(tenant.encode(), t.encode(), db=env.db(DB_TENANTS))
        for name, tiers in replicas.items():
            if tiers and bytes.fromhex(name) in packs:
                txn.put(bytes.fromhex(name), json.dumps({t: 0 for t in tiers}).encode(),
                        db=env.db(DB_REPLICAS))
        meta = env.db(DB_META)
        txn.put(META_SEQ, max_seq.to_bytes(8, "little"), db=meta)
        txn.put(META_ARCHIVE_ID, archive.config.archive_id.encode(), db=meta)
        txn.put(META_SCHEMA, str(SCHEMA_VERSION).encode(), db=meta)

    if progress is not None:
        progress(len(names), len(names))
    env = IndexEnv(new_dir, archive.config.index)
    try:
        env.write(lambda txn: build(txn, env))
        env.sync()
    finally:
        env.close()
    archive.index.close()
    index_dir.rename(old_dir)
    new_dir.rename(index_dir)
    fsync_directory(index_dir.parent)
    shutil.rmtree(old_dir, ignore_errors=True)
    archive.index = IndexEnv(index_dir, archive.config.index)
