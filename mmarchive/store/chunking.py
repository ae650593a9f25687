"""Content-defined chunking of large objects, driving the native gear-hash cut finder.

:class:`Chunker` holds the cut parameters from the archive config and cuts either a buffer already in
memory (:meth:`Chunker.cut_buffer`) or a stream read piece by piece (:meth:`Chunker.cut_stream`, which
keeps a few MiB in memory). The per-byte loop is native (``native/gearcdc.pyx``);
this module only moves buffers.
"""

from __future__ import annotations

from collections.abc import Iterator

from mmarchive._native import gearcdc
from mmarchive.config import StoreConfig
from mmarchive.store.sources import ByteStream


class Chunker:
    """Cuts bytes at content-defined boundaries (FastCDC-style normalized chunking, level 1)."""

    def __init__(self, cfg: StoreConfig) -> None:
        self.min_size = cfg.chunk_min
        self.avg_size = cfg.chunk_avg
        self.max_size = cfg.chunk_max
        bits = self.avg_size.bit_length() - 1
        self.mask_hard = gearcdc.high_mask(bits + 1)
        self.mask_easy = gearcdc.high_mask(bits - 1)

    def cut(self, data: bytes | bytearray | memoryview) -> int:
        """Return the length of the chunk at the start of ``data`` (see gearcdc.find_cut)."""
        return int(gearcdc.find_cut(data, self.min_size, self.avg_size, self.max_size,
                                    self.mask_hard, self.mask_easy))

    def cut_buffer(self, data: memoryview) -> Iterator[memoryview]:
        pos = 0
        n = len(data)
        while pos < n:
            length = self.cut(data[pos:])
            yield data[pos:pos + length]
            pos += length

    def cut_stream(self, stream: ByteStream, head: bytes = b"") -> Iterator[bytes]:
        """Yield the chunks of ``head`` followed by the rest of ``stream``.

        Each chunk is a copy of its own, so that a chunk still being hashed or compressed does not
        keep a whole read buffer alive: memory stays at a few chunks, whatever the object size.
        """
        data = bytes(head)
        pos = 0
        eof = False
        read_size = max(self.max_size, 4 * 1024 * 1024)
        while True:
            if not eof and len(data) - pos < self.max_size:
                parts = [data[pos:]] if pos < len(data) else []
                have = len(data) - pos
                while not eof and have < self.max_size + read_size:
                    piece = stream.read(read_size)
                    if piece:
                        parts.append(piece)
                        have += len(piece)
                    else:
                        eof = True
                data = b"".join(parts)
                pos = 0
            if pos >= len(data):
                return
            with memoryview(data) as whole:
                view = whole[pos:]
                length = self.cut(view)
                chunk = bytes(view[:length])
                view.release()
            yield chunk
            pos += length
