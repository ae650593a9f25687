"""The lifecycle runner: turn the policy, the holds and the tiers' capacity into a plan, and carry it out.

:func:`make_plan` reads every live object once (:meth:`Archive.scan_object_rows`), asks the policy what
it decides for each, and gathers the answers per pack, since packs are what move: a pack goes to the coldest
tier that every object in it is due for (an object that must stay keeps its pack where it is), never to a
hotter one. Objects whose retention has ended under an expiry rule are planned for deletion unless a legal
hold keeps them. Then capacity: a tier above its high-water mark sends its least recently used packs down
one tier until it is back under. Packs that gc would repack are listed, and replicas to make or drop. The
policy sees ingest and last-access times by their UTC day, taken at the day's end (an object never looks
older than it is). With ``horizon_days`` the plan also lists, day by day, what the policy will make due
over that horizon. A plan is a plain record; printing it is the CLI's business.

:func:`run_plan` carries a fresh plan out: it first finishes or rolls back moves a crash interrupted, then
expires (each deletion re-checked against holds and retention by the archive and audited), then moves packs
(copy, verify, switch; rate-limited; each audited), then makes missing replicas and drops stale ones, then
repacks with gc. Every step is idempotent, so a run that stopped is simply run again.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any, NamedTuple

from mmarchive.errors import (
    ArchiveError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RetentionError,
    StorageError,
)
from mmarchive.index.schema import OBJECT_HEAD, STATE_LIVE
from mmarchive.lifecycle.audit import AuditEntry, current_user
from mmarchive.lifecycle.facts import FactsReader
from mmarchive.lifecycle.holds import HoldRegistry
from mmarchive.lifecycle.policy import FOREVER, Change, Decision, Policy, TierOrder
from mmarchive.maintenance.replicas import add_replica, all_replicas, drop_replica
from mmarchive.pack.format import pack_name

if TYPE_CHECKING:
    from mmarchive.archive import Archive

log = logging.getLogger(__name__)
_EPOCH = date(1970, 1, 1)
_DAY_NS = 86_400 * 10**9
#: Distinct (facts, tenant, tier, ingest day, access day) decisions kept while planning.
_MEMO_LIMIT = 1 << 20
#: From this many objects a plan shares its pass over the objects table between two processes.
_PARALLEL_OBJECTS = 200_000


@dataclass(frozen=True)
class PlannedMove:
    pack: str
    tenant: str
    group: str
    source: str
    target: str
    bytes: int
    objects: int
    #: ``policy`` (a rule made every object of the pack due) or ``capacity`` (its tier is too full).
    cause: str
    #: The rule (policy moves) or the tier over its high-water mark (capacity moves).
    rule: str
    #: The pack is still open: the run seals it first.
    seal: bool = False


class PlannedExpiry(NamedTuple):
    """An object to delete (a named tuple: a plan may list hundreds of thousands)."""

    tenant: str
    object_id: str
    size: int
    rule: str
    retained_until: str | None


@dataclass(frozen=True)
class HeldExpiry:
    """An object the policy would expire, kept by legal holds."""

    tenant: str
    object_id: str
    size: int
    holds: tuple[str, ...]


@dataclass(frozen=True)
class PlannedReplica:
    """A second copy to make (``drop`` False) or to remove (``drop`` True) on ``tier``."""

    pack: str
    tier: str
    bytes: int
    drop: bool = False


@dataclass(frozen=True)
class PlannedRepack:
    pack: str
    tier: str
    bytes: int
    live_bytes: int


@dataclass
class UpcomingDay:
    """What the policy makes due on one day of the horizon (objects, bytes)."""

    day: str
    move_objects: int = 0
    move_bytes: int = 0
    expire_objects: int = 0
    expire_bytes: int = 0


@dataclass
class Plan:
    now: datetime
    horizon_days: int
    policy: dict[str, Any]
    objects: int = 0
    moves: list[PlannedMove] = field(default_factory=list)
    expiries: list[PlannedExpiry] = field(default_factory=list)
    held: list[HeldExpiry] = field(default_factory=list)
    repacks: list[PlannedRepack] = field(default_factory=list)
    replicas: list[PlannedReplica] = field(default_factory=list)
    #: Pack bytes per tier now, and once the plan's moves are done (expired data is reclaimed by gc).
    tiers_before: dict[str, int] = field(default_factory=dict)
    tiers_after: dict[str, int] = field(default_factory=dict)
    #: Tiers above their high-water mark after the plan (nothing colder to move to, or nothing eligible).
    over_capacity: list[str] = field(default_factory=list)
    upcoming: list[UpcomingDay] = field(default_factory=list)
    #: Moves a crash left unfinished (the run finishes or rolls them back first).
    unfinished_moves: int = 0

    @property
    def move_bytes(self) -> int:
        return sum(m.bytes for m in self.moves)

    @property
    def expire_bytes(self) -> int:
        return sum(e.size for e in self.expiries)

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(), "horizon_days": self.horizon_days, "policy": self.policy,
            "objects": self.objects, "unfinished_moves": self.unfinished_moves,
            "moves": [asdict(m) for m in self.moves], "expiries": [e._asdict() for e in self.expiries],
            "held": [asdict(h) for h in self.held], "repacks": [asdict(r) for r in self.repacks],
            "replicas": [asdict(r) for r in self.replicas],
            "tiers": [{"tier": t, "bytes_before": self.tiers_before.get(t, 0),
                       "bytes_after": self.tiers_after.get(t, 0)} for t in self.tiers_before],
            "over_capacity": self.over_capacity,
            "upcoming": [asdict(u) for u in self.upcoming],
            "totals": {"move_packs": len(self.moves), "move_bytes": self.move_bytes,
                       "expire_objects": len(self.expiries), "expire_bytes": self.expire_bytes,
                       "held_objects": len(self.held), "repack_packs": len(self.repacks),
                       "replicas_to_make": sum(not r.drop for r in self.replicas),
                       "replicas_to_drop": sum(r.drop for r in self.replicas)},
        }


@dataclass
class _PackState:
    tenant: str
    group: str
    tier: str
    size: int
    live_bytes: int
    sealed: bool
    objects: int = 0
    #: Rank of the coldest tier every counted object of the pack is due for.
    target_rank: int = 1 << 30
    target_rule: str = ""
    last_use_day: int = 0


@dataclass
class _ObjectScan:
    """What a pass over (a key range of) the objects table found; passes over disjoint ranges merge."""

    objects: int = 0
    #: pack id -> [objects counted, rank of the coldest tier all are due for, its rule, last use day]
    per_pack: dict[bytes, list[Any]] = field(default_factory=dict)
    expiries: list[PlannedExpiry] = field(default_factory=list)
    held: list[HeldExpiry] = field(default_factory=list)
    #: day -> [objects to move, their bytes, objects to expire, their bytes]
    upcoming: dict[date, list[int]] = field(default_factory=dict)

    def merge(self, other: _ObjectScan) -> None:
        self.objects += other.objects
        self.expiries += other.expiries
        self.held += other.held
        for pid, row in other.per_pack.items():
            mine = self.per_pack.get(pid)
            if mine is None:
                self.per_pack[pid] = row
                continue
            mine[0] += row[0]
            if row[1] < mine[1]:
                mine[1], mine[2] = row[1], row[2]
            mine[3] = max(mine[3], row[3])
        for day, counts in other.upcoming.items():
            mine_counts = self.upcoming.setdefault(day, [0, 0, 0, 0])
            for i, n in enumerate(counts):
                mine_counts[i] += n


def _key_ranges(tenants: list[str], part: int, parts: int) -> list[tuple[bytes, bytes]]:
    """Worker ``part``'s share of the objects table: a slice of every tenant's object ids."""
    lo, hi = 256 * part // parts, 256 * (part + 1) // parts
    out = []
    for tenant in tenants:
        prefix = tenant.encode() + b"\x00"
        stop = prefix + bytes([hi]) if hi < 256 else tenant.encode() + b"\x01"
        out.append((prefix + bytes([lo]), stop))
    return out


def scan_in_worker(path: str, policy_data: dict[str, Any], source: str, now: datetime, horizon_days: int,
                   pack_tiers: dict[bytes, str], ranges: list[tuple[bytes, bytes]]) -> _ObjectScan:
    """One worker process's share of a plan, on its own read-only handle on the archive."""
    from mmarchive.archive import Archive

    policy = Policy.from_dict(policy_data, source=source)
    with Archive.open(path, readonly=True) as archive:
        return _scan(archive, archive.lifecycle.holds, policy, now, horizon_days, pack_tiers, ranges)


