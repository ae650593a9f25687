"""Content ids: BLAKE3-256 of the bytes, however the hashing is split to keep the GIL."""

from __future__ import annotations

import os

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmarchive.store.chunks import content_id


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 2049, 4096, 32 * 1024, 32 * 1024 + 1, 200_000])
def test_content_id_is_blake3_at_every_edge(size: int) -> None:
    data = os.urandom(size)
    assert content_id(data) == blake3.blake3(data).digest()
    assert content_id(memoryview(data)) == blake3.blake3(data).digest()


@given(st.binary(max_size=40_000))
def test_content_id_is_blake3(data: bytes) -> None:
    assert content_id(data) == blake3.blake3(data).digest()
