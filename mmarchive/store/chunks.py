"""Preparing one chunk record: its content id, its stored form and its checksum.

A chunk's id is the BLAKE3-256 of its plaintext (collision resistant: it alone decides deduplication);
its checksum is the xxh3-64 of the stored bytes (fast: it is checked on every read). Both hashes and the
compression run without the GIL, so the archive can prepare chunks on worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import blake3
import xxhash

from mmarchive._native.contentid import GIL_FREE_FROM, blake3_256, blake3_256_many
from mmarchive.records import tuple_maker
from mmarchive.store.codec import CodecSet
from mmarchive.store.sources import ObjectBytes


class PreparedChunk(NamedTuple):
    id: bytes
    raw_len: int
    codec: int
    stored: bytes | bytearray | memoryview
    checksum: int


# The blake3 binding lets go of the GIL for an update of 2 KiB or more. For a small input, taking the GIL
# back costs more than the hash (while another thread runs Python it can take milliseconds), so inputs under
# the native module's GIL_FREE_FROM are hashed by it in one call with the GIL held (native/contentid.pyx);
# larger ones by the binding, without the GIL (it is also a little faster on them).


def content_id(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of ``data``: the id of a chunk or an object."""
    if len(data) < GIL_FREE_FROM:
        return blake3_256(data)
    return blake3.blake3(data).digest()


def content_ids(datas: list[bytes | bytearray | memoryview]) -> list[bytes]:
    """:func:`content_id` of each of a batch of inputs, in one native call (without the GIL if the
    batch holds ``GIL_FREE_FROM`` bytes or more in all)."""
    return blake3_256_many(datas)


def encode_chunk(codecs: CodecSet, cid: bytes, data: bytes | bytearray | memoryview) -> PreparedChunk:
    """Compress (when it pays) and checksum a chunk whose id is already known."""
    codec, stored = codecs.encode(data)
    return PreparedChunk(id=cid, raw_len=len(data), codec=codec, stored=stored,
                         checksum=xxhash.xxh3_64_intdigest(stored))


_new_chunk = tuple_maker(PreparedChunk)


def encode_small_chunks(codecs: CodecSet, cids: list[bytes],
                        datas: Sequence[ObjectBytes]) -> list[PreparedChunk]:
    """:func:`encode_chunk` for many chunks under 128 KiB, compressed in one GIL-free call."""
    xxh3 = xxhash.xxh3_64_intdigest
    return [_new_chunk((cid, len(data), codec, stored, xxh3(stored)))
            for cid, data, (codec, stored) in zip(cids, datas, codecs.encode_small_many(datas),
                                                  strict=True)]
