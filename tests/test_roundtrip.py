"""Round trips of arbitrary bytes at every size edge; a multi-gigabyte object streamed in bounded memory."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarchive.archive import Archive
from tests.conftest import TINY

S = TINY.store
EDGES = sorted({0, 1, 2, 63, 64, 65, S.chunk_min - 1, S.chunk_min, S.chunk_min + 1,
                S.chunk_threshold - 1, S.chunk_threshold, S.chunk_threshold + 1,
                S.chunk_max - 1, S.chunk_max, S.chunk_max + 1, 2 * S.chunk_max + 3,
                S.pack_size - 100, S.pack_size + 100})


def _payload(draw_bytes: bytes, size: int) -> bytes:
    if not draw_bytes:
        return bytes(size)
    reps = size // len(draw_bytes) + 1
    return (draw_bytes * reps)[:size]


@settings(max_examples=60)
@given(size=st.sampled_from(EDGES) | st.integers(0, 3 * S.chunk_max),
       seed=st.binary(min_size=0, max_size=64), compressible=st.booleans())
def test_roundtrip_any_size(archive: Archive, size: int, seed: bytes, compressible: bool) -> None:
    data = _payload(seed, size) if compressible else _random(size, seed)
    info = archive.put(data)
    assert info.size == size
    assert info.id == blake3.blake3(data).hexdigest()
    assert archive.get(info.id) == data
    with archive.open_object(info.id) as f:
        assert f.read() == data


def _random(size: int, seed: bytes) -> bytes:
    out = bytearray()
    h = hashlib.shake_256(seed)
    out += h.digest(size) if size else b""
    return bytes(out)


@settings(max_examples=25)
@given(pieces=st.lists(st.binary(max_size=5000), max_size=30))
def test_iterator_sources_of_any_shape(archive: Archive, pieces: list[bytes]) -> None:
    whole = b"".join(pieces)
    info = archive.put(iter(pieces))
    assert archive.get(info.id) == whole


BIG_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from mmarchive import Archive, ArchiveConfig, StoreConfig
    size = int(sys.argv[2])
    base = np.random.default_rng(1).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    def pieces():
        sent, n = 0, 0
        while sent < size:
            k = (n * 7919) % (len(base) - (1 << 20))
            block = n.to_bytes(8, "little") + base[k:k + (1 << 20) - 8]
            block = block[: size - sent]
            sent += len(block); n += 1
            yield block
    cfg = ArchiveConfig(store=StoreConfig(compression="none"))
    with Archive.create(sys.argv[1], cfg) as a:
        info = a.put(pieces())
    # VmHWM is this process's own peak; ru_maxrss can carry the parent's peak across fork/exec.
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmHWM:"))
    print(info.id, info.size, info.chunk_count, hwm)
""")


def test_four_gib_object_streams_in_bounded_memory(tmp_path: Path) -> None:
    size = 4 * 1024 ** 3 + 12345
    out = subprocess.run([sys.executable, "-c", BIG_WRITER, str(tmp_path / "a"), str(size)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    oid, got_size, chunks, maxrss_kib = out.stdout.split()
    assert int(got_size) == size
    assert int(chunks) > 500
    assert int(maxrss_kib) < 300 * 1024, f"peak RSS {int(maxrss_kib) // 1024} MiB"
    with Archive.open(tmp_path / "a", readonly=True) as a, a.open_object(oid) as f:
        hasher = blake3.blake3()
        total = 0
        for piece in f.read_chunkwise():  # the reader checks the BLAKE3 at the end itself
            hasher.update(piece)
            total += len(piece)
        assert total == size and hasher.hexdigest() == oid
        f.seek(size - 100)
        assert len(f.read()) == 100
