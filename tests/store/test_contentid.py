"""The native BLAKE3 (content ids): it is the compiled one and gives the blake3 package's digests."""

from __future__ import annotations

import os
import threading

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarchive._native import contentid
from mmarchive.store.chunks import content_id, content_ids

# BLAKE3 works in 1 KiB chunks and SIMD batches of up to 16 of them: lengths on both sides of each
# boundary, and the size where the GIL is let go.
EDGES = sorted({0, 1, 63, 64, 65, *(k * 1024 + d for k in (1, 2, 3, 4, 8, 15, 16, 17, 32, 64)
                                     for d in (-1, 0, 1)),
                contentid.GIL_FREE_FROM - 1, contentid.GIL_FREE_FROM, 1 << 20, 3_000_001})


def test_installed_package_uses_compiled_blake3() -> None:
    assert contentid.__file__ is not None and contentid.__file__.endswith(".so"), contentid.__file__
    assert contentid.c_version() == "1.3.3"


def test_known_digest() -> None:
    # The BLAKE3 digest of the empty input, from the BLAKE3 specification's test vectors.
    assert contentid.blake3_256(b"").hex() == (
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")


def test_every_boundary_matches_the_reference() -> None:
    data = os.urandom(max(EDGES))
    for n in EDGES:
        want = blake3.blake3(data[:n]).digest()
        assert contentid.blake3_256(data[:n]) == want, n
        assert content_id(data[:n]) == want, n


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=20_000), st.sampled_from([bytes, bytearray, memoryview]))
def test_any_input_matches_the_reference(data: bytes, kind: type) -> None:
    assert contentid.blake3_256(kind(data)) == blake3.blake3(data).digest()


def test_a_slice_of_a_larger_buffer() -> None:
    data = os.urandom(10_000)
    view = memoryview(data)[1234:5678]
    assert contentid.blake3_256(view) == blake3.blake3(bytes(view)).digest()


def test_threads_hash_large_inputs_at_once() -> None:
    """Inputs from GIL_FREE_FROM up are hashed without the GIL: threads give the right digests."""
    inputs = [os.urandom(contentid.GIL_FREE_FROM * 4 + i) for i in range(8)]
    got: dict[int, bytes] = {}

    def work(i: int) -> None:
        got[i] = contentid.blake3_256(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {i: blake3.blake3(d).digest() for i, d in enumerate(inputs)}


@given(st.lists(st.binary(max_size=5000), max_size=40), st.sampled_from([bytes, bytearray, memoryview]))
def test_a_batch_matches_the_reference_item_by_item(datas: list[bytes], kind: type) -> None:
    items = [kind(d) for d in datas]
    assert content_ids(items) == [blake3.blake3(d).digest() for d in datas]


def test_a_batch_large_enough_to_let_the_gil_go() -> None:
    datas = [os.urandom(4096) for _ in range(40)] + [os.urandom(200_000)]  # over GIL_FREE_FROM in all
    views: list[bytes | bytearray | memoryview] = [memoryview(d)[1:] for d in datas]
    assert contentid.blake3_256_many(views) == [blake3.blake3(v).digest() for v in views]


def test_a_batch_refuses_what_is_not_bytes_and_releases_what_it_took() -> None:
    data = bytearray(b"abc")
    with pytest.raises(TypeError):
        contentid.blake3_256_many([data, "text"])  # type: ignore[list-item]
    data.extend(b"more")  # a buffer still held would refuse to resize
