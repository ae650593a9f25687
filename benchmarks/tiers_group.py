"""The `tiers` benchmark group: moving packs between tiers, and reading one instance from each tier.

Issue 4, section 6. One archive of the CT set (0.5 MiB slices, stored raw so that pack bytes are the
slices' bytes; 64 MiB packs, several sealed) has three tiers: `ssd` (the landing directory), `disk`
(another directory) and `s3` (a bucket of a SeaweedFS that this group starts on loopback, its data in
the run's scratch folder). Each run builds a fresh archive (untimed) and then measures, in this order:

1. the latency of `get` of one instance on the landing tier (p50/p99 over random objects of the sealed
   packs, after a warm-up, through a read-only handle), beside a `pread` of the same bytes;
2. the limit: a plain copy of the same sealed pack files (`shutil.copyfile`, fsync of the file and of
   its folder), into a folder on the same disk;
3. `Archive.move_pack(pack, "disk", grace_s=0)` of every sealed pack: copy, read-back verify, index
   switch and, because the grace is 0, removal of the source (the "release"). Timing wrappers split the
   time: the target's `store` (which also reads the source), `check_sealed_copy` (the read-back), the
   source's `remove`; the rest is the index commits. A row without the release is given too;
4. the `get` latency on `disk`;
5. the S3 limits on the same pack files (now on `disk`): boto3 `upload_file` with a TransferConfig of
   the tier's part size (its default 10 threads, and 1 thread), and a `get_object` of each whole pack;
6. `move_pack(pack, "s3", grace_s=0)` of every pack, split the same way (store = read the disk file,
   multipart upload, HEAD; verify = HEAD, 8 MiB ranged GETs, xxh3-128);
7. the `get` latency on `s3` (with the S3 requests each `get` makes, counted by a botocore hook),
   beside one ranged GET of the same bytes with boto3.

Figures are medians over the runs; each move row also gives the paired ratio (the median of each run's
move over the limit measured just before it in the same run). Local reads come from the page cache.
SeaweedFS is reused from `tests/s3server.py` (so run from the repository root, as `python -m benchmarks`
is); it gets the test credentials, which the S3 tier reads from the environment (set for the group's
duration only). Nothing here changes the library.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from benchmarks.archive_timing import ingest_untimed, median, percentile
from benchmarks.harness import CT_DATASET, BenchmarkContext, BenchmarkGroup
from benchmarks.results import MIB, ResultRow
from mmarchive.archive import DEFAULT_TENANT, Archive
from mmarchive.config import ArchiveConfig, StoreConfig, TierConfig
from mmarchive.index.schema import (
    DB_CHUNKS,
    DB_OBJECTS,
    DB_PACKS,
    ChunkEntry,
    ObjectEntry,
    PackEntry,
    scoped_key,
)
from mmarchive.pack import transfer
from mmarchive.pack.format import RECORD_HEADER_LEN, pack_name
from mmarchive.tiers.local import LocalTier

if TYPE_CHECKING:  # boto3 is imported only when the group runs
    from mmarchive.tiers.s3 import S3Tier
    from tests.s3server import S3Server

GROUP_NAME = "tiers"
SSD, DISK, S3 = "ssd", "disk", "s3"
TIER_NAMES: Final = (SSD, DISK, S3)
FULL_PACK_SIZE: Final = 64 * 1024 * 1024
QUICK_PACK_SIZE: Final = 6 * 1024 * 1024
"""Above the quick part size, so that even the smoke run stores packs as multipart uploads."""
FULL_PART_SIZE: Final = 16 * 1024 * 1024
"""The S3 tier's default part size (`mmarchive.tiers.s3.DEFAULT_PART_SIZE`)."""
QUICK_PART_SIZE: Final = 5 * 1024 * 1024
FULL_LATENCY_GETS: Final = 300
QUICK_LATENCY_GETS: Final = 10
FULL_WARMUP_GETS: Final = 30
QUICK_WARMUP_GETS: Final = 3
BOTO3_THREADS: Final = 10
"""boto3's default `max_concurrency` of `upload_file`."""

_LABEL: Final = {SSD: "ssd (landing, local)", DISK: "disk (local)", S3: "s3 (SeaweedFS, loopback)"}


