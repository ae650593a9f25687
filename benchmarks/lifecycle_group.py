"""The `lifecycle` group: time `lifecycle plan` over an index of 1,000,000 objects (issue 4: under 10 s).

The index is built synthetically, as the DICOM query group builds its catalog: object entries (with the
lifecycle facts the DICOM layer records: study date, birth date, modality, SOP class, patient, study,
series) and sealed pack entries are written straight into a real archive's LMDB index in large
transactions; no pack file is read by a plan, so none is written. Studies of 200 instances (1-4 series)
over fifteen years, each ingested at once in the last two years, ~40 packs per study month, all on the
landing tier of three; a policy of five rules (moves after 90
days and 2 years, a 10-years-or-age-28 retention with expiry, a mammography rule, a research tenant).
Each run times `make_plan` now (its default: the pass over the objects table shared by two worker
processes), in one process, and with a 30-day horizon; beside it, the same run's floor: one pass over
the objects table through `Archive.scan_objects` in one process with nothing decided.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from benchmarks.archive_timing import median, target_note
from benchmarks.harness import BenchmarkContext, BenchmarkGroup
from benchmarks.results import ResultRow
from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, GiB, IndexConfig, TierConfig
from mmarchive.index.schema import (
    DB_CHANGES,
    DB_META,
    DB_OBJECTS,
    DB_PACKS,
    DB_TENANTS,
    META_SEQ,
    PACK_SEALED,
    STATE_LIVE,
    ObjectEntry,
    PackEntry,
    RecordLocation,
    TenantTotals,
    change_key,
    scoped_key,
)
from mmarchive.lifecycle.facts import facts_metadata
from mmarchive.lifecycle.runner import make_plan
from mmarchive.pack.format import encode_metadata

GROUP_NAME: Final = "lifecycle"
FULL_OBJECTS: Final = 1_000_000
QUICK_OBJECTS: Final = 20_000
TARGET_S: Final = 10.0
INSTANCES_PER_STUDY: Final = 200
PACKS_PER_MONTH: Final = 40
BATCH: Final = 50_000
TENANTS: Final = ("hospital-a", "hospital-b", "research-1")
_MODALITIES = (("CT", "1.2.840.10008.5.1.4.1.1.2"), ("MR", "1.2.840.10008.5.1.4.1.1.4"),
               ("MG", "1.2.840.10008.5.1.4.1.1.1.2"), ("CR", "1.2.840.10008.5.1.4.1.1.1"))
_ROOT = "1.2.826.0.1.3680043.10.543"

POLICY: Final[list[dict[str, Any]]] = [
    {"name": "research-short", "match": {"tenant": "research-*"},
     "retain": {"years": 2, "since": "ingest"}, "expire": True},
    {"name": "mammo-to-disk-fast", "match": {"kind": "dicom", "modality": "MG"},
     "move": [{"to": "disk", "after_days": 30, "since": "study_date"}]},
    {"name": "age-down", "match": {"kind": "dicom"},
     "move": [{"to": "disk", "after_days": 90, "since": "study_date"},
              {"to": "cold", "after_days": 730, "since": "study_date"}]},
    {"name": "ct-10y-or-28", "match": {"kind": "dicom"},
     "retain": {"years": 10, "since": "study_date", "until_patient_age": 28}, "expire": True},
    {"name": "other-forever", "match": {"kind": "other"}, "retain": {"forever": True}},
]


def _config(root: Path) -> ArchiveConfig:
    return ArchiveConfig(
        index=IndexConfig(map_size=4 * GiB),
        tiers=(TierConfig("ssd", path="packs"), TierConfig("disk", path=str(root / "disk")),
               TierConfig("cold", path=str(root / "cold"))),
        lifecycle={"rule": POLICY})


def build_index(archive: Archive, objects: int, seed: int) -> int:
    """Write ``objects`` object entries and their packs into the archive's index; return packs."""
    rng = random.Random(seed)
    today = datetime.now(UTC).date()
    first = today - timedelta(days=15 * 365)
    now_ns = time.time_ns()
    index = archive.index
    packs: dict[tuple[str, str, int], bytes] = {}
    rows: list[tuple[bytes, bytes]] = []
    seq = 0
    written = 0

    def flush() -> None:
        def apply(txn: Any) -> None:
            for key, value in rows:
                txn.put(key, value, db=index.db(DB_OBJECTS))
                tenant = key[:key.index(b"\x00")].decode()
                entry_seq = ObjectEntry.decode(value).seq
                txn.put(change_key(tenant, entry_seq), key[len(tenant) + 1:], db=index.db(DB_CHANGES))
            txn.put(META_SEQ, seq.to_bytes(8, "little"), db=index.db(DB_META))
        index.write(apply)
        rows.clear()

    study = 0
    while written < objects:
        study += 1
        tenant = TENANTS[0 if study % 10 < 6 else 1 if study % 10 < 9 else 2]
        study_date = first + timedelta(days=rng.randrange((today - first).days))
        birth = study_date - timedelta(days=rng.randrange(365, 90 * 365))
        modality, sop_class = _MODALITIES[rng.randrange(len(_MODALITIES))]
        study_uid = f"{_ROOT}.{study}"
        series_count = rng.randrange(1, 5)
        # A study arrives at once (from its modality, or a migration batch): its instances share a day.
        ingested = now_ns - rng.randrange(2 * 365 * 86_400) * 10**9
        for i in range(min(INSTANCES_PER_STUDY, objects - written)):
            series = i % series_count
            meta = {"dicom": {"sop": f"{study_uid}.{series}.{i}", "reason": "initial", "header": 1200},
                    **facts_metadata("dicom", study_date=study_date, patient_birth_date=birth,
                                     patient_id=f"P{study // 3:07d}", study_uid=study_uid,
                                     series_uid=f"{study_uid}.{series}", modality=modality,
                                     sop_class_uid=sop_class)}
            group = f"dicom-{study_date:%Y%m}"
            slot = (tenant, group, rng.randrange(PACKS_PER_MONTH))
            pack = packs.get(slot)
            if pack is None:
                pack = packs[slot] = rng.randbytes(16)
            seq += 1
            oid = rng.randbytes(32)
            size = rng.randrange(400_000, 600_000)
            entry = ObjectEntry(STATE_LIVE, seq, size, ingested + i * 10**6, RecordLocation(
                pack, rng.randrange(1 << 26), 120), encode_metadata(meta), ((rng.randbytes(32), size),))
            rows.append((scoped_key(tenant, oid), entry.encode()))
            written += 1
        if len(rows) >= BATCH:
            flush()
    if rows:
        flush()

    def add_tenant_totals(txn: Any) -> None:  # what puts keep per tenant (stats, the tenant list)
        totals: dict[str, list[int]] = {}
        with index.read() as rtxn:
            for key, value in rtxn.cursor(db=index.db(DB_OBJECTS)):
                row = totals.setdefault(key[:key.index(b"\x00")].decode(), [0, 0])
                row[0] += 1
                row[1] += ObjectEntry.decode(value).size
        for tenant, (count, logical) in totals.items():
            txn.put(tenant.encode(), TenantTotals(count, logical, count, logical, logical).encode(),
                    db=index.db(DB_TENANTS))
    index.write(add_tenant_totals)

    def add_packs(txn: Any) -> None:
        # Every pack on the landing tier, as after a migration into the archive: the plan has to send
        # most of them down.
        for (tenant, group, _slot), pack in packs.items():
            txn.put(pack, PackEntry(PACK_SEALED, 64 << 20, 60 << 20, 130, now_ns, "ssd", tenant,
                                    group).encode(), db=index.db(DB_PACKS))
    index.write(add_packs)
    return len(packs)


