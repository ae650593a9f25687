"""One suite every tier backend passes: the promises of :class:`mmarchive.tiers.base.Tier`, checked for real.

Each conformance test runs once per backend: ``local`` in a temporary directory and ``s3`` on a real
SeaweedFS (the session's ``s3_server``), in a fresh prefix of one session bucket. A new backend joins by
adding itself to ``BACKENDS`` and :func:`_harness`. The S3-only tests at the end check what only S3 has:
multipart uploads and their parts, ranged GETs of just the bytes asked for, and how failures are classified
(refused connections and timeouts are transient; a wrong secret and a missing bucket are not). No mocks.

Reads past the end behave as ``pread`` does on a local file, on every backend: a read that starts inside the
pack and runs past its end returns the bytes up to the end; one that starts at or past the end returns
``b""``. The pack reader (``mmarchive/pack/reader.py``) relies on that: it treats a short read as a cut-off
pack and raises ``IntegrityError`` itself.
"""

from __future__ import annotations

import itertools
import random
import socket
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarchive.config import KiB, MiB
from mmarchive.errors import IntegrityError, InvalidInputError, StorageError
from mmarchive.tiers.base import PackFile, StoredPack, Tier
from mmarchive.tiers.local import LocalTier
from mmarchive.tiers.s3 import MIN_PART_SIZE, S3Tier
from tests.s3server import S3Server

BACKENDS = ("local", "s3")
#: The smallest part S3 (and SeaweedFS) accepts, so that multipart paths are reached with little data.
PART = MIN_PART_SIZE
_serial = itertools.count()


@dataclass
class Harness:
    """A tier under test and a way to see what a failed store may have left behind."""

    kind: str
    tier: Tier
    #: Names of leftovers: temporary files (local), objects that are not packs and unfinished multipart
    #: uploads (S3).
    leftovers: Callable[[], list[str]]


def new_pack() -> str:
    return uuid.uuid4().hex


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(size * 1_000_003 + seed).randbytes(size)


def pieces(data: bytes,
           sizes: tuple[int, ...] = (1, 777, 65_537, 1_048_573, 3 * MiB + 5)) -> Iterator[memoryview]:
    """``data`` in pieces of odd sizes that never line up with part boundaries (memoryviews, no copies)."""
    view = memoryview(data)
    pos = 0
    for n in itertools.cycle(sizes):
        if pos >= len(view):
            return
        yield view[pos:pos + n]
        pos += n


@pytest.fixture(scope="session")
def s3_bucket(s3_server: S3Server) -> str:
    """One bucket for the session (SeaweedFS gives every bucket its own volume, and creating one is slow)."""
    return s3_server.new_bucket("conformance")


def _local_leftovers(root: Path) -> Callable[[], list[str]]:
    def leftovers() -> list[str]:
        if not root.exists():
            return []
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if p.is_file() and p.suffix != ".pack")
    return leftovers


def _s3_leftovers(client: Any, bucket: str, prefix: str) -> Callable[[], list[str]]:
    def leftovers() -> list[str]:
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
        objects = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return sorted([f"upload {u['Key']} {u['UploadId']}" for u in uploads]
                      + [f"object {o['Key']}" for o in objects if not o["Key"].endswith(".pack")])
    return leftovers


