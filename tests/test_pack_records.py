"""The write path's record encoders: the same bytes as the format's reference encoders, read back by the
pack reader."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, IndexConfig, StoreConfig
from mmarchive.errors import StorageError
from mmarchive.pack import writeback
from mmarchive.pack import writer as writer_module
from mmarchive.pack.format import (
    RECORD_HEADER_LEN,
    OneChunkManifests,
    PackHeader,
    RecordHeader,
    RecordKind,
    encode_manifest_payload,
    encode_metadata,
)
from mmarchive.pack.reader import ScannedRecord, ScanResult, scan_pack
from mmarchive.pack.writer import SMALL_RECORD_MAX, PackWriter, write_all
from mmarchive.tiers.local import LocalPackFile

_tenants = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
_metadata = st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20)),
                            max_size=4)
_u64 = st.integers(0, 2**64 - 1)


@given(_tenants, _metadata, _u64, _u64, _u64, st.binary(min_size=32, max_size=32))
def test_one_chunk_manifests_match_the_reference(tenant: str, metadata: dict[str, object], seq: int,
                                                 size: int, created: int, oid: bytes) -> None:
    size &= 2**32 - 1  # a one-chunk object's size is its chunk's raw length (u32)
    meta = encode_metadata(metadata)
    assert (OneChunkManifests(tenant, meta).encode(seq, size, created, oid)
            == encode_manifest_payload(seq, size, created, tenant, meta, [(oid, size)]))


def _writer(path: Path, spill: Executor | None = None) -> PackWriter:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    return PackWriter.create(fd, PackHeader(bytes(16), "t", "", 1), path.name, spill=spill)


def _read_back(path: Path) -> tuple[ScanResult, list[ScannedRecord]]:
    """Every record of a sealed pack, as the reader finds them."""
    fd = os.open(path, os.O_RDONLY)
    src = LocalPackFile(path.name, fd)
    try:
        scan = ScanResult()
        return scan, list(scan_pack(src, scan))
    finally:
        src.close()


@given(st.lists(st.one_of(
    st.tuples(st.just("small"), st.sampled_from([RecordKind.CHUNK, RecordKind.MANIFEST]),
              st.integers(0, 2), st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1),
              st.binary(max_size=300), st.just(b"")),
    st.tuples(st.just("object"), st.just(RecordKind.CHUNK), st.integers(0, 2),
              st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1), st.binary(max_size=300),
              st.binary(max_size=200))), max_size=8))
def test_small_records_read_back_as_written(
        records: list[tuple[str, RecordKind, int, bytes, int, bytes, bytes]]) -> None:
    """append_small and append_one_chunk_object write what the pack reader (the format's decoder)
    reads back: each record at the offset returned, with its header fields and payload."""
    with tempfile.TemporaryDirectory() as base:
        path = Path(base) / "pack"
        writer = _writer(path)
        expected = []
        for form, kind, codec, rid, raw_len, payload, manifest in records:
            checksum = xxhash.xxh3_64_intdigest(payload)  # (the reader checks every payload)
            if form == "small":
                at = writer.append_small(int(kind), codec, rid, raw_len, payload, checksum)
                expected.append((at, RecordHeader(int(kind), codec, len(payload), raw_len, rid, checksum),
                                 payload))
                continue
            at = writer.append_one_chunk_object(rid, codec, raw_len, payload, checksum, manifest)
            expected.append((at, RecordHeader(RecordKind.CHUNK, codec, len(payload), raw_len, rid, checksum),
                             payload))
            expected.append((at + RECORD_HEADER_LEN + len(payload),
                             RecordHeader(RecordKind.MANIFEST, 0, len(manifest), len(manifest), rid,
                                          xxhash.xxh3_64_intdigest(manifest)), manifest))
        writer.seal()
        os.close(writer.fd)
        scan, found = _read_back(path)
        assert scan.problems is None and scan.sealed
        assert [(r.offset, r.header, r.payload) for r in found] == expected


def test_buffered_records_past_a_buffer_of_a_mib_write_the_same_file() -> None:
    """Records buffered past the size at which the writer starts a new buffer land where they belong,
    whether or not the buffered bytes are taken (a commit) in between."""
    with tempfile.TemporaryDirectory() as base:
        paths = [Path(base) / f"pack-{i}" for i in range(2)]
        writers = [_writer(p) for p in paths]
        for i in range(700):  # 2.8 MiB of 4 KiB records
            payload = os.urandom(4096)
            rid = i.to_bytes(32, "little")
            offsets = [w.append_small(int(RecordKind.CHUNK), 0, rid, 4096, payload,
                                      xxhash.xxh3_64_intdigest(payload)) for w in writers]
            assert offsets[0] == offsets[1]
            if i % 300 == 299:
                writers[1].flush()
        for w in writers:
            w.seal()
            os.close(w.fd)
        assert paths[0].read_bytes() == paths[1].read_bytes()
        scan, found = _read_back(paths[0])
        assert scan.problems is None and [r.header.id for r in found] == [
            i.to_bytes(32, "little") for i in range(700)]


def test_small_record_limit_is_below_direct_writes() -> None:
    """append_small buffers every record it takes: the limit is where append stops buffering."""
    with tempfile.TemporaryDirectory() as base:
        w = _writer(Path(base) / "pack")
        w.append(RecordKind.CHUNK, 0, bytes(32), SMALL_RECORD_MAX - 1, b"x" * (SMALL_RECORD_MAX - 1), 0)
        assert not w._parts  # buffered
        w.append(RecordKind.CHUNK, 0, bytes(32), SMALL_RECORD_MAX, b"x" * SMALL_RECORD_MAX, 0)
        assert w._parts or os.fstat(w.fd).st_size  # kept by reference or written: not buffered
        os.close(w.fd)


def test_batched_small_objects_across_packs_and_commits(tmp_path: Path) -> None:
    """put_many's batch staging: pack changes within a batch, commits between look-up and staging,
    resends inside one batch and across batches, and an empty object; all read back and verify."""
    config = ArchiveConfig(store=StoreConfig(pack_size=64 * 1024, compression="auto"),
                           index=IndexConfig(commit_objects=7))
    blobs = [os.urandom(1500) + bytes(1500) for _ in range(400)]
    items = [*blobs[:200], blobs[5], b"", *blobs[200:], *blobs[100:140]]
    with Archive.create(tmp_path / "a", config) as a:
        infos = list(a.put_many(items))
        assert [i.already_stored for i in infos] == [False] * 200 + [True, False] + [False] * 200 \
            + [True] * 40
        assert len(a.packs()) > 10
        assert a.stats().objects == 401
        for item, info in zip(items, infos, strict=True):
            assert a.get(info.id) == item
        assert a.verify().ok
    with Archive.open(tmp_path / "a") as a:
        assert a.stats().objects == 401
        assert a.get(infos[-1].id) == items[-1]


def test_write_all_finishes_short_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """pwritev may write less than asked: write_all goes on from where it stopped, part by part."""
    real = os.pwritev

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        return real(fd, [memoryview(buffers[0])[:777]], offset)  # at most 777 bytes of the first part

    parts: list[bytes | bytearray | memoryview] = [os.urandom(n) for _ in range(300)
                                                   for n in (0, 1, 2000, 777, 5000)]
    with tempfile.TemporaryDirectory() as base:
        fd = os.open(Path(base) / "f", os.O_RDWR | os.O_CREAT, 0o644)
        monkeypatch.setattr(os, "pwritev", short)
        write_all(fd, parts, 10, what="test file")
        monkeypatch.undo()
        os.close(fd)
        assert (Path(base) / "f").read_bytes() == bytes(10) + b"".join(bytes(p) for p in parts)


def test_write_all_writes_in_pieces_and_starts_each_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts are written a few MiB at a time, each piece handed to start_writeback as it is written."""
    started: list[tuple[int, int]] = []
    real_start = writeback.start_writeback

    def start(fd: int, offset: int, length: int) -> None:
        started.append((offset, length))
        real_start(fd, offset, length)  # the real system call: it must accept every range it is given

    monkeypatch.setattr(writer_module, "start_writeback", start)
    parts: list[bytes | bytearray | memoryview] = [os.urandom(n) for n in (3 << 20, 100, 5 << 20, 7 << 20)]
    parts += [os.urandom(64 * 1024) for _ in range(200)]  # 12.5 MiB in small parts
    with tempfile.TemporaryDirectory() as base:
        fd = os.open(Path(base) / "f", os.O_RDWR | os.O_CREAT, 0o644)
        write_all(fd, parts, 4096, what="test file")
        os.close(fd)
        assert (Path(base) / "f").read_bytes() == bytes(4096) + b"".join(bytes(p) for p in parts)
    total = sum(len(p) for p in parts)
    assert sum(length for _o, length in started) == total
    assert [o for o, _l in started] == list(accumulate([4096] + [n for _o, n in started[:-1]]))
    assert len(started) >= 3 and all(n <= 16 << 20 for _o, n in started)


def test_start_writeback_ignores_what_it_cannot_do() -> None:
    """It is a hint: on a pipe (no page cache to write back) the call fails and nothing is raised."""
    assert writeback.WRITEBACK_MIN <= 8 << 20
    if sys.platform.startswith("linux"):
        assert writeback._sync_file_range is not None
    read_end, write_end = os.pipe()
    try:
        writeback.start_writeback(write_end, 0, 8 << 20)
    finally:
        os.close(read_end)
        os.close(write_end)


class _HeldExecutor(Executor):
    """Runs what is submitted only when told to: a spilled write can be caught in flight."""

    def __init__(self) -> None:
        self.held: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.held.append((future, fn, args, kwargs))
        return future

    def run_held(self) -> None:
        for future, fn, args, kwargs in self.held:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as e:
                future.set_exception(e)
        self.held.clear()


def _big_records(writer: PackWriter, count: int) -> list[bytes]:
    payloads = [os.urandom(3 << 20) for _ in range(count)]  # bytes: kept by reference until 8 MiB
    for i, payload in enumerate(payloads):
        writer.append(RecordKind.CHUNK, 0, i.to_bytes(32, "little"), len(payload), payload,
                      xxhash.xxh3_64_intdigest(payload))
    return payloads


def test_records_past_the_kept_limit_are_written_by_the_spill_executor_one_write_at_a_time() -> None:
    """Past the bytes a pack keeps for its taker, pending records go to the spill executor; while that
    write is in flight the appending thread writes the next ones itself; sync waits for the write."""
    spill = _HeldExecutor()
    with tempfile.TemporaryDirectory() as base:
        path = Path(base) / "pack"
        writer = _writer(path, spill)
        _big_records(writer, 3)  # 9 MiB: over the limit at the third record
        assert len(spill.held) == 1 and path.stat().st_size == 0  # handed over, not written yet
        _big_records(writer, 3)  # over it again while the first write is in flight
        assert len(spill.held) == 1 and path.stat().st_size > 18 << 20  # written by the appender
        done = threading.Thread(target=writer.sync)
        done.start()
        done.join(0.2)
        assert done.is_alive()  # sync waits for the spilled write
        spill.run_held()
        done.join(10)
        assert not done.is_alive()
        writer.seal()
        writer.close()
        scan, found = _read_back(path)
        assert scan.problems is None and len(found) == 6


def test_a_failed_spilled_write_is_raised_by_sync_and_by_the_next_spill() -> None:
    for raised_by in ("sync", "append"):
        spill = _HeldExecutor()
        with tempfile.TemporaryDirectory() as base:
            writer = _writer(Path(base) / "pack", spill)
            _big_records(writer, 3)
            (future, _fn, args, kwargs), = spill.held
            spill.held[0] = (future, write_all, (-1, *args[1:]), kwargs)  # a descriptor that is not open
            spill.run_held()
            with pytest.raises(StorageError, match="writing pack"):
                if raised_by == "sync":
                    writer.sync()
                else:
                    _big_records(writer, 3)
            writer.close()  # closes the file without raising what was already reported