# -- timing --------------------------------------------------------------------------------------------


@dataclass
class MoveTiming:
    """One pass of `move_pack` over every sealed pack, with its time split by step."""

    seconds: float
    bytes: int
    packs: int
    steps: dict[str, float]
    """store (target's `store`, which reads the source), verify (`check_sealed_copy`), release (the
    source's `remove`), other (index commits, opening the source)."""
    cpu: dict[str, float]
    """CPU seconds used meanwhile by this process (every thread) and, where known, the S3 server."""

    @property
    def mib_s(self) -> float:
        return self.bytes / self.seconds / MIB

    def step_mib_s(self, *steps: str) -> float:
        return self.bytes / sum(self.steps[s] for s in steps) / MIB

    def to_json(self) -> dict[str, object]:
        return {"seconds": self.seconds, "bytes": self.bytes, "packs": self.packs, "steps": self.steps,
                "cpu_s": self.cpu}


class _StepClock:
    """Seconds spent inside wrapped callables, by step name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds.setdefault(step, 0.0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[step] += time.perf_counter() - started

        return timed


@contextmanager
def _instrumented(source: object, target: object, clock: _StepClock) -> Iterator[None]:
    """Time the target tier's `store` (or `copy_in`), the read-back check and the source's `remove`.

    The tiers get instance attributes shadowing their methods (deleted afterwards); the check is
    replaced in `mmarchive.pack.transfer`, whose `copy_pack` looks it up at call time.
    """
    original_check = transfer.check_sealed_copy
    # A local target stores from a local source by copy_in (copy_file_range): that is its store too.
    stores = [name for name in ("store", "copy_in") if hasattr(target, name)]
    for name in stores:
        setattr(target, name, clock.wrap("store", getattr(target, name)))
    setattr(source, "remove", clock.wrap("release", getattr(source, "remove")))  # noqa: B009, B010
    setattr(transfer, "check_sealed_copy", clock.wrap("verify", original_check))  # noqa: B010
    try:
        yield
    finally:
        setattr(transfer, "check_sealed_copy", original_check)  # noqa: B010
        for name in stores:
            delattr(target, name)
        delattr(source, "remove")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (Linux `/proc`), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CpuMeter:
    """CPU seconds used by this process and by another one (the S3 server) between start and stop."""

    def __init__(self, other_pid: int | None) -> None:
        self._pid = other_pid
        self._self = time.process_time()
        self._other = None if other_pid is None else process_cpu_seconds(other_pid)

    def stop(self) -> dict[str, float]:
        out = {"this_process": time.process_time() - self._self}
        if self._pid is not None and self._other is not None:
            now = process_cpu_seconds(self._pid)
            if now is not None:
                out["s3_server"] = now - self._other
        return out


def _move_all(archive: Archive, packs: Sequence[str], source: str, target: str,
              expected_bytes: int, server_pid: int | None) -> MoveTiming:
    """`move_pack(pack, target, grace_s=0)` of every pack, one after another, under the clock."""
    clock = _StepClock()
    with _instrumented(archive.tiers.get(source), archive.tiers.get(target), clock):
        gc.collect()
        cpu = _CpuMeter(server_pid)
        started = time.perf_counter()
        moved = sum(archive.move_pack(name, target, grace_s=0) for name in packs)
        seconds = time.perf_counter() - started
        used = cpu.stop()
    if moved != expected_bytes:
        raise RuntimeError(f"move_pack to {target} reported {moved} bytes, expected {expected_bytes}")
    on_target = {p.id for p in archive.packs(tier=target)}
    if not set(packs) <= on_target or archive.pack_moves():
        raise RuntimeError(f"after the moves to {target} some packs are elsewhere or moves are pending")
    steps = dict(clock.seconds)
    steps["other"] = max(0.0, seconds - sum(steps.values()))
    return MoveTiming(seconds, moved, len(packs), steps, used)


# -- limits ---------------------------------------------------------------------------------------------


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_files_fsync(paths: Sequence[Path], folder: Path) -> float:
    """Seconds to copy each file into `folder` (`shutil.copyfile`), fsync it and the folder."""
    folder.mkdir()
    gc.collect()
    started = time.perf_counter()
    for path in paths:
        copy = folder / path.name
        shutil.copyfile(path, copy)
        _fsync_path(copy)
        _fsync_path(folder, directory=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(folder)
    return seconds


def _transfer_config(part_size: int, threads: int) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size,
                          max_concurrency=threads, use_threads=threads > 1)


def _upload_files(client: Any, bucket: str, prefix: str, paths: Sequence[Path], config: Any,
                  server_pid: int | None) -> tuple[float, dict[str, float]]:
    """Seconds to `upload_file` each file to `{prefix}{file name}`, and the CPU seconds used."""
    gc.collect()
    cpu = _CpuMeter(server_pid)
    started = time.perf_counter()
    for path in paths:
        client.upload_file(str(path), bucket, prefix + path.name, Config=config)
    return time.perf_counter() - started, cpu.stop()


def _download_objects(client: Any, bucket: str, keys: Sequence[str], expected: int) -> float:
    """Seconds to `get_object` each whole object and read its body into memory."""
    gc.collect()
    got = 0
    started = time.perf_counter()
    for key in keys:
        got += len(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    seconds = time.perf_counter() - started
    if got != expected:
        raise RuntimeError(f"downloaded {got} bytes, expected {expected}")
    return seconds


def _delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


# -- latency --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Location:
    """Where the one chunk of an object is: its pack and the byte range of its payload."""

    pack: str
    offset: int
    length: int


def _locations(archive: Archive, ids: Sequence[str]) -> dict[str, _Location]:
    """Each object's payload location, read from the index (every object here is one chunk)."""
    out: dict[str, _Location] = {}
    db_o, db_c = archive.index.db(DB_OBJECTS), archive.index.db(DB_CHUNKS)
    with archive.index.read() as txn:
        for object_id in ids:
            entry = ObjectEntry.decode(txn.get(scoped_key(DEFAULT_TENANT, bytes.fromhex(object_id)),
                                               db=db_o))
            if len(entry.chunks) != 1:
                raise RuntimeError(f"object {object_id} has {len(entry.chunks)} chunks, expected one")
            (cid, size), = entry.chunks
            record = ChunkEntry.decode(txn.get(scoped_key(DEFAULT_TENANT, cid), db=db_c)).record
            if record.stored_len != size:
                raise RuntimeError(f"object {object_id} is not stored raw")
            out[object_id] = _Location(pack_name(record.pack), record.offset + RECORD_HEADER_LEN,
                                       record.stored_len)
    return out