def _harness(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if kind == "local":
        root = tmp_path / "tier"
        return Harness(kind, LocalTier(root, name="conf"), _local_leftovers(root))
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    prefix = f"run-{next(_serial)}-{uuid.uuid4().hex[:8]}/packs/"
    tier = S3Tier("conf", bucket=bucket, prefix=prefix, endpoint_url=server.endpoint_url, part_size=PART,
                  session=server.session(), max_attempts=3, connect_timeout=2, read_timeout=20)
    return Harness(kind, tier, _s3_leftovers(server.client(), bucket, prefix))


@pytest.fixture(params=BACKENDS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = _harness(request.param, request, tmp_path)
    yield harness
    harness.tier.close()


def where_of(tier: Tier) -> str:
    """How a backend's messages name the place it keeps packs."""
    if isinstance(tier, S3Tier):
        return tier.where          # s3://bucket/prefix/ at endpoint
    if isinstance(tier, LocalTier):
        return str(tier.root)
    raise AssertionError(f"no where_of for {tier!r}")


def read_all(f: PackFile) -> bytes:
    return f.read_at(0, f.size())


def stored(tier: Tier) -> dict[str, int]:
    return {p.name: p.size for p in tier.list()}


# -- conformance: every backend ------------------------------------------------------------------------


def test_is_a_tier(h: Harness) -> None:
    assert isinstance(h.tier, Tier)
    assert h.tier.kind == h.kind and h.tier.name == "conf"


@pytest.mark.parametrize("size", [1, 4097, PART, PART + 1, 2 * PART + 12_345],
                         ids=["1B", "4097B", "part", "part+1", "3parts"])
def test_store_and_read_back(h: Harness, size: int) -> None:
    name, data = new_pack(), data_of(size)
    h.tier.store(name, pieces(data), size)
    assert h.tier.size_of(name) == size
    with h.tier.reader(name) as f:
        assert isinstance(f, PackFile)
        assert f.name == name and f.size() == size
        assert read_all(f) == data
        assert f.read_at(size - 1, 1) == data[-1:]
    assert stored(h.tier) == {name: size}
    assert h.leftovers() == []


def test_store_takes_bytes_and_one_piece(h: Harness) -> None:
    name, data = new_pack(), data_of(PART + 100)
    h.tier.store(name, [data], len(data))
    with h.tier.reader(name) as f:
        assert read_all(f) == data


@pytest.fixture
def packed(h: Harness) -> tuple[Harness, str, bytes]:
    name, data = new_pack(), data_of(100 * KiB + 3)
    h.tier.store(name, pieces(data, (4096, 1000)), len(data))
    return h, name, data


@settings(max_examples=30)
@given(offset=st.integers(0, 100 * KiB + 200), length=st.integers(0, 40_000))
def test_read_at_any_offset_and_length(packed: tuple[Harness, str, bytes], offset: int, length: int) -> None:
    h, name, data = packed
    with h.tier.reader(name) as f:
        assert f.read_at(offset, length) == data[offset:offset + length]


def test_reads_past_the_end_are_short_like_pread(packed: tuple[Harness, str, bytes]) -> None:
    h, name, data = packed
    size = len(data)
    with h.tier.reader(name) as f:
        assert f.read_at(size - 3, 10) == data[-3:]      # runs past the end: the bytes up to it
        assert f.read_at(size, 10) == b""                # starts at the end
        assert f.read_at(size + 1000, 1) == b""          # starts past it
        assert f.read_at(0, 0) == b""
        assert f.read_at(0, size + 5) == data


def test_size_list_and_remove(h: Harness) -> None:
    a, b = new_pack(), new_pack()
    assert h.tier.size_of(a) is None
    assert list(h.tier.list()) == []
    h.tier.store(a, [b"x" * 10], 10)
    h.tier.store(b, pieces(data_of(PART + 7)), PART + 7)
    assert sorted(h.tier.list(), key=lambda p: p.name) == sorted([StoredPack(a, 10), StoredPack(b, PART + 7)],
                                                                 key=lambda p: p.name)
    h.tier.remove(a)
    assert h.tier.size_of(a) is None
    assert stored(h.tier) == {b: PART + 7}
    h.tier.remove(a)                                     # idempotent
    h.tier.remove(new_pack())                            # never stored
    h.tier.remove(b)
    assert stored(h.tier) == {}


def test_many_packs_are_all_listed(h: Harness) -> None:
    names = {new_pack(): n + 1 for n in range(40)}
    for name, size in names.items():
        h.tier.store(name, [data_of(size)], size)
    assert stored(h.tier) == names


@pytest.mark.parametrize(("first", "second"), [(100, 5000), (2 * PART + 1, 10), (10, PART + 1)],
                         ids=["small-small", "multipart-small", "small-multipart"])
def test_store_replaces_an_existing_pack(h: Harness, first: int, second: int) -> None:
    name = new_pack()
    h.tier.store(name, pieces(data_of(first)), first)
    with h.tier.reader(name) as f:
        assert f.read_at(0, 10) == data_of(first)[:10]
    new = data_of(second, seed=1)
    h.tier.store(name, pieces(new), second)
    assert h.tier.size_of(name) == second
    with h.tier.reader(name) as f:
        assert f.size() == second and read_all(f) == new
    assert stored(h.tier) == {name: second}
    assert h.leftovers() == []


@pytest.mark.parametrize("size", [1000, 2 * PART + 3], ids=["small", "multipart"])
@pytest.mark.parametrize("delta", [-1, +1, -900, "many"], ids=["1-short", "1-over", "900-short", "far-over"])
def test_wrong_byte_count_stores_nothing(h: Harness, size: int, delta: int | str) -> None:
    n = 3 * size if delta == "many" else size + int(delta)
    name = new_pack()
    with pytest.raises(InvalidInputError, match=name):
        h.tier.store(name, pieces(data_of(n)), size)
    assert h.tier.size_of(name) is None
    assert stored(h.tier) == {}
    assert h.leftovers() == []
    with pytest.raises(IntegrityError):
        h.tier.reader(name)


def test_wrong_byte_count_keeps_the_pack_it_would_replace(h: Harness) -> None:
    name, data = new_pack(), data_of(3000)
    h.tier.store(name, [data], 3000)
    with pytest.raises(InvalidInputError):
        h.tier.store(name, pieces(data_of(PART + 10)), PART + 11)
    with h.tier.reader(name) as f:
        assert read_all(f) == data
    assert h.leftovers() == []


class Boom(Exception):
    pass


@pytest.mark.parametrize("size", [1000, 3 * PART], ids=["small", "multipart"])
def test_pieces_that_fail_halfway_store_nothing(h: Harness, size: int) -> None:
    data = data_of(size)

    def failing() -> Iterator[memoryview]:
        for i, piece in enumerate(pieces(data, (size // 10 + 1,))):
            if i == 5:  # past the first part of a multipart upload, mid-way through a small pack
                raise Boom("the source broke")
            yield piece

    name = new_pack()
    with pytest.raises(Boom):
        h.tier.store(name, failing(), size)
    assert h.tier.size_of(name) is None
    assert stored(h.tier) == {}
    assert h.leftovers() == []


def test_missing_pack_is_an_integrity_error_naming_it(h: Harness) -> None:
    name = new_pack()
    with pytest.raises(IntegrityError, match=name) as err:
        h.tier.reader(name)
    assert err.value.pack == name
    assert where_of(h.tier) in str(err.value)


def test_concurrent_readers(h: Harness) -> None:
    names = [new_pack() for _ in range(3)]
    datas = {name: data_of(64 * KiB + i, seed=i) for i, name in enumerate(names)}
    for name, data in datas.items():
        h.tier.store(name, pieces(data, (5000, 3)), len(data))
    shared = {name: h.tier.reader(name) for name in names}

    def work(seed: int) -> int:
        rng = random.Random(seed)
        checked = 0
        for _ in range(12):
            name = rng.choice(names)
            data = datas[name]
            off, n = rng.randrange(len(data) + 10), rng.randrange(1, 9000)
            if rng.random() < 0.5:
                got = shared[name].read_at(off, n)
            else:
                with h.tier.reader(name) as f:
                    got = f.read_at(off, n)
            assert got == data[off:off + n]
            checked += 1
        return checked

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(work, range(16))) == 16 * 12
    for f in shared.values():
        f.close()


# -- S3 only ------------------------------------------------------------------------------------------


@pytest.fixture
def s3(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = _harness("s3", request, tmp_path)
    yield harness
    harness.tier.close()


def _count_calls(tier: S3Tier, *operations: str) -> dict[str, list[dict[str, Any]]]:
    """Record every call of each operation the tier's client makes from now on: its parameters, with
    ``body_len`` the length of its body when it is made (the tier reuses one part buffer)."""
    seen: dict[str, list[dict[str, Any]]] = {op: [] for op in operations}
    for op in operations:
        def hook(params: dict[str, Any], _op: str = op, **_: Any) -> None:
            body = params.get("body")
            seen[_op].append({**params, "body_len": None if body is None else len(body)})
        tier.client.meta.events.register(f"before-call.s3.{op}", hook)
    return seen


def test_s3_large_pack_goes_up_in_bounded_parts(s3: Harness, s3_server: S3Server) -> None:
    tier = s3.tier
    assert isinstance(tier, S3Tier)
    size = 3 * PART + 1234
    name, data = new_pack(), data_of(size)
    calls = _count_calls(tier, "PutObject", "UploadPart", "CompleteMultipartUpload")
    tracemalloc.start()
    try:
        tier.store(name, pieces(data), size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert calls["PutObject"] == []
    assert [p["body_len"] for p in calls["UploadPart"]] == [PART, PART, PART, 1234]
    assert len(calls["CompleteMultipartUpload"]) == 1
    assert peak < 2.5 * PART, f"store of a {size}-byte pack peaked at {peak} bytes of Python memory"
    head = s3_server.client().head_object(Bucket=tier.bucket, Key=tier.key(name))
    assert head["ContentLength"] == size and head["ETag"].strip('"').endswith("-4")
    with tier.reader(name) as f:
        assert read_all(f) == data


def test_s3_small_pack_is_one_put(s3: Harness) -> None:
    tier = s3.tier
    assert isinstance(tier, S3Tier)
    calls = _count_calls(tier, "PutObject", "CreateMultipartUpload", "HeadObject")
    tier.store(new_pack(), pieces(data_of(PART)), PART)
    assert len(calls["PutObject"]) == 1 and calls["CreateMultipartUpload"] == []
    assert len(calls["HeadObject"]) == 1                    # the check of the stored size


def test_s3_keys_fan_out_like_local(s3: Harness, s3_server: S3Server) -> None:
    tier = s3.tier
    assert isinstance(tier, S3Tier)
    name = new_pack()
    tier.store(name, [b"abc"], 3)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=tier.bucket)["Contents"]
            if o["Key"].startswith(tier.prefix)]
    assert keys == [f"{tier.prefix}{name[:2]}/{name}.pack"]


def test_s3_ranged_read_fetches_only_the_range(s3: Harness) -> None:
    tier = s3.tier
    assert isinstance(tier, S3Tier)
    size = 2 * PART
    name, data = new_pack(), data_of(size)
    tier.store(name, pieces(data), size)
    ranges: list[str] = []
    received: list[int] = []
    tier.client.meta.events.register("before-send.s3.GetObject",
                                      lambda request, **_: ranges.append(request.headers["Range"].decode()))
    tier.client.meta.events.register("after-call.s3.GetObject",
                                     lambda parsed, **_: received.append(int(parsed["ContentLength"])))
    calls = _count_calls(tier, "HeadObject")
    with tier.reader(name) as f:
        assert f.read_at(PART - 50, 100) == data[PART - 50:PART + 50]
        assert f.read_at(size - 10, 1000) == data[-10:]
        assert f.read_at(size, 1000) == b""                 # nothing to fetch: no request
        assert f.size() == size
    assert ranges == [f"bytes={PART - 50}-{PART + 49}", f"bytes={size - 10}-{size - 1}"]
    assert received == [100, 10]
    assert len(calls["HeadObject"]) == 1                    # one HEAD per reader, for the size


def test_s3_list_pages_and_ignores_other_keys(s3: Harness, s3_server: S3Server) -> None:
    tier = s3.tier
    assert isinstance(tier, S3Tier)
    names = {new_pack(): 1 for _ in range(5)}
    for name in names:
        tier.store(name, [b"z"], 1)
    client = s3_server.client()
    for junk in ("notes.txt", "ab/short.pack", f"zz/{new_pack()}.pack", f"{new_pack()}.pack"):
        client.put_object(Bucket=tier.bucket, Key=tier.prefix + junk, Body=b"junk")
    calls = _count_calls(tier, "ListObjectsV2")
    tier.client.meta.events.register("provide-client-params.s3.ListObjectsV2",
                                     lambda params, **_: params.update(MaxKeys=2))
    assert stored(tier) == names
    assert len(calls["ListObjectsV2"]) == 5                 # 9 keys, 2 a page


def test_s3_pack_names_are_checked(s3: Harness) -> None:
    for bad in ("ABCDEF" * 6, "../" + "0" * 29, "0" * 31, ""):
        with pytest.raises(InvalidInputError):
            s3.tier.size_of(bad)
        with pytest.raises(InvalidInputError):
            s3.tier.store(bad, [b"x"], 1)


def _dummy_session() -> Any:
    return boto3.session.Session(aws_access_key_id="nobody", aws_secret_access_key="nothing",
                                 region_name="us-east-1")


def _all_operations(tier: S3Tier) -> list[Callable[[], object]]:
    name = new_pack()
    return [lambda: tier.size_of(name), lambda: tier.reader(name), lambda: tier.store(name, [b"x"], 1),
            lambda: tier.store(name, pieces(data_of(PART + 1)), PART + 1), lambda: list(tier.list()),
            lambda: tier.remove(name)]


def test_s3_refused_connection_is_transient() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))   # bound, never listening: connections are refused, nobody takes it
        port = closed.getsockname()[1]
        tier = S3Tier("cold", bucket="packs", endpoint_url=f"http://127.0.0.1:{port}",
                      session=_dummy_session(), max_attempts=2, connect_timeout=1, read_timeout=1)
        started = time.monotonic()
        for op in _all_operations(tier):
            with pytest.raises(StorageError, match="did not answer") as err:
                op()
            assert err.value.transient, str(err.value)
        tier.close()
    assert time.monotonic() - started < 10


def test_s3_timeout_is_transient() -> None:
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)                 # accepts connections (the kernel does) but never answers
        tier = S3Tier("cold", bucket="packs", endpoint_url=f"http://127.0.0.1:{hole.getsockname()[1]}",
                      session=_dummy_session(), max_attempts=1, connect_timeout=0.5, read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(StorageError) as err:
            tier.size_of(new_pack())
        assert err.value.transient and "did not answer" in str(err.value)
        tier.close()
    assert time.monotonic() - started < 5


def test_s3_wrong_secret_is_permanent(s3_server: S3Server, s3_bucket: str) -> None:
    tier = S3Tier("cold", bucket=s3_bucket, prefix="wrong-secret/", endpoint_url=s3_server.endpoint_url,
                  session=s3_server.session(secret_key="not-the-secret"), max_attempts=2)
    for op in _all_operations(tier):
        with pytest.raises(StorageError, match="credentials") as err:
            op()
        assert not err.value.transient, str(err.value)
    tier.close()


def test_s3_missing_bucket_is_permanent(s3_server: S3Server) -> None:
    tier = S3Tier("cold", bucket=f"never-made-{uuid.uuid4().hex[:12]}", endpoint_url=s3_server.endpoint_url,
                  session=s3_server.session(), max_attempts=2)
    for op in _all_operations(tier):
        with pytest.raises(StorageError, match=f"bucket {tier.bucket} does not exist") as err:
            op()
        assert not err.value.transient, str(err.value)
    tier.close()


def test_s3_from_config() -> None:
    tier = S3Tier.from_config("cold", {"bucket": "archive-cold", "prefix": "site-a", "part_size": "64MiB",
                                       "endpoint_url": "http://127.0.0.1:1", "region": "eu-west-2",
                                       "max_attempts": 3}, session=_dummy_session())
    assert (tier.name, tier.bucket, tier.prefix, tier.part_size, tier.max_attempts) == \
        ("cold", "archive-cold", "site-a/", 64 * MiB, 3)
    assert tier.client.meta.region_name == "eu-west-2"
    tier.close()
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "needs bucket"),
        ({"bucket": "b" * 70}, "bucket"),
        ({"bucket": "ok-bucket", "colour": "blue"}, r"unknown keys \['colour'\]"),
        ({"bucket": "ok-bucket", "secret_access_key": "x"}, "credentials are not taken from the config"),
        ({"bucket": "ok-bucket", "part_size": "1MiB"}, "part_size must be between 5MiB and 5GiB"),
        ({"bucket": "ok-bucket", "part_size": "lots"}, "size 'lots' is not understood"),
        ({"bucket": "ok-bucket", "endpoint_url": "127.0.0.1:8333"}, "http:// or https://"),
        ({"bucket": "ok-bucket", "prefix": "/abs"}, "no leading '/'"),
        ({"bucket": "ok-bucket", "max_attempts": 0}, "max_attempts must be 1..20"),
        ({"bucket": "ok-bucket", "max_attempts": "3"}, "max_attempts must be a whole number"),
        ({"bucket": 5}, "bucket must be a string"),
        ({"bucket": "ok-bucket", "kind": "local"}, "not 's3'"),
    ]
    for options, message in bad:
        with pytest.raises(InvalidInputError, match=message):
            S3Tier.from_config("cold", options, session=_dummy_session())