def _run_workers(jobs: list[tuple[Any, ...]]) -> list[_ObjectScan]:
    """Run :func:`scan_in_worker` for each job in its own fresh interpreter, all at once.

    Plain child processes (``python -m mmarchive.lifecycle.planworker``, arguments and result pickled
    over pipes) rather than multiprocessing: a library must not fork a process that may run threads,
    nor make the embedding program's main module importable twice, as multiprocessing's spawn does.
    """
    procs = []
    for job in jobs:
        errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after the child has ended)
        proc = subprocess.Popen([sys.executable, "-m", "mmarchive.lifecycle.planworker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        proc.stdin.close()
        procs.append((proc, errors))
    results: list[_ObjectScan] = []
    failure = ""
    for proc, errors in procs:
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        proc.wait()
        errors.seek(0)
        err = errors.read().decode(errors="replace").strip()
        errors.close()
        if proc.returncode != 0 or not out:
            failure = failure or (err.splitlines() or [f"exit status {proc.returncode}"])[-1]
            continue
        result = pickle.loads(out)
        if isinstance(result, ArchiveError):
            raise result
        results.append(result)
    if failure:
        raise StorageError(f"a lifecycle plan worker process failed ({failure}); plan again with "
                           "workers=1 to plan in one process")
    return results


def _scan(archive: Archive, holds: HoldRegistry, policy: Policy, now: datetime, horizon_days: int,
          pack_tiers: dict[bytes, str], ranges: list[tuple[bytes, bytes]] | None) -> _ObjectScan:
    """Decide for every live object (of ``ranges`` of keys, or all): per-pack targets, expiries, holds."""
    out = _ObjectScan()
    order = TierOrder(archive.tiers.names)
    rank = order.rank
    holds.refresh()
    held_tenants = {h.tenant for h in holds.active()}
    reader = FactsReader()
    per_pack = out.per_pack
    upcoming = out.upcoming
    # Objects of one series share their facts, and the policy sees ingest and access times by the UTC
    # day (the end of the day: an object never looks older than it is), so a decision is made once per
    # (facts, tenant, tier, ingest day, access day) and reused for the series' other objects.
    memo: dict[tuple[int, bytes, str, int, int], tuple[Decision, int, tuple[Change, ...]]] = {}
    day_end: dict[int, datetime] = {}

    def end_of(day: int) -> datetime:
        t = day_end.get(day)
        if t is None:
            t = day_end[day] = datetime.combine(_EPOCH + timedelta(days=day), dtime.max, UTC)
        return t

    live = STATE_LIVE
    landing = archive.tier.name
    spans: list[tuple[bytes, bytes | None]] = list(ranges) if ranges is not None else [(b"", None)]
    pages = (page for start, stop in spans for page in archive.scan_object_rows(start=start, stop=stop))
    objects = 0
    unpack = OBJECT_HEAD.unpack_from
    head = OBJECT_HEAD.size
    partial_in = reader.partial_in
    for page in pages:
        for key, value, raw_day in page:
            status, _seq, size, created_ns, pack_id, _off, _len, _chunks, meta_len = unpack(value)
            if status != live:
                continue
            objects += 1
            tier = pack_tiers.get(pack_id, landing)
            part = partial_in(value, head, head + meta_len)
            ingest_day = created_ns // _DAY_NS
            access_day = int.from_bytes(raw_day, "little") if raw_day is not None else -1
            cut = key.index(b"\x00")
            tenant_raw = key[:cut]
            memo_key = (id(part), tenant_raw, tier, ingest_day, access_day)
            known = memo.get(memo_key)
            if known is None:
                facts = reader.facts_for(part, tenant_raw.decode(), key[cut + 1:].hex(), size,
                                         end_of(ingest_day), tier,
                                         end_of(access_day) if access_day >= 0 else None)
                decision = policy.decide(facts, now)
                target_rank = rank(decision.move_from(tier, order) or tier)
                changes = policy.next_changes(facts, now, horizon_days) if horizon_days > 0 else ()
                if len(memo) >= _MEMO_LIMIT:
                    memo.clear()
                known = memo[memo_key] = (decision, target_rank, changes)
            decision, target_rank, changes = known
            if decision.may_expire:
                tenant, oid = tenant_raw.decode(), key[cut + 1:].hex()
                held = []
                if tenant in held_tenants:
                    held = holds.holds_for(reader.facts_for(
                        part, tenant, oid, size, end_of(ingest_day), tier,
                        end_of(access_day) if access_day >= 0 else None))
                if not held:
                    until = decision.retain_until
                    out.expiries.append(PlannedExpiry(
                        tenant, oid, size, decision.expire_rule or "",
                        until.isoformat() if until is not None and until != FOREVER else None))
                    continue  # an object about to go does not keep its pack anywhere
                out.held.append(HeldExpiry(tenant, oid, size, tuple(h.id for h in held)))
            if pack_id in pack_tiers:
                used = access_day if access_day >= 0 else ingest_day
                row = per_pack.get(pack_id)
                if row is None:
                    per_pack[pack_id] = [1, target_rank, decision.tier_rule or "", used]
                else:
                    row[0] += 1
                    if target_rank < row[1]:
                        row[1], row[2] = target_rank, decision.tier_rule or ""
                    if used > row[3]:
                        row[3] = used
            for change in changes:
                counts = upcoming.setdefault(change.at.date(), [0, 0, 0, 0])
                if change.after.may_expire and not change.before.may_expire:
                    counts[2] += 1
                    counts[3] += size
                elif change.after.tier != change.before.tier and change.after.tier is not None:
                    counts[0] += 1
                    counts[1] += size
    out.objects = objects
    return out


def make_plan(archive: Archive, policy: Policy, *, now: datetime | None = None, horizon_days: int = 0,
              repack_below: float = 0.5, workers: int | None = None) -> Plan:
    """What a lifecycle run would do now (and, with ``horizon_days``, what becomes due after).

    ``workers`` processes share the pass over the objects table (default: two on a machine with two
    cores or more once the archive holds 200,000 objects, else one, in this process).
    """
    now = now or datetime.now(UTC)
    order = TierOrder(archive.tiers.names)
    plan = Plan(now, horizon_days, policy.provenance())
    busy = {m.pack for m in archive.pack_moves()}
    plan.unfinished_moves = len(busy)
    packs: dict[bytes, _PackState] = {}
    for p in archive.packs():
        pid = bytes.fromhex(p.id)
        packs[pid] = _PackState(p.tenant, p.group, p.tier, p.size, p.live_bytes, p.sealed)
        plan.tiers_before[p.tier] = plan.tiers_before.get(p.tier, 0) + p.size
    for name in order.names:
        plan.tiers_before.setdefault(name, 0)
    pack_tiers = {pid: st.tier for pid, st in packs.items()}
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 and archive.stats().objects >= _PARALLEL_OBJECTS else 1
    if workers <= 1:
        scan = _scan(archive, archive.lifecycle.holds, policy, now, horizon_days, pack_tiers, None)
    else:
        scan = _ObjectScan()
        tenants = sorted(set(archive.tenants()) | set(archive.object_tenants()))
        path = str(archive.path.resolve())
        jobs = [(path, policy.to_dict(), policy.source, now, horizon_days, pack_tiers,
                 _key_ranges(tenants, i, workers)) for i in range(workers)]
        try:
            for part in _run_workers(jobs):
                scan.merge(part)
        except (OSError, StorageError) as e:  # no Python to start here (an embedding host): one process
            log.warning("planning in one process: the plan's worker processes failed (%s)", e)
            scan = _scan(archive, archive.lifecycle.holds, policy, now, horizon_days, pack_tiers, None)
    plan.objects = scan.objects
    plan.expiries, plan.held = scan.expiries, scan.held
    for pid, (count, target_rank, target_rule, last_use) in scan.per_pack.items():
        st = packs.get(pid)
        if st is not None:
            st.objects, st.target_rank, st.target_rule, st.last_use_day = (
                count, target_rank, target_rule, last_use)
    upcoming = {d: UpcomingDay(d.isoformat(), *counts) for d, counts in scan.upcoming.items()}
    plan.upcoming = [upcoming[d] for d in sorted(upcoming)]

    after = dict(plan.tiers_before)
    planned: set[bytes] = set()
    for pid, st in packs.items():
        name = pack_name(pid)
        if st.objects == 0 or name in busy or st.target_rank >= 1 << 30:
            continue
        target = order.names[st.target_rank]
        if order.is_colder(target, st.tier):
            plan.moves.append(PlannedMove(name, st.tenant, st.group, st.tier, target, st.size, st.objects,
                                          "policy", st.target_rule, seal=not st.sealed))
            planned.add(pid)
            after[st.tier] -= st.size
            after[target] = after.get(target, 0) + st.size

    # Capacity: a tier over its high-water mark sends its least recently used packs one tier down.
    for i, tier_name in enumerate(order.names[:-1]):
        cfg = archive.tiers.config(tier_name)
        if not cfg.capacity:
            continue
        limit = cfg.high_water * cfg.capacity
        if after[tier_name] <= limit:
            continue
        down = order.names[i + 1]
        candidates = sorted(((st.last_use_day, pid) for pid, st in packs.items()
                             if st.tier == tier_name and st.sealed and pid not in planned
                             and pack_name(pid) not in busy), key=lambda c: c[0])
        for _day, pid in candidates:
            if after[tier_name] <= limit:
                break
            st = packs[pid]
            plan.moves.append(PlannedMove(pack_name(pid), st.tenant, st.group, tier_name, down, st.size,
                                          st.objects, "capacity", tier_name))
            planned.add(pid)
            st.tier = down  # a pack moved down may push the next tier over in turn
            after[tier_name] -= st.size
            after[down] = after.get(down, 0) + st.size
    for name in order.names:
        cfg = archive.tiers.config(name)
        if cfg.capacity and after.get(name, 0) > cfg.high_water * cfg.capacity:
            plan.over_capacity.append(name)
    plan.tiers_after = after

    for pid, st in packs.items():
        if st.sealed and st.size and st.live_bytes < repack_below * st.size and pid not in planned:
            plan.repacks.append(PlannedRepack(pack_name(pid), st.tier, st.size, st.live_bytes))

    # Replicas: every sealed pack keeps a copy on its (final) tier's replica tier, and no other.
    final = {pid: st.tier for pid, st in packs.items()}  # st.tier of capacity moves is already final
    for m in plan.moves:
        final[bytes.fromhex(m.pack)] = m.target
    existing = all_replicas(archive)
    for pid, st in packs.items():
        if not st.sealed and pid not in planned:
            continue
        wanted = archive.tiers.config(final[pid]).replica
        have = existing.get(pid, {})
        if wanted and wanted not in have and pack_name(pid) not in busy:
            plan.replicas.append(PlannedReplica(pack_name(pid), wanted, st.size))
        for tier in sorted(have):
            if tier != wanted and tier != final[pid]:
                plan.replicas.append(PlannedReplica(pack_name(pid), tier, st.size, drop=True))
    for pid, have in existing.items():
        if pid not in packs:  # the pack is gone (gc): its replicas go too
            plan.replicas += [PlannedReplica(pack_name(pid), tier, 0, drop=True) for tier in sorted(have)]
    return plan


@dataclass
class RunReport:
    moves_finished: dict[str, int] = field(default_factory=dict)
    expired: int = 0
    expired_bytes: int = 0
    refused: list[str] = field(default_factory=list)
    moved: int = 0
    moved_bytes: int = 0
    failed: list[str] = field(default_factory=list)
    replicated: int = 0
    replicated_bytes: int = 0
    replicas_dropped: int = 0
    repacked: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: ``progress(done, total, note)`` over the run's steps (expiries, then moves, then gc).
Progress = Callable[[int, int, str], None]


def run_plan(archive: Archive, plan: Plan, *, rate_bytes_s: float | None = None,
             actor: str | None = None, progress: Progress | None = None, repack_below: float = 0.5,
             sleep: Callable[[float], None] = time.sleep) -> RunReport:
    """Carry out ``plan`` (made just before by :func:`make_plan`); see the module text for the order.

    ``rate_bytes_s`` caps the average copy rate of moves. Failures of single moves (an unreachable tier)
    are reported and the run goes on; a rerun picks them up.
    """
    started = time.monotonic()
    report = RunReport()
    who = actor or current_user()
    finished = archive.finish_moves()
    report.moves_finished = {"rolled_back": finished.rolled_back, "released": finished.released,
                             "waiting": finished.waiting}
    audit = archive.lifecycle.audit
    total = len(plan.expiries) + len(plan.moves) + len(plan.replicas) + (1 if plan.repacks else 0)
    done = 0

    def step(note: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, note)

    for exp in plan.expiries:
        reason = (f"retention ended ({exp.retained_until})" if exp.retained_until else "retention ended")
        try:
            archive.delete(exp.object_id, tenant=exp.tenant, actor=f"rule:{exp.rule}",
                           reason=f"{reason}; expired by rule {exp.rule!r} (run by {who})",
                           audit_action="object.expire")
            report.expired += 1
            report.expired_bytes += exp.size
        except RetentionError as e:  # a hold added since the plan was made (audited by the archive)
            report.refused.append(str(e))
        except NotFoundError:
            pass  # deleted meanwhile
        step(f"expire {exp.object_id[:12]}")

    if any(m.seal for m in plan.moves):
        archive.seal_packs()
    copied = 0
    copy_started = time.monotonic()
    for move in plan.moves:
        try:
            n = archive.move_pack(move.pack, move.target)
        except (StorageError, IntegrityError) as e:  # one pack's failure does not stop the run
            report.failed.append(f"move of pack {move.pack} to {move.target}: {e}")
            step(f"move {move.pack[:12]} failed")
            continue
        report.moved += 1
        report.moved_bytes += n
        why = (f"every object is due for {move.target} under rule {move.rule!r}" if move.cause == "policy"
               else f"tier {move.rule} is above its high-water mark; least recently used")
        audit.append(AuditEntry("pack.move", f"rule:{move.rule}" if move.cause == "policy" else "capacity",
                                move.pack, why, move.tenant,
                                {"from": move.source, "to": move.target, "bytes": n,
                                 "objects": move.objects, "run_by": who}))
        copied += n
        if rate_bytes_s:
            ahead = copied / rate_bytes_s - (time.monotonic() - copy_started)
            if ahead > 0:
                sleep(ahead)
        step(f"move {move.pack[:12]} -> {move.target}")

    # New copies first, stale ones after: a pack never has fewer copies than it should.
    for rep in sorted(plan.replicas, key=lambda r: r.drop):
        pack_id = bytes.fromhex(rep.pack)
        try:
            if rep.drop:
                drop_replica(archive, pack_id, rep.tier)
                report.replicas_dropped += 1
            else:
                n = add_replica(archive, pack_id, rep.tier)
                report.replicated += 1
                report.replicated_bytes += n
        except (StorageError, IntegrityError, NotFoundError, InvalidInputError) as e:
            report.failed.append(f"{'dropping' if rep.drop else 'making'} the replica of pack "
                                 f"{rep.pack} on {rep.tier}: {e}")
            step(f"replica {rep.pack[:12]} failed")
            continue
        audit.append(AuditEntry("pack.replica.drop" if rep.drop else "pack.replicate", "replica",
                                rep.pack, f"tier {rep.tier} " + ("is no longer the replica tier of this "
                                "pack's tier" if rep.drop else "keeps the second copy of this pack"),
                                None, {"tier": rep.tier, "run_by": who}))
        step(f"replica {rep.pack[:12]} {'dropped from' if rep.drop else 'to'} {rep.tier}")

    if plan.repacks:
        gc = archive.gc(repack_below=repack_below)
        report.repacked = gc.packs_repacked + gc.packs_deleted
        step("gc")
    report.seconds = time.monotonic() - started
    return report
