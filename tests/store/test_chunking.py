"""The native chunker: it is the compiled one, it matches the plain reference, and it is content-defined."""

from __future__ import annotations

import io
import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mmarchive._native import gearcdc
from mmarchive.config import KiB, StoreConfig
from mmarchive.store.chunking import Chunker
from tests.store import cdc_reference

SMALL = StoreConfig(chunk_threshold=16 * KiB, chunk_min=4 * KiB, chunk_avg=8 * KiB, chunk_max=32 * KiB)


def test_installed_package_uses_compiled_chunker() -> None:
    assert gearcdc.__file__ is not None
    assert gearcdc.__file__.endswith(".so"), gearcdc.__file__
    assert type(gearcdc.find_cut).__name__ in ("builtin_function_or_method", "cython_function_or_method")


def test_gear_table_matches_reference() -> None:
    assert gearcdc.GEAR_SEED == cdc_reference.GEAR_SEED
    assert gearcdc.gear_table() == cdc_reference.GEAR
    for bits in (1, 12, 20, 22, 63):
        assert gearcdc.high_mask(bits) == cdc_reference.high_mask(bits)


def _native_lengths(data: bytes, cfg: StoreConfig) -> list[int]:
    return [len(c) for c in Chunker(cfg).cut_buffer(memoryview(data))]


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=100_000), st.sampled_from([1, 2, 3]))
def test_parity_with_reference(data: bytes, scale: int) -> None:
    cfg = StoreConfig(chunk_threshold=16 * KiB, chunk_min=1 * KiB * scale, chunk_avg=4 * KiB * scale,
                      chunk_max=16 * KiB * scale)
    assert _native_lengths(data, cfg) == cdc_reference.cut_all(data, cfg.chunk_min, cfg.chunk_avg,
                                                               cfg.chunk_max)


def test_parity_on_structured_data() -> None:
    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for _ in range(50_000)) + bytes(30_000) + b"abc" * 20_000
    ref = cdc_reference.cut_all(data, SMALL.chunk_min, SMALL.chunk_avg, SMALL.chunk_max)
    assert _native_lengths(data, SMALL) == ref
    assert sum(ref) == len(data)


def test_stream_and_buffer_cut_identically() -> None:
    data = os.urandom(700_000)
    chunker = Chunker(SMALL)
    from_buffer = [bytes(c) for c in chunker.cut_buffer(memoryview(data))]

    class Dribble(io.RawIOBase):
        """A stream that returns few bytes per read, like a pipe."""

        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int = -1) -> bytes:
            n = min(n, 10_007)
            out = data[self.pos:self.pos + n]
            self.pos += len(out)
            return out

    from_stream = [bytes(c) for c in chunker.cut_stream(Dribble())]
    assert from_stream == from_buffer
    assert all(SMALL.chunk_min <= len(c) <= SMALL.chunk_max for c in from_buffer[:-1])


def test_edit_in_the_middle_changes_only_nearby_chunks() -> None:
    cfg = StoreConfig(chunk_threshold=64 * KiB, chunk_min=16 * KiB, chunk_avg=64 * KiB, chunk_max=256 * KiB)
    data = bytearray(os.urandom(4_000_000))
    before = [bytes(c) for c in Chunker(cfg).cut_buffer(memoryview(bytes(data)))]
    data[2_000_000:2_000_010] = b"0123456789"  # a small edit in the middle
    data[1_000_000:1_000_000] = b"inserted bytes shift everything after them"
    after = [bytes(c) for c in Chunker(cfg).cut_buffer(memoryview(bytes(data)))]
    changed = set(after) - set(before)
    assert len(before) > 30
    assert len(changed) <= 4, f"{len(changed)} of {len(after)} chunks changed"


def test_average_chunk_size_is_near_configured() -> None:
    cfg = StoreConfig()  # defaults: min 512 KiB, avg 2 MiB, max 8 MiB
    data = os.urandom(64 * 1024 * 1024)
    lengths = [len(c) for c in Chunker(cfg).cut_buffer(memoryview(data))]
    mean = sum(lengths) / len(lengths)
    assert 1 * 1024 * 1024 <= mean <= 4 * 1024 * 1024, mean