def measure_plan(folder: Path, objects: int, runs: int, seed: int,
                 progress: Callable[[str], None]) -> list[ResultRow]:
    root = folder / "archive"
    shutil.rmtree(root, ignore_errors=True)
    dataset = f"{objects:,} objects (synthetic index)"
    try:
        with Archive.create(root, _config(folder)) as archive:
            started = time.perf_counter()
            packs = build_index(archive, objects, seed)
            progress(f"[{GROUP_NAME}] index of {objects:,} objects in {packs:,} packs built in "
                     f"{time.perf_counter() - started:.1f} s")
        scans: list[float] = []
        plans: list[float] = []
        singles: list[float] = []
        horizons: list[float] = []
        counts: dict[str, int] = {}
        with Archive.open(root, readonly=True) as archive:
            policy = archive.lifecycle.policy
            for run in range(runs):
                t0 = time.perf_counter()
                n = sum(1 for _ in archive.scan_objects())
                scans.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                plan = make_plan(archive, policy)
                plans.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                make_plan(archive, policy, workers=1)
                singles.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ahead = make_plan(archive, policy, horizon_days=30)
                horizons.append(time.perf_counter() - t0)
                counts = {"objects": n, "moves": len(plan.moves), "expiries": len(plan.expiries),
                          "upcoming_days": len(ahead.upcoming)}
                progress(f"  run {run + 1}: scan {scans[-1]:.2f} s, plan {plans[-1]:.2f} s, in one process "
                         f"{singles[-1]:.2f} s, plan --days 30 {horizons[-1]:.2f} s ({counts})")
        scan, plan_s, horizon_s = median(scans), median(plans), median(horizons)
        met = plan_s < TARGET_S
        return [
            ResultRow(group=GROUP_NAME, dataset=dataset, name="lifecycle plan (make_plan), now",
                      value=plan_s, unit="s",
                      note=f"{counts.get('moves', 0):,} pack moves, {counts.get('expiries', 0):,} expiries; "
                           f"floor: scan_objects alone {scan:.2f} s ({plan_s / scan:.1f}x); "
                           + target_note(met, f"< {TARGET_S:.0f} s at 1M objects"),
                      details={"runs": plans, "scan_s": scans, "counts": counts, "met": met}),
            ResultRow(group=GROUP_NAME, dataset=dataset, name="lifecycle plan, in one process (workers=1)",
                      value=median(singles), unit="s", note="the same plan without worker processes",
                      details={"runs": singles}),
            ResultRow(group=GROUP_NAME, dataset=dataset, name="lifecycle plan --days 30", value=horizon_s,
                      unit="s", note=f"{counts.get('upcoming_days', 0)} days with changes",
                      details={"runs": horizons}),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_lifecycle(context: BenchmarkContext) -> list[ResultRow]:
    settings = context.settings
    objects = QUICK_OBJECTS if settings.quick else FULL_OBJECTS
    return measure_plan(context.scratch_folder("lifecycle"), objects, settings.runs, settings.seed,
                        context.progress)


LIFECYCLE_GROUP = BenchmarkGroup(
    name=GROUP_NAME,
    description="lifecycle plan over 1M objects of a synthetic index (target < 10 s), with its scan floor",
    run=run_lifecycle,
)