def _pack_tiers(archive: Archive) -> dict[str, str]:
    with archive.index.read() as txn:
        return {pack_name(bytes(k)): PackEntry.decode(v).tier
                for k, v in txn.cursor(db=archive.index.db(DB_PACKS))}


@dataclass
class LatencyRun:
    """Sorted latencies (us) of `get` and of the raw read of the same bytes, in one run."""

    get_us: list[float]
    raw_us: list[float]
    requests_per_get: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "get_p50_us": percentile(self.get_us, 0.50), "get_p99_us": percentile(self.get_us, 0.99),
            "get_mean_us": sum(self.get_us) / len(self.get_us),
            "raw_p50_us": percentile(self.raw_us, 0.50), "raw_p99_us": percentile(self.raw_us, 0.99),
            "gets": len(self.get_us), "requests_per_get": self.requests_per_get,
        }


def _timed_us(fn: Callable[[str], int], picks: Sequence[str], warmup: Sequence[str],
              sizes: dict[str, int]) -> list[float]:
    for object_id in warmup:
        fn(object_id)
    gc.collect()
    clock = time.perf_counter_ns
    out: list[float] = []
    for object_id in picks:
        started = clock()
        got = fn(object_id)
        out.append((clock() - started) / 1000.0)
        if got != sizes[object_id]:
            raise RuntimeError(f"object {object_id}: read {got} bytes, expected {sizes[object_id]}")
    out.sort()
    return out


