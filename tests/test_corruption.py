"""Integrity: a damaged byte anywhere in a pack is detected, never returned as data.

A small archive (a few sealed and unsealed packs, two tenants, chunked and single-chunk objects, garbage
from a delete and a superseded manifest) is built once. Each case damages a copy of it: one byte flipped
in every region of every pack (pack header, record headers and payloads of each kind, the TOC, the
footer), a pack deleted, truncated, or an unknown one added. Then every object must read back byte-exact
or raise :class:`IntegrityError` (naming the object and the pack), objects whose records are intact must
still read, and ``verify`` must report the damage and name the pack.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, IndexConfig, KiB, MiB, StoreConfig
from mmarchive.errors import IntegrityError
from mmarchive.index.schema import (
    DB_CHUNKS,
    DB_OBJECTS,
    DB_PACKS,
    ChunkEntry,
    ObjectEntry,
    PackEntry,
    scoped_key,
)
from mmarchive.pack.format import FOOTER_LEN, RECORD_HEADER_LEN, Footer, RecordKind, pack_name
from mmarchive.pack.reader import ScanResult, read_header, scan_pack
from mmarchive.records import VerifyReport
from mmarchive.tiers.local import LocalPackFile

CONFIG = ArchiveConfig(
    store=StoreConfig(chunk_threshold=8 * KiB, chunk_min=4 * KiB, chunk_avg=8 * KiB, chunk_max=16 * KiB,
                      pack_size=32 * KiB, parallel_threshold=4 * KiB),
    index=IndexConfig(map_size=1 * MiB),
)


@dataclass(frozen=True)
class Obj:
    label: str
    tenant: str
    id: str
    data: bytes
    chunks: tuple[tuple[str, int, int], ...]  # (pack, start, end) of each chunk record, header included
    manifest: tuple[str, int, int]

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.id}"


@dataclass(frozen=True)
class Region:
    pack: str
    sealed: bool
    what: str  # pack-header, record-header:chunk, payload:manifest, toc-header, toc-payload, footer, ...
    start: int
    end: int


@dataclass(frozen=True)
class Base:
    path: Path
    objects: tuple[Obj, ...]
    regions: tuple[Region, ...]
    packs: dict[str, bool]  # name -> sealed

    def pack_path(self, root: Path, name: str) -> Path:
        return root / "packs" / name[:2] / f"{name}.pack"


def _text(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = [b"PatientID", b"=", b"0042", b" StudyDate ", b"20240611", b"\n", b"CT", b"MR", b"slice"]
    return b"".join(rng.choice(words) for _ in range(n))[:n]


def _build(root: Path) -> Base:
    rng = random.Random(99)
    specs = [  # (label, tenant, group, data)
        ("empty", "default", "", b""),
        ("tiny", "default", "", b"hello"),
        ("text", "default", "", _text(3000, 1)),
        ("random", "default", "", rng.randbytes(2000)),
        ("multi-random-0", "default", "", rng.randbytes(30_000)),  # seals the first group "" pack
        ("at-threshold", "default", "study-a", rng.randbytes(CONFIG.store.chunk_threshold)),
        ("multi-random", "default", "study-a", rng.randbytes(40_000)),
        ("multi-text", "default", "", _text(30_000, 2)),
        ("multi-text-b", "default", "study-b", _text(20_000, 4)),
        ("t2-random", "t2", "", rng.randbytes(5000)),
        ("t2-text", "t2", "", _text(3000, 1)),  # same bytes as "text", other tenant: own records
        ("t2-multi", "t2", "study-a", rng.randbytes(36_000)),
        ("new-metadata", "default", "", _text(1500, 3)),
    ]
    objects: list[Obj] = []
    with Archive.create(root, CONFIG) as a:
        # Deletions leave a garbage chunk and manifest, and a tombstone; the first ends up in a pack
        # that the puts after it fill up (sealed), the second in one that stays open.
        a.delete(a.put(rng.randbytes(3000)).id)
        for _label, tenant, group, data in specs:
            a.put(data, tenant=tenant, group=group)
        a.put(_text(1500, 3), metadata={"v": 2})  # supersedes a manifest: garbage in a pack
        a.delete(a.put(rng.randbytes(3000)).id)
        with a.index.read() as txn:
            for label, tenant, _group, data in specs:
                oid = a.put(data, tenant=tenant).id  # already stored: returns its id
                entry = ObjectEntry.decode(txn.get(scoped_key(tenant, bytes.fromhex(oid)),
                                                   db=a.index.db(DB_OBJECTS)))
                chunks = []
                for cid, _n in entry.chunks:
                    c = ChunkEntry.decode(txn.get(scoped_key(tenant, cid), db=a.index.db(DB_CHUNKS)))
                    start = c.record.offset
                    chunks.append((pack_name(c.record.pack), start,
                                   start + RECORD_HEADER_LEN + c.record.stored_len))
                m = entry.record
                manifest = (pack_name(m.pack), m.offset, m.offset + RECORD_HEADER_LEN + m.stored_len)
                objects.append(Obj(label, tenant, oid, data, tuple(chunks), manifest))
            entries = [(k, PackEntry.decode(v)) for k, v in txn.cursor(db=a.index.db(DB_PACKS))]
            packs = {pack_name(k): e.sealed for k, e in entries if not e.unused}  # (no reservations)
    regions: list[Region] = []
    for name, sealed in packs.items():
        regions.extend(_regions(root / "packs" / name[:2] / f"{name}.pack", name, sealed))
    return Base(root, tuple(objects), tuple(regions), packs)


def _regions(path: Path, name: str, sealed: bool) -> Iterator[Region]:
    fd = os.open(path, os.O_RDONLY)
    src = LocalPackFile(name, fd)
    try:
        header_len = len(read_header(src).encode())
        yield Region(name, sealed, "pack-header", 0, header_len)
        scan = ScanResult()
        for rec in scan_pack(src, scan, payloads=False):
            kind = RecordKind(rec.header.kind).name.lower()
            body = rec.offset + RECORD_HEADER_LEN
            yield Region(name, sealed, f"record-header:{kind}", rec.offset, body)
            yield Region(name, sealed, f"payload:{kind}", body, body + rec.header.stored_len)
        assert not scan.problems and scan.sealed == sealed
        size = src.size()
        if sealed:
            footer = Footer.decode(src.read_at(size - FOOTER_LEN, FOOTER_LEN))
            assert footer is not None
            toc = footer.toc_offset
            yield Region(name, sealed, "toc-header", toc, toc + RECORD_HEADER_LEN)
            yield Region(name, sealed, "toc-payload", toc + RECORD_HEADER_LEN, toc + footer.toc_len)
            yield Region(name, sealed, "footer", size - FOOTER_LEN, size)
    finally:
        src.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    b = _build(tmp_path_factory.mktemp("corruption") / "pristine")
    assert any(b.packs.values()) and not all(b.packs.values()), "want sealed and unsealed packs"
    assert any(len(o.chunks) > 1 for o in b.objects)
    size = sum(f.stat().st_size for f in b.path.rglob("*") if f.is_file())
    assert size < 1_000_000, f"the base archive grew to {size} bytes"
    return b


@pytest.fixture
def work(base: Base, tmp_path: Path) -> Path:
    return tmp_path


def _copy(base: Base, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(base.path, dest)
    return dest


# -- checking one damaged copy -----------------------------------------------------------------------


def _read_all(archive: Archive, base: Base, *, affected: set[str], packs: set[str], where: str) -> None:
    """Every object reads back exactly or raises IntegrityError; ``affected`` ones must raise."""
    for obj in base.objects:
        for how in ("get", "open_object"):
            try:
                if how == "get":
                    data = archive.get(obj.id, tenant=obj.tenant)
                else:
                    with archive.open_object(obj.id, tenant=obj.tenant) as f:
                        data = f.read()
            except IntegrityError as e:
                assert obj.key in affected, f"{where}: intact {obj.label} failed to read via {how}: {e}"
                assert obj.id in str(e), f"{where}: the error does not name object {obj.label}: {e}"
                assert any(p in str(e) for p in packs), f"{where}: the error does not name the pack: {e}"
                assert e.object_id == obj.id and e.pack in packs, (e.object_id, e.pack)
                continue
            except Exception as e:
                pytest.fail(f"{where}: reading {obj.label} via {how} raised {type(e).__name__}, not "
                            f"IntegrityError: {e}")
            assert data == obj.data, f"{where}: object {obj.label} read back WRONG BYTES via {how}"
            assert obj.key not in affected, f"{where}: damaged object {obj.label} read back via {how}"


def _check_damaged(root: Path, base: Base, *, pack: str, affected: set[str], where: str,
                   readonly: bool = False) -> VerifyReport:
    with Archive.open(root, readonly=readonly) as archive:
        _read_all(archive, base, affected=affected, packs={pack}, where=where)
        report = archive.verify()
    assert not report.ok, f"{where}: verify did not notice the damage"
    problems = report.damaged + report.missing
    assert any(pack in p for p in problems), f"{where}: verify does not name pack {pack}: {problems}"
    assert affected <= set(report.affected_objects), \
        f"{where}: verify misses affected objects {affected - set(report.affected_objects)}"
    return report


def _touching(base: Base, pack: str, lo: int, hi: int) -> set[str]:
    """Objects one of whose chunk records overlaps bytes [lo, hi) of ``pack``."""
    return {o.key for o in base.objects for p, s, e in o.chunks if p == pack and s < hi and lo < e}


@contextmanager
def _flipped(path: Path, pos: int, mask: int) -> Iterator[None]:
    """XOR the byte at ``pos`` with ``mask``; restore the file exactly afterwards."""
    pristine = path.read_bytes()
    damaged = bytearray(pristine)
    damaged[pos] ^= mask
    path.write_bytes(damaged)
    try:
        yield
    finally:
        path.write_bytes(pristine)
    assert path.read_bytes() == pristine


# -- one flipped byte --------------------------------------------------------------------------------

RECORD_REGIONS = ["pack-header", "record-header:chunk", "payload:chunk", "record-header:manifest",
                  "payload:manifest", "record-header:tombstone", "payload:tombstone"]
#: Where each field starts in the fixed layouts (docs/format.md): every field gets a damaged byte.
FIELD_STARTS = {
    "pack-header": (0, 8, 10, 12, 16, 32, 40, 42, 44),
    "record-header": (0, 4, 5, 6, 8, 12, 16, 48, 56),
    "toc-header": (0, 4, 5, 6, 8, 12, 16, 48, 56),
    "footer": (0, 8, 16, 24, 32, 48),
}
CASES = ([(what, True) for what in [*RECORD_REGIONS, "toc-header", "toc-payload", "footer"]]
         + [(what, False) for what in RECORD_REGIONS])


@pytest.mark.parametrize(("what", "sealed"), CASES,
                         ids=[f"{w}-{'sealed' if s else 'unsealed'}" for w, s in CASES])
def test_one_flipped_byte_is_detected_and_never_returned(base: Base, work: Path, what: str,
                                                         sealed: bool) -> None:
    regions = [r for r in base.regions if r.what == what and r.sealed == sealed]
    assert regions, f"the base archive has no {what} in a {'sealed' if sealed else 'unsealed'} pack"
    rng = random.Random(f"{what}/{sealed}")
    root = _copy(base, work / "copy")  # one copy; each case flips a byte in it and restores it after
    cases = 0
    for region in regions:
        n = region.end - region.start
        fields = FIELD_STARTS.get(what.split(":")[0], ())
        positions = sorted({region.start, region.end - 1, region.start + n // 2,
                            region.start + rng.randrange(n), *(region.start + f for f in fields if f < n)})
        for pos in positions:
            mask = rng.choice((0x01, 0x80, 0xFF, rng.randrange(1, 256)))
            where = f"byte {pos} of {what} [{region.start}, {region.end}) in pack {region.pack} ^ {mask:#x}"
            affected = _touching(base, region.pack, pos, pos + 1)  # a garbage chunk affects nobody
            with _flipped(base.pack_path(root, region.pack), pos, mask):
                _check_damaged(root, base, pack=region.pack, affected=affected, where=where,
                               readonly=cases % 2 == 1)
            cases += 1
    assert cases >= len(regions)


def test_every_chunk_of_every_object_is_covered(base: Base) -> None:
    """The flip cases above reach each live chunk record (so each object is damaged at least once)."""
    chunk_regions = {(r.pack, r.start) for r in base.regions if r.what == "record-header:chunk"}
    for obj in base.objects:
        for pack, start, _end in obj.chunks:
            assert (pack, start) in chunk_regions, f"{obj.label}: chunk at {pack}:{start} not scanned"


# -- whole packs missing, truncated, unknown ---------------------------------------------------------


def _pack_with_most_objects(base: Base, sealed: bool) -> str:
    counts: dict[str, int] = {}
    for o in base.objects:
        for p in {p for p, _s, _e in o.chunks if base.packs[p] == sealed}:
            counts[p] = counts.get(p, 0) + 1
    return max(counts, key=lambda p: counts[p])


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "unsealed"])
def test_missing_pack_is_reported_with_the_objects_it_takes(base: Base, work: Path, sealed: bool) -> None:
    pack = _pack_with_most_objects(base, sealed)
    root = _copy(base, work / "copy")
    base.pack_path(root, pack).unlink()
    affected = _touching(base, pack, 0, 1 << 62)
    assert affected
    for readonly in (True, False):
        report = _check_damaged(root, base, pack=pack, affected=affected, where=f"missing {pack}",
                                readonly=readonly)
        assert any(pack in m for m in report.missing), report.missing
        described = {o.key for o in base.objects if o.manifest[0] == pack}  # manifest gone too
        assert affected <= set(report.affected_objects) <= affected | described
        assert report.orphaned == []


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "unsealed"])
@pytest.mark.parametrize("cut", ["to-zero", "in-header", "mid-record", "last-byte"])
def test_truncated_pack_is_detected(base: Base, work: Path, sealed: bool, cut: str) -> None:
    pack = _pack_with_most_objects(base, sealed)
    root = _copy(base, work / "copy")
    path = base.pack_path(root, pack)
    size = path.stat().st_size
    records = [r for r in base.regions if r.pack == pack and r.what.startswith("payload:")]
    length = {"to-zero": 0, "in-header": 10, "last-byte": size - 1,
              "mid-record": (records[len(records) // 2].start + records[len(records) // 2].end) // 2}[cut]
    os.truncate(path, length)
    affected = _touching(base, pack, length, 1 << 62)
    _check_damaged(root, base, pack=pack, affected=affected, where=f"{pack} cut to {length} of {size}")


def test_unknown_pack_file_is_reported_orphaned(base: Base, work: Path) -> None:
    root = _copy(base, work / "copy")
    some = next(iter(base.packs))
    extra = "0" * 30 + "ff"
    (root / "packs" / "00").mkdir(exist_ok=True)
    shutil.copy(base.pack_path(root, some), base.pack_path(root, extra))
    with Archive.open(root) as archive:
        report = archive.verify()
        _read_all(archive, base, affected=set(), packs=set(), where="extra pack")
    assert report.ok and report.orphaned == [extra]
    assert not report.damaged and not report.missing and not report.affected_objects


def test_unknown_file_with_a_non_hex_name_is_reported_orphaned(base: Base, work: Path) -> None:
    """A stray ``packs/XX/*.pack`` that is not named by a pack id (a backup copy, say) is orphaned data.

    verify must report it, not fail on it.
    """
    root = _copy(base, work / "copy")
    some = next(iter(base.packs))
    stray = base.pack_path(root, some).with_name("copy-of-a-pack.pack")
    shutil.copy(base.pack_path(root, some), stray)
    with Archive.open(root) as archive:
        report = archive.verify()
    assert report.ok
    assert any("copy-of-a-pack" in o for o in report.orphaned), report.orphaned


def test_undamaged_copy_verifies_clean(base: Base, work: Path) -> None:
    root = _copy(base, work / "copy")
    with Archive.open(root) as archive:
        _read_all(archive, base, affected=set(), packs=set(), where="pristine")
        report = archive.verify()
    assert report.ok and not report.damaged and not report.orphaned
    assert report.objects_checked == len({o.key for o in base.objects})
    assert report.packs_checked == len(base.packs)


# -- damage must not stop the archive from taking new writes ----------------------------------------


def _open_pack_of(base: Base, tenant: str, group: str) -> tuple[str, Region]:
    """The unsealed pack that new writes of (tenant, group) resume, and a manifest payload in it."""
    with Archive.open(base.path, readonly=True) as a, a.index.read() as txn:
        packs = {pack_name(k): PackEntry.decode(v) for k, v in txn.cursor(db=a.index.db(DB_PACKS))}
    name = next(n for n, e in packs.items() if not e.sealed and e.tenant == tenant and e.group == group)
    region = next(r for r in base.regions if r.pack == name and r.what == "payload:manifest")
    return name, region


def test_damaged_unsealed_pack_does_not_block_new_puts(base: Base, work: Path) -> None:
    """One bad byte in an old record of the open pack of (tenant, group) must not make every later put
    to that (tenant, group) fail: the archive should leave that pack alone and start a new one."""
    name, region = _open_pack_of(base, "default", "")
    root = _copy(base, work / "copy")
    with _flipped(base.pack_path(root, name), region.start + 3, 0x01), Archive.open(root) as archive:
        info = archive.put(b"written after the damage")
        assert archive.get(info.id) == b"written after the damage"


def test_damaged_unsealed_pack_does_not_block_gc(base: Base, work: Path) -> None:
    """gc must still reclaim what it can (and leave the damaged pack to verify) instead of failing."""
    name, region = _open_pack_of(base, "default", "")
    root = _copy(base, work / "copy")
    with _flipped(base.pack_path(root, name), region.start + 3, 0x01), Archive.open(root) as archive:
        archive.gc()
        assert not archive.verify().ok
