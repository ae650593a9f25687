"""Preparing one chunk record: its content id, its stored form and its checksum.

A chunk's id is the BLAKE3-256 of its plaintext (collision resistant: it alone decides deduplication);
its checksum is the xxh3-64 of the stored bytes (fast: it is checked on every read). Both hashes and the
compression run without the GIL, so the archive can prepare chunks on worker threads.
"""

from __future__ import annotations

from typing import NamedTuple

import blake3
import xxhash

from mmarchive.store.codec import CodecSet


class PreparedChunk(NamedTuple):
    id: bytes
    raw_len: int
    codec: int
    stored: bytes | bytearray | memoryview
    checksum: int


def content_id(data: bytes | bytearray | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def encode_chunk(codecs: CodecSet, cid: bytes, data: bytes | bytearray | memoryview) -> PreparedChunk:
    """Compress (when it pays) and checksum a chunk whose id is already known."""
    codec, stored = codecs.encode(data)
    return PreparedChunk(id=cid, raw_len=len(data), codec=codec, stored=stored,
                         checksum=xxhash.xxh3_64_intdigest(stored))