def _latency(path: Path, tier: str, picks: Sequence[str], warmup: Sequence[str],
             where: dict[str, _Location], s3: tuple[Any, str] | None) -> LatencyRun:
    """`get` of each pick through a read-only handle, then the raw read of the same payload bytes."""
    sizes = {oid: loc.length for oid, loc in where.items()}
    with Archive.open(path, readonly=True) as reader:
        tiers = _pack_tiers(reader)
        if any(tiers[where[oid].pack] != tier for oid in (*picks, *warmup)):
            raise RuntimeError(f"some picked objects are not on tier {tier}")
        backend = reader.tiers.get(tier)
        remote = cast("S3Tier", backend) if backend.kind == "s3" else None
        requests: Counter[str] = Counter()

        def count(model: Any, **_kwargs: Any) -> None:
            requests[str(model.name)] += 1

        def get(object_id: str) -> int:
            return len(reader.get(object_id))

        if remote is not None:
            get(warmup[0])  # builds the tier's client
            remote.client.meta.events.register("before-call.s3", count)
        get_us = _timed_us(get, picks, warmup, sizes)
        requests_per_get = {k: v / (len(picks) + len(warmup)) for k, v in requests.items()}
        if remote is not None:
            remote.client.meta.events.unregister("before-call.s3", count)
            if s3 is None:
                raise RuntimeError("an S3 tier needs a client for the raw reads")
            client, bucket = s3

            def raw(object_id: str) -> int:
                loc = where[object_id]
                resp = client.get_object(Bucket=bucket, Key=remote.key(loc.pack),
                                         Range=f"bytes={loc.offset}-{loc.offset + loc.length - 1}")
                return len(resp["Body"].read())

            raw_us = _timed_us(raw, picks, warmup, sizes)
        elif isinstance(backend, LocalTier):
            local: LocalTier = backend
            fds: dict[str, int] = {}
            try:
                for oid in (*picks, *warmup):
                    pack = where[oid].pack
                    if pack not in fds:
                        fds[pack] = os.open(local.path(pack), os.O_RDONLY)

                def pread(object_id: str) -> int:
                    loc = where[object_id]
                    return len(os.pread(fds[loc.pack], loc.length, loc.offset))

                raw_us = _timed_us(pread, picks, warmup, sizes)
            finally:
                for fd in fds.values():
                    os.close(fd)
        else:
            raise RuntimeError(f"tier {tier} is neither local nor S3")
    return LatencyRun(get_us, raw_us, requests_per_get)


# -- one run --------------------------------------------------------------------------------------------


@dataclass
class TiersRun:
    """Everything one run measured."""

    pack_bytes: int
    packs: int
    copy_s: float
    to_disk: MoveTiming
    upload_s: float
    upload_cpu: dict[str, float]
    upload_1t_s: float
    download_s: float
    to_s3: MoveTiming
    latency: dict[str, LatencyRun]

    def mib_s(self, seconds: float) -> float:
        return self.pack_bytes / seconds / MIB

    def to_json(self) -> dict[str, object]:
        return {
            "pack_bytes": self.pack_bytes, "packs": self.packs,
            "limit_copy_fsync_s": self.copy_s, "limit_upload_file_s": self.upload_s,
            "limit_upload_file_cpu_s": self.upload_cpu,
            "limit_upload_file_1thread_s": self.upload_1t_s, "limit_get_whole_s": self.download_s,
            "move_ssd_to_disk": self.to_disk.to_json(), "move_disk_to_s3": self.to_s3.to_json(),
            "latency": {t: lat.to_json() for t, lat in self.latency.items()},
        }


@dataclass(frozen=True)
class _Setup:
    """What stays the same across the runs of one group run."""

    server: S3Server
    client: Any
    bucket: str
    pack_size: int
    part_size: int
    gets: int
    warmup: int


def _config(folder: Path, setup: _Setup, prefix: str) -> ArchiveConfig:
    s3_options = {"bucket": setup.bucket, "prefix": prefix, "endpoint_url": setup.server.endpoint_url,
                  "region": setup.server.region, "part_size": setup.part_size}
    return ArchiveConfig(
        store=StoreConfig(compression="none", pack_size=setup.pack_size),
        tiers=(TierConfig(SSD, "local", str(folder / SSD)), TierConfig(DISK, "local", str(folder / DISK)),
               TierConfig(S3, "s3", "", options=s3_options)),
    )


