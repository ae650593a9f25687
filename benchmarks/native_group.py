"""The `native` benchmark group: each Cython hot path beside the plain code it replaces.

The project keeps Cython only where a per-byte loop is hot and the gain is measured. This group
measures, on the run's CT set, the gear-hash chunker (native, against the plain-Python reference in
tests/store/cdc_reference.py on a small slice: it is that slow) and the 16-bit byte shuffle and
unshuffle (native, against numpy's strided transpose, the previous implementation). Each row's limit is
the plain implementation, so the ratio is the speed-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from benchmarks.harness import BenchmarkContext, BenchmarkGroup
from benchmarks.results import MIB, ResultRow
from mmarchive._native import byteshuffle
from mmarchive.config import StoreConfig
from mmarchive.store.chunking import Chunker

GROUP_NAME = "native"


def _numpy_shuffle2(data: bytes) -> bytes:
    return bytes(np.frombuffer(data, np.uint8).reshape(-1, 2).T.tobytes())


def _numpy_unshuffle2(data: bytes) -> bytes:
    return bytes(np.frombuffer(data, np.uint8).reshape(2, -1).T.tobytes())


def _throughput(fn: Callable[[bytes], object], objects: tuple[bytes, ...], runs: int) -> float:
    """Median bytes/s of applying ``fn`` to every object, over ``runs`` passes."""
    total = sum(len(o) for o in objects)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for o in objects:
            fn(o)
        rates.append(total / (time.perf_counter() - started))
    return sorted(rates)[len(rates) // 2]


def run_native(context: BenchmarkContext) -> list[ResultRow]:
    from tests.store import cdc_reference  # the plain reference lives with the parity tests

    runs = context.settings.runs
    ct = context.dataset("ct").objects
    rows: list[ResultRow] = []
    shuffled = tuple(byteshuffle.shuffle2(o) for o in ct)
    for name, native, plain, data in (
        ("byte shuffle (16-bit)", byteshuffle.shuffle2, _numpy_shuffle2, ct),
        ("byte unshuffle (16-bit)", byteshuffle.unshuffle2, _numpy_unshuffle2, shuffled),
    ):
        context.progress(f"native: {name}")
        rows.append(ResultRow(
            group=GROUP_NAME, dataset="ct", name=f"{name}, Cython", unit="MiB/s",
            value=_throughput(native, data, runs) / MIB,
            limit_name=f"{name}, numpy transpose",
            limit_value=_throughput(plain, data, runs) / MIB,
            note="ratio = speed-up over numpy"))

    cfg = StoreConfig()
    chunker = Chunker(cfg)
    whole = b"".join(ct)
    context.progress("native: chunker")

    def native_cut(buf: bytes) -> object:
        return sum(1 for _ in chunker.cut_buffer(memoryview(buf)))

    sample = whole[: 4 * 1024 * 1024]

    def plain_cut(buf: bytes) -> object:
        return cdc_reference.cut_all(buf, cfg.chunk_min, cfg.chunk_avg, cfg.chunk_max)

    rows.append(ResultRow(
        group=GROUP_NAME, dataset="ct", name="gear-hash chunking, Cython", unit="MiB/s",
        value=_throughput(native_cut, (whole,), runs) / MIB,
        limit_name="gear-hash chunking, plain Python (4 MiB sample)",
        limit_value=_throughput(plain_cut, (sample,), 1) / MIB,
        note="ratio = speed-up over the plain reference"))
    return rows


NATIVE_GROUP = BenchmarkGroup(
    name=GROUP_NAME,
    description="Cython hot paths (chunker, byte shuffle) beside the plain code they replace",
    run=run_native,
)
