"""Record codecs: the choice of codec per record, round trips, and refusal of damaged records."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from mmarchive._native.byteshuffle import shuffle2, shuffle2_into, unshuffle2
from mmarchive.errors import IntegrityError
from mmarchive.pack.format import Codec
from mmarchive.store.codec import CodecSet


def ct_like(n_pixels: int = 512 * 512, seed: int = 0) -> bytes:
    """A smooth 16-bit image plus noise: what byte shuffling is for."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:512, 0:512]
    inside = ((x - 256) / 200.0) ** 2 + ((y - 256) / 160.0) ** 2 < 1.0
    body = np.where(inside, 1040 + 60 * np.sin(x / 40.0) + 40 * np.cos(y / 55.0), 24.0)
    img = body.ravel()[:n_pixels] + rng.normal(0, 12, n_pixels)
    return bytes(np.clip(img, 0, 4095).astype("<u2").tobytes())


def test_codec_choice_follows_the_data() -> None:
    codecs = CodecSet("auto", 3)
    assert codecs.encode(os.urandom(300_000))[0] == Codec.RAW  # JPEG/MP4-like: not worth it
    assert codecs.encode(b"line of a report\n" * 20_000)[0] == Codec.ZSTD
    codec, stored = codecs.encode(ct_like())
    assert codec == Codec.ZSTD_SHUFFLE2
    plain_codec, plain = CodecSet("zstd", 3).encode(ct_like())
    assert plain_codec == Codec.ZSTD and len(stored) < 0.9 * len(plain)
    assert codecs.encode(b"tiny")[0] == Codec.RAW
    assert CodecSet("none", 3).encode(b"a" * 100_000)[0] == Codec.RAW
    assert CodecSet("zstd", 3).encode(ct_like())[0] == Codec.ZSTD


def test_installed_package_uses_compiled_shuffle() -> None:
    from mmarchive._native import byteshuffle

    assert byteshuffle.__file__ is not None and byteshuffle.__file__.endswith(".so")


@given(st.binary(max_size=3000))
def test_shuffle_matches_plain_reference(data: bytes) -> None:
    n = len(data) & ~1
    reference = data[0:n:2] + data[1:n:2] + data[n:]
    assert shuffle2(data) == reference
    assert unshuffle2(reference) == data
    # Into a longer buffer holding other bytes: only the first len(data) bytes change.
    out = bytearray(b"\xee" * (len(data) + 5))
    assert shuffle2_into(data, out) == len(data)
    assert out == reference + b"\xee" * 5


def test_shuffle_into_refuses_a_short_buffer() -> None:
    with pytest.raises(ValueError, match="holds 3 bytes, the input has 4"):
        shuffle2_into(b"abcd", bytearray(3))


def test_reused_shuffle_buffer_gives_each_record_its_own_bytes() -> None:
    """A large record, then smaller ones of another content on the same thread (the buffer is reused
    and longer than they are): each encodes to what a fresh shuffle gives and decodes to itself."""
    codecs = CodecSet("auto", 3)
    records = [ct_like(), ct_like(150_000, seed=1), ct_like(100_001, seed=2)]
    for data in records:
        codec, stored = codecs.encode(data)
        assert codec == Codec.ZSTD_SHUFFLE2
        assert zstandard.ZstdDecompressor().decompress(stored) == shuffle2(data)
        assert codecs.decode(codec, bytes(stored), len(data), where="test") == data


@pytest.mark.parametrize("mode", ["auto", "zstd", "none"])
@pytest.mark.parametrize("data", [b"", b"x", b"ab" * 100, os.urandom(200_001), b"q" * 150_001])
def test_roundtrip(mode: str, data: bytes) -> None:
    codecs = CodecSet(mode, 3)
    codec, stored = codecs.encode(data)
    assert codecs.decode(codec, bytes(stored), len(data), where="test") == data


def test_damaged_compressed_record_is_refused() -> None:
    codecs = CodecSet("auto", 3)
    codec, stored = codecs.encode(ct_like(100_000))
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0x40
    with pytest.raises(IntegrityError):
        codecs.decode(codec, bytes(damaged), 200_000, where="pack p")
    with pytest.raises(IntegrityError, match="expected"):
        codecs.decode(codec, bytes(stored), 199_998, where="pack p")
    with pytest.raises(IntegrityError):
        codecs.decode(Codec.RAW, b"abc", 4, where="pack p")


@pytest.mark.parametrize("mode", ["auto", "zstd", "none"])
@given(datas=st.lists(st.one_of(st.binary(max_size=3000),
                                st.binary(min_size=1, max_size=40).map(lambda b: b * 200)),
                      max_size=12))
def test_batch_encoding_of_small_records_matches_one_by_one(mode: str, datas: list[bytes]) -> None:
    codecs = CodecSet(mode, 3)
    views = [memoryview(d) for d in datas]
    batch = codecs.encode_small_many(views)
    one_by_one = [codecs.encode(v) for v in views]
    assert [(c, bytes(s)) for c, s in batch] == [(c, bytes(s)) for c, s in one_by_one]
    for (codec, stored), data in zip(batch, datas, strict=True):
        assert codecs.decode(codec, bytes(stored), len(data), where="test") == data