def _local_tier(archive: Archive, name: str) -> LocalTier:
    tier = archive.tiers.get(name)
    if not isinstance(tier, LocalTier):
        raise RuntimeError(f"tier {name} is not local")
    return tier


def _one_run(context: BenchmarkContext, setup: _Setup, run: int) -> TiersRun:
    objects = context.dataset(CT_DATASET).objects
    folder = context.scratch_folder(f"tiers-run{run}")
    prefix = f"run{run}/"
    client, bucket = setup.client, setup.bucket
    pid = setup.server.process.pid
    say = context.progress
    try:
        path = folder / "archive"
        ids = ingest_untimed(path, objects, _config(folder, setup, prefix + "packs/"))
        with Archive.open(path) as archive:
            sealed = sorted((p for p in archive.packs(tier=SSD) if p.sealed), key=lambda p: p.id)
            if not sealed:
                raise RuntimeError("no sealed pack: give more CT slices (--ct-slices) than one pack holds")
            names = [p.id for p in sealed]
            total = sum(p.size for p in sealed)
            where = _locations(archive, ids)
            candidates = [oid for oid in ids if where[oid].pack in set(names)]
            chooser = random.Random(context.settings.seed + run)
            picks = [chooser.choice(candidates) for _ in range(setup.gets)]
            warmup = [chooser.choice(candidates) for _ in range(setup.warmup)]
            say(f"  run {run}: {len(names)} sealed packs, {total / MIB:,.1f} MiB, "
                f"{len(candidates)} objects in them")
            latency = {SSD: _latency(path, SSD, picks, warmup, where, None)}

            ssd_paths = [_local_tier(archive, SSD).path(n) for n in names]
            copy_s = _copy_files_fsync(ssd_paths, folder / "limit-copy")
            to_disk = _move_all(archive, names, SSD, DISK, total, None)
            say(f"    ssd -> disk: move_pack {to_disk.mib_s:,.0f} MiB/s, "
                f"copy + fsync {total / copy_s / MIB:,.0f} MiB/s")
            latency[DISK] = _latency(path, DISK, picks, warmup, where, None)

            disk_paths = [_local_tier(archive, DISK).path(n) for n in names]
            limit_prefix = prefix + "limit/"
            upload_s, upload_cpu = _upload_files(client, bucket, limit_prefix, disk_paths,
                                                 _transfer_config(setup.part_size, BOTO3_THREADS), pid)
            download_s = _download_objects(client, bucket, [limit_prefix + p.name for p in disk_paths],
                                           total)
            upload_1t_s, _cpu = _upload_files(client, bucket, prefix + "limit-1t/", disk_paths,
                                              _transfer_config(setup.part_size, 1), pid)
            to_s3 = _move_all(archive, names, DISK, S3, total, pid)
            say(f"    disk -> s3: move_pack {to_s3.mib_s:,.0f} MiB/s, upload_file "
                f"{total / upload_s / MIB:,.0f} MiB/s ({BOTO3_THREADS} threads), "
                f"{total / upload_1t_s / MIB:,.0f} MiB/s (1 thread), GET {total / download_s / MIB:,.0f}"
                " MiB/s")
            latency[S3] = _latency(path, S3, picks, warmup, where, (client, bucket))
            say("    get p50: " + ", ".join(
                f"{t} {percentile(lat.get_us, 0.5):,.0f} us (raw {percentile(lat.raw_us, 0.5):,.0f})"
                for t, lat in latency.items()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _delete_prefix(client, bucket, prefix)
    return TiersRun(total, len(names), copy_s, to_disk, upload_s, upload_cpu, upload_1t_s, download_s, to_s3,
                    latency)


# -- rows -----------------------------------------------------------------------------------------------


def _shares(timing: MoveTiming) -> str:
    return ", ".join(f"{step} {100 * s / timing.seconds:.0f}%" for step, s in timing.steps.items())


def _move_rows(runs: Sequence[TiersRun], part_mib: int) -> list[ResultRow]:
    first = runs[0]
    size = f"{first.packs} packs, {first.pack_bytes / MIB:,.1f} MiB"

    def med(values: Sequence[float]) -> float:
        return median(list(values))

    def paired(moves: Sequence[float], limits: Sequence[float]) -> float:
        return med([m / lim for m, lim in zip(moves, limits, strict=True)])

    copy = [r.mib_s(r.copy_s) for r in runs]
    upload = [r.mib_s(r.upload_s) for r in runs]
    upload_1t = [r.mib_s(r.upload_1t_s) for r in runs]
    download = [r.mib_s(r.download_s) for r in runs]
    up_down = [r.mib_s(r.upload_s + r.download_s) for r in runs]
    disk_all = [r.to_disk.mib_s for r in runs]
    disk_kept = [r.to_disk.step_mib_s("store", "verify", "other") for r in runs]
    disk_store = [r.to_disk.step_mib_s("store") for r in runs]
    s3_all = [r.to_s3.mib_s for r in runs]
    s3_store = [r.to_s3.step_mib_s("store") for r in runs]
    s3_verify = [r.to_s3.step_mib_s("verify") for r in runs]
    copy_label = "copy the pack files + fsync file and folder (shutil.copyfile)"
    upload_label = f"boto3 upload_file, {part_mib} MiB parts, {BOTO3_THREADS} threads"
    details: dict[str, object] = {"runs": [r.to_json() for r in runs]}
    mid_disk = sorted(runs, key=lambda r: r.to_disk.seconds)[len(runs) // 2]
    mid_s3 = sorted(runs, key=lambda r: r.to_s3.seconds)[len(runs) // 2]

    def cpu(used: dict[str, float]) -> str:
        return ", ".join(f"{who.replace('_', ' ')} {s:.1f}" for who, s in used.items())

    def row(name: str, values: Sequence[float], limit_name: str, limits: Sequence[float],
            note: str) -> ResultRow:
        return ResultRow(group=GROUP_NAME, dataset=CT_DATASET, name=name, value=med(values), unit="MiB/s",
                         limit_name=limit_name, limit_value=med(limits),
                         note=f"paired {paired(values, limits):.2f}" + (f"; {note}" if note else ""),
                         details=details)

    return [
        row("move_pack ssd -> disk, grace 0 (copy, verify, switch, release)", disk_all, copy_label, copy,
            f"{size}; time (median run): {_shares(mid_disk.to_disk)}; both directories on one disk"),
        row("move_pack ssd -> disk, without the release", disk_kept, copy_label, copy,
            "what a move with a grace period does before the source is removed"),
        row("move_pack ssd -> disk: store step only (read source, write, fsync, rename)", disk_store,
            copy_label, copy, "the copy inside the move, before its read-back"),
        row("move_pack disk -> s3, grace 0 (upload, verify, switch, release)", s3_all, upload_label,
            upload, f"{size}; time (median run): {_shares(mid_s3.to_s3)}; CPU s: {cpu(mid_s3.to_s3.cpu)}"
            f" (upload_file: {cpu(mid_s3.upload_cpu)})"),
        row("move_pack disk -> s3, grace 0", s3_all,
            f"boto3 upload_file ({BOTO3_THREADS} threads) then get_object of each whole pack",
            up_down, "a move uploads and reads the whole pack back"),
        row("move_pack disk -> s3, grace 0", s3_all, copy_label, copy, "plain local copy of the same files"),
        row("move_pack disk -> s3: store step only (read disk, multipart upload, HEAD)", s3_store,
            f"boto3 upload_file, {part_mib} MiB parts, 1 thread", upload_1t,
            "the tier uploads one part at a time"),
        row("move_pack disk -> s3: verify step only (HEAD, 8 MiB ranged GETs, xxh3-128)", s3_verify,
            "boto3 get_object of each whole pack, 1 stream", download, ""),
    ]


def _latency_rows(context: BenchmarkContext, runs: Sequence[TiersRun]) -> list[ResultRow]:
    xxh3 = context.limit(CT_DATASET, "hash_xxh3_64")
    blake3 = context.limit(CT_DATASET, "hash_blake3")
    verify_us = 1e6 / xxh3["items_per_s"] + 1e6 / blake3["items_per_s"]
    rows: list[ResultRow] = []
    for tier in TIER_NAMES:
        per_run = [r.latency[tier] for r in runs]
        raw_name = ("one ranged GET of the same bytes (boto3)" if tier == S3
                    else "pread of the same bytes (page cache)")
        requests = per_run[len(per_run) // 2].requests_per_get
        calls = (", requests per get: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(requests.items()))
                 if requests else "")
        details: dict[str, object] = {"runs": [lat.to_json() for lat in per_run],
                                      "verify_us_per_object": verify_us}
        for label, fraction in (("p50", 0.50), ("p99", 0.99)):
            value = median([percentile(lat.get_us, fraction) for lat in per_run])
            limit = median([percentile(lat.raw_us, fraction) for lat in per_run])
            mean = median([sum(lat.get_us) / len(lat.get_us) for lat in per_run])
            note = "ratio = times the limit"
            if label == "p50":
                note += (f"; mean {mean:,.0f} us; {len(per_run[0].get_us)} gets a run; xxh3 + BLAKE3 "
                         f"of one object alone {verify_us:,.0f} us{calls}")
            rows.append(ResultRow(
                group=GROUP_NAME, dataset=CT_DATASET,
                name=f"get of one 0.5 MiB instance, {_LABEL[tier]}, {label}", value=value, unit="us",
                limit_name=f"{raw_name}, {label}", limit_value=limit, note=note, details=details,
            ))
    return rows


# -- the group ------------------------------------------------------------------------------------------


@contextmanager
def _test_credentials(server: S3Server) -> Iterator[None]:
    """The throw-away server's credentials in the environment (where the S3 tier looks), then restored."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
             "AWS_PROFILE", "AWS_DEFAULT_PROFILE")
    saved = {name: os.environ.pop(name, None) for name in names}
    os.environ["AWS_ACCESS_KEY_ID"] = server.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = server.secret_key
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _limit_client(server: S3Server) -> Any:
    """A client configured like the S3 tier's own (path addressing, standard retries, 32 connections)."""
    from botocore.config import Config

    return server.session().client(
        "s3", endpoint_url=server.endpoint_url, region_name=server.region,
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 5},
                      connect_timeout=10, read_timeout=60, max_pool_connections=32))


def run_tiers(context: BenchmarkContext) -> list[ResultRow]:
    """Pack moves ssd -> disk -> s3 and one-instance get latency on each tier, beside raw limits."""
    try:
        from tests.s3server import seaweedfs
    except ImportError as e:  # pragma: no cover - run outside the repository root
        raise RuntimeError("the tiers group starts SeaweedFS through tests/s3server.py: run "
                           "`python -m benchmarks` from the repository root") from e

    quick = context.settings.quick
    objects = context.dataset(CT_DATASET).objects
    pack_size = QUICK_PACK_SIZE if quick else FULL_PACK_SIZE
    part_size = QUICK_PART_SIZE if quick else FULL_PART_SIZE
    context.progress(f"[tiers] {len(objects)} CT slices raw, {pack_size // 1024 // 1024} MiB packs, "
                     f"S3 parts of {part_size // 1024 // 1024} MiB; starting SeaweedFS")
    runs: list[TiersRun] = []
    with seaweedfs(context.scratch_folder("weed")) as server, _test_credentials(server):
        context.progress(f"  SeaweedFS answered after {server.startup_seconds:.1f} s at "
                         f"{server.endpoint_url}")
        client = _limit_client(server)
        try:
            setup = _Setup(server, client, server.new_bucket("tiers"), pack_size, part_size,
                           QUICK_LATENCY_GETS if quick else FULL_LATENCY_GETS,
                           QUICK_WARMUP_GETS if quick else FULL_WARMUP_GETS)
            for run in range(1, context.settings.runs + 1):
                runs.append(_one_run(context, setup, run))
        finally:
            client.close()
    return [*_move_rows(runs, part_size // 1024 // 1024), *_latency_rows(context, runs)]


TIERS_GROUP = BenchmarkGroup(
    name=GROUP_NAME,
    description="move_pack ssd -> disk -> S3 (SeaweedFS) MiB/s and one-instance get latency per tier",
    run=run_tiers,
)
