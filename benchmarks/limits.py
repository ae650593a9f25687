"""Raw machine limits that an archive ingest can at best approach, measured on given bytes.

This module owns the reference measurements the archive benchmarks are compared to: writing
the objects sequentially into one file and fsyncing it, writing one file per object with an
fsync each, hashing every object (xxh3_64, BLAKE3 single-threaded, SHA-256), byte-shuffling
16-bit data, and zstd compression and decompression of every object, plain or byte-shuffled,
on one thread or several (one compressor per thread; zstandard releases the GIL). Each
measurement is a function that takes the objects, repeats the work `runs` times and returns a
plain dict (`LimitMeasurement`) describing the median run: seconds, bytes/s, items/s and, for
compression, the ratio. `limit_plan` lists the whole set under stable keys so that a harness
can run them all or only the ones it needs. Nothing here knows about the harness.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NotRequired, TypedDict

import blake3
import numpy as np
import numpy.typing as npt
import xxhash
import zstandard

HashAlgorithm = Literal["xxh3_64", "blake3", "sha256"]
HASH_ALGORITHMS: Final[tuple[HashAlgorithm, ...]] = ("xxh3_64", "blake3", "sha256")

_WRITE_BUFFER_BYTES: Final = 1 << 20
DEFAULT_MIN_SECONDS: Final = 0.25
"""CPU-only measurements repeat whole passes within a run until this long has passed."""


class LimitMeasurement(TypedDict):
    """One limit: the median of `runs` repetitions of the same work (a plain dict).

    `bytes`, `items` and `seconds` are those of the median run (by throughput); CPU-only
    measurements may have made several passes over the objects in it, so `bytes` can be a
    multiple of the data set's size. Rates are per second of wall time.
    """

    key: str
    label: str
    bytes: int
    items: int
    seconds: float
    bytes_per_s: float
    items_per_s: float
    runs: int
    run_seconds: list[float]
    run_bytes_per_s: list[float]
    threads: NotRequired[int]
    level: NotRequired[int]
    compression_ratio: NotRequired[float]
    compressed_bytes: NotRequired[int]
    items_available: NotRequired[int]


@dataclass(frozen=True)
class _RunSample:
    """What one timed repetition did."""

    seconds: float
    bytes: int
    items: int
    compressed_bytes: int = 0


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector from firing inside a timed section."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _summarise(key: str, label: str, samples: Sequence[_RunSample]) -> LimitMeasurement:
    """Report the run with the median throughput (the lower middle one for even counts)."""
    if not samples:
        raise ValueError("no runs")
    by_rate = sorted(samples, key=lambda s: s.bytes / max(s.seconds, 1e-12))
    median = by_rate[(len(by_rate) - 1) // 2]
    seconds = max(median.seconds, 1e-12)
    return LimitMeasurement(
        key=key,
        label=label,
        bytes=median.bytes,
        items=median.items,
        seconds=median.seconds,
        bytes_per_s=median.bytes / seconds,
        items_per_s=median.items / seconds,
        runs=len(samples),
        run_seconds=[s.seconds for s in samples],
        run_bytes_per_s=[s.bytes / max(s.seconds, 1e-12) for s in samples],
    )


def _timed_passes(
    one_pass: Callable[[], None], total: int, items: int, min_seconds: float
) -> _RunSample:
    """Time whole passes over the objects, repeated until `min_seconds` have gone by.

    Fast CPU measurements (a hash over a few MiB) would otherwise time a few milliseconds,
    which a busy machine turns into noise.
    """
    passes = 0
    with _collector_paused():
        started = time.perf_counter()
        while True:
            one_pass()
            passes += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
    return _RunSample(elapsed, total * passes, items * passes)


def _check_runs(runs: int) -> None:
    if runs < 1:
        raise ValueError("runs must be at least 1")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- storage -------------------------------------------------------------------------------


def sequential_write_fsync(
    objects: Sequence[bytes], directory: Path, *, runs: int = 3
) -> LimitMeasurement:
    """Append every object to one new file (1 MiB buffer), fsync it and its directory.

    Each run writes a fresh file inside a scratch folder under `directory` (which should be
    on the filesystem the archive will use); files are removed outside the timed section.
    """
    _check_runs(runs)
    total = sum(len(o) for o in objects)
    samples: list[_RunSample] = []
    scratch = Path(tempfile.mkdtemp(prefix="limits-seq-", dir=directory))
    try:
        for run in range(runs):
            path = scratch / f"sequential-{run}.bin"
            with _collector_paused():
                started = time.perf_counter()
                with open(path, "wb", buffering=_WRITE_BUFFER_BYTES) as f:
                    for o in objects:
                        f.write(o)
                    f.flush()
                    os.fsync(f.fileno())
                _fsync_directory(scratch)
                elapsed = time.perf_counter() - started
            samples.append(_RunSample(elapsed, total, len(objects)))
            path.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _summarise("write_sequential_fsync", "write one file + fsync", samples)


def per_file_write_fsync(
    objects: Sequence[bytes],
    directory: Path,
    *,
    runs: int = 3,
    max_files: int | None = None,
) -> LimitMeasurement:
    """Write each object to its own new file, fsync each file, then fsync the folder.

    With `max_files`, only the first `max_files` objects are written (fsync per file is slow
    for small objects); `items_available` tells how many there were.
    """
    _check_runs(runs)
    chosen = objects if max_files is None else objects[:max_files]
    total = sum(len(o) for o in chosen)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    samples: list[_RunSample] = []
    for _ in range(runs):
        scratch = Path(tempfile.mkdtemp(prefix="limits-files-", dir=directory))
        try:
            with _collector_paused():
                started = time.perf_counter()
                for i, o in enumerate(chosen):
                    fd = os.open(scratch / f"{i:08d}", flags, 0o644)
                    try:
                        view = memoryview(o)
                        while view:
                            view = view[os.write(fd, view) :]
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                _fsync_directory(scratch)
                elapsed = time.perf_counter() - started
            samples.append(_RunSample(elapsed, total, len(chosen)))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    result = _summarise("write_per_file_fsync", "write file per object + fsync each", samples)
    result["items_available"] = len(objects)
    return result


# --- hashing -------------------------------------------------------------------------------


def _hasher(algorithm: HashAlgorithm) -> Callable[[bytes], object]:
    if algorithm == "xxh3_64":
        return xxhash.xxh3_64_intdigest
    if algorithm == "blake3":
        return lambda data: blake3.blake3(data, max_threads=1).digest()
    return lambda data: hashlib.sha256(data).digest()


def hash_throughput(
    objects: Sequence[bytes],
    algorithm: HashAlgorithm,
    *,
    runs: int = 3,
    min_seconds: float = DEFAULT_MIN_SECONDS,
) -> LimitMeasurement:
    """Hash every object on its own, on one thread, with xxh3_64, BLAKE3 or SHA-256.

    Each run makes as many whole passes over the objects as fit in `min_seconds`.
    """
    _check_runs(runs)
    digest = _hasher(algorithm)
    total = sum(len(o) for o in objects)

    def one_pass() -> None:
        for o in objects:
            digest(o)

    samples = [_timed_passes(one_pass, total, len(objects), min_seconds) for _ in range(runs)]
    return _summarise(f"hash_{algorithm}", f"hash {algorithm}", samples)


# --- byte shuffle --------------------------------------------------------------------------


def _shuffle_into(data: bytes, buffer: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Write the low bytes of `data`'s 16-bit words, then the high bytes, into `buffer`.

    An odd trailing byte is kept at the end. The copy runs without the GIL.
    """
    size = len(data)
    pairs = size // 2
    source = np.frombuffer(data, dtype=np.uint8)
    out = buffer[:size]
    np.copyto(out[: 2 * pairs].reshape(2, pairs), source[: 2 * pairs].reshape(pairs, 2).T)
    if size % 2:
        out[-1] = source[-1]
    return out


def _unshuffle_into(data: bytes, buffer: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Inverse of `_shuffle_into`."""
    size = len(data)
    pairs = size // 2
    source = np.frombuffer(data, dtype=np.uint8)
    out = buffer[:size]
    words = out[: 2 * pairs].reshape(pairs, 2)
    planes = source[: 2 * pairs].reshape(2, pairs)
    # Two column copies: ~10x faster than one copy into the transposed view.
    np.copyto(words[:, 0], planes[0])
    np.copyto(words[:, 1], planes[1])
    if size % 2:
        out[-1] = source[-1]
    return out


def byte_shuffle(data: bytes) -> bytes:
    """Split 16-bit little-endian words into a plane of low bytes then a plane of high bytes."""
    return _shuffle_into(data, np.empty(len(data), dtype=np.uint8)).tobytes()


def byte_unshuffle(data: bytes) -> bytes:
    """Undo `byte_shuffle`."""
    return _unshuffle_into(data, np.empty(len(data), dtype=np.uint8)).tobytes()


def byte_shuffle_throughput(
    objects: Sequence[bytes], *, runs: int = 3, min_seconds: float = DEFAULT_MIN_SECONDS
) -> LimitMeasurement:
    """Byte-shuffle every object into a reused buffer, on one thread (passes as for hashes)."""
    _check_runs(runs)
    total = sum(len(o) for o in objects)
    buffer = np.empty(max((len(o) for o in objects), default=0), dtype=np.uint8)

    def one_pass() -> None:
        for o in objects:
            _shuffle_into(o, buffer)

    samples = [_timed_passes(one_pass, total, len(objects), min_seconds) for _ in range(runs)]
    return _summarise("byte_shuffle", "byte shuffle (numpy)", samples)


# --- zstd ----------------------------------------------------------------------------------


def _split_evenly(objects: Sequence[bytes], parts: int) -> list[Sequence[bytes]]:
    """Cut `objects` into `parts` contiguous shares of about the same number of bytes."""
    total = sum(len(o) for o in objects)
    shares: list[Sequence[bytes]] = []
    start = 0
    done = 0
    for part in range(1, parts + 1):
        goal = total * part / parts
        end = start
        while end < len(objects) and (done + len(objects[end]) / 2 <= goal or part == parts):
            done += len(objects[end])
            end += 1
        shares.append(objects[start:end])
        start = end
    return shares


def _run_on_threads(work: Sequence[Callable[[], int]]) -> tuple[float, int]:
    """Start one thread per callable at once; wall time from first start to last end.

    Returns (seconds, sum of the callables' results).
    """
    barrier = threading.Barrier(len(work))
    starts = [0.0] * len(work)
    ends = [0.0] * len(work)
    results = [0] * len(work)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            starts[i] = time.perf_counter()
            results[i] = work[i]()
            ends[i] = time.perf_counter()
        except BaseException as error:  # reported to the caller below
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return max(ends) - min(starts), sum(results)


def _compress_share(share: Sequence[bytes], level: int, shuffle: bool) -> Callable[[], int]:
    """A job compressing `share` with its own compressor; returns the compressed byte count."""
    compressor = zstandard.ZstdCompressor(level=level)
    buffer = np.empty(max((len(o) for o in share), default=0), dtype=np.uint8)

    def job() -> int:
        produced = 0
        if shuffle:
            for o in share:
                produced += len(compressor.compress(_shuffle_into(o, buffer).data))
        else:
            for o in share:
                produced += len(compressor.compress(o))
        return produced

    return job


def _zstd_label(level: int, shuffle: bool, threads: int) -> tuple[str, str]:
    kind = "shuffled" if shuffle else "plain"
    key = f"zstd{level}_{kind}_t{threads}"
    label = f"zstd-{level} {'shuffle+' if shuffle else ''}compress, {threads} thread" + (
        "s" if threads > 1 else ""
    )
    return key, label


def zstd_compression(
    objects: Sequence[bytes],
    *,
    level: int = 3,
    shuffle: bool = False,
    threads: int = 1,
    runs: int = 3,
) -> LimitMeasurement:
    """Compress every object as its own zstd frame, optionally byte-shuffled first.

    With several threads the objects are split into contiguous shares of equal bytes, one
    per thread, each thread with its own `ZstdCompressor`. Throughput counts input bytes;
    `compression_ratio` is input bytes over compressed bytes.
    """
    _check_runs(runs)
    if threads < 1:
        raise ValueError("threads must be at least 1")
    total = sum(len(o) for o in objects)
    samples: list[_RunSample] = []
    for _ in range(runs):
        jobs = [_compress_share(s, level, shuffle) for s in _split_evenly(objects, threads)]
        with _collector_paused():
            seconds, compressed = _run_on_threads(jobs)
        samples.append(_RunSample(seconds, total, len(objects), compressed))
    key, label = _zstd_label(level, shuffle, threads)
    result = _summarise(key, label, samples)
    compressed = samples[0].compressed_bytes
    result["threads"] = threads
    result["level"] = level
    result["compressed_bytes"] = compressed
    result["compression_ratio"] = total / compressed if compressed else 0.0
    return result


def zstd_decompression(
    objects: Sequence[bytes],
    *,
    level: int = 3,
    shuffle: bool = False,
    runs: int = 3,
    min_seconds: float = DEFAULT_MIN_SECONDS,
) -> LimitMeasurement:
    """Decompress every object's zstd frame (and unshuffle it), on one thread.

    The frames are prepared outside the timed section; throughput counts output bytes.
    Each run makes as many whole passes as fit in `min_seconds`.
    """
    _check_runs(runs)
    compressor = zstandard.ZstdCompressor(level=level)
    buffer = np.empty(max((len(o) for o in objects), default=0), dtype=np.uint8)
    frames = [
        compressor.compress(_shuffle_into(o, buffer).data if shuffle else o)
        for o in objects
    ]
    decompressor = zstandard.ZstdDecompressor()
    total = sum(len(o) for o in objects)

    def one_pass() -> None:
        if shuffle:
            for frame in frames:
                _unshuffle_into(decompressor.decompress(frame), buffer)
        else:
            for frame in frames:
                decompressor.decompress(frame)

    samples = [_timed_passes(one_pass, total, len(objects), min_seconds) for _ in range(runs)]
    kind = "shuffled" if shuffle else "plain"
    label = f"zstd-{level} decompress{'+unshuffle' if shuffle else ''}, 1 thread"
    result = _summarise(f"zstd{level}_{kind}_decompress_t1", label, samples)
    result["threads"] = 1
    result["level"] = level
    return result


# --- the whole set -------------------------------------------------------------------------

LimitMeasure = Callable[[Sequence[bytes], Path], LimitMeasurement]
"""A prepared limit measurement: give it the objects and a scratch directory."""


def _sequential_write_measure(runs: int) -> LimitMeasure:
    def measure(objects: Sequence[bytes], directory: Path) -> LimitMeasurement:
        return sequential_write_fsync(objects, directory, runs=runs)

    return measure


def _per_file_write_measure(runs: int, max_files: int | None) -> LimitMeasure:
    def measure(objects: Sequence[bytes], directory: Path) -> LimitMeasurement:
        return per_file_write_fsync(objects, directory, runs=runs, max_files=max_files)

    return measure


def _hash_measure(algorithm: HashAlgorithm, runs: int, min_seconds: float) -> LimitMeasure:
    def measure(objects: Sequence[bytes], directory: Path) -> LimitMeasurement:
        return hash_throughput(objects, algorithm, runs=runs, min_seconds=min_seconds)

    return measure


def _byte_shuffle_measure(runs: int, min_seconds: float) -> LimitMeasure:
    def measure(objects: Sequence[bytes], directory: Path) -> LimitMeasurement:
        return byte_shuffle_throughput(objects, runs=runs, min_seconds=min_seconds)

    return measure


def _compression_measure(level: int, shuffle: bool, threads: int, runs: int) -> LimitMeasure:
    def measure(objects: Sequence[bytes], directory: Path) -> LimitMeasurement:
        return zstd_compression(objects, level=level, shuffle=shuffle, threads=threads, runs=runs)

    return measure


def _decompression_measure(
    level: int, shuffle: bool, runs: int, min_seconds: float
) -> LimitMeasure:
    def measure(objects: Sequence[bytes], directory: Path) -> LimitMeasurement:
        return zstd_decompression(
            objects, level=level, shuffle=shuffle, runs=runs, min_seconds=min_seconds
        )

    return measure


def limit_plan(
    *,
    runs: int = 3,
    level: int = 3,
    thread_counts: Sequence[int] = (1, 2),
    per_file_max: int | None = None,
    min_seconds: float = DEFAULT_MIN_SECONDS,
) -> dict[str, LimitMeasure]:
    """Every limit measurement, keyed by the `key` its result will carry, in report order.

    Keys: write_sequential_fsync, write_per_file_fsync, hash_xxh3_64, hash_blake3,
    hash_sha256, byte_shuffle, zstd{level}_{plain|shuffled}_t{threads} for each thread count,
    zstd{level}_{plain|shuffled}_decompress_t1.
    """
    plan: dict[str, LimitMeasure] = {
        "write_sequential_fsync": _sequential_write_measure(runs),
        "write_per_file_fsync": _per_file_write_measure(runs, per_file_max),
    }
    for algorithm in HASH_ALGORITHMS:
        plan[f"hash_{algorithm}"] = _hash_measure(algorithm, runs, min_seconds)
    plan["byte_shuffle"] = _byte_shuffle_measure(runs, min_seconds)
    for shuffle in (False, True):
        for threads in dict.fromkeys(thread_counts):
            key, _ = _zstd_label(level, shuffle, threads)
            plan[key] = _compression_measure(level, shuffle, threads, runs)
    for shuffle in (False, True):
        kind = "shuffled" if shuffle else "plain"
        plan[f"zstd{level}_{kind}_decompress_t1"] = _decompression_measure(
            level, shuffle, runs, min_seconds
        )
    return plan


def default_thread_counts() -> tuple[int, ...]:
    """One thread and every core this process may use (just (1,) on a single core)."""
    cores = len(os.sched_getaffinity(0)) if sys.platform == "linux" else (os.cpu_count() or 1)
    return (1,) if cores <= 1 else (1, cores)
