"""Record codecs: raw, zstd, and 16-bit byte-shuffle + zstd; the choice of one per record.

Compression is used when it pays. In ``auto`` mode a record of 128 KiB or more is first judged on samples:
incompressible data (JPEG, JPEG 2000, MP4, encrypted) is stored raw at the cost of compressing a few small
samples, and 16-bit data (CT, MR pixels) gets the byte shuffle when it beats plain zstd. Every zstd frame
carries its content checksum, so decoding also verifies the plaintext. Compressor objects are per thread
(zstd contexts are not thread-safe); the work itself runs without the GIL. The byte shuffle is native
(``native/byteshuffle.pyx``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import zstandard

from mmarchive._native.byteshuffle import shuffle2, shuffle2_into, unshuffle2
from mmarchive.errors import IntegrityError
from mmarchive.pack.format import Codec
from mmarchive.store.sources import ObjectBytes

_SAMPLE = 8 * 1024
_SAMPLED_FROM = 128 * 1024
_MIN_COMPRESS = 64
_KEEP_IF_BELOW = 0.97  # keep a compressed form only if it saves at least 3%
#: Codecs as plain ints for the per-record path (an IntEnum member in a tuple keeps it tracked by the GC).
_RAW, _ZSTD = int(Codec.RAW), int(Codec.ZSTD)


class CodecSet:
    """Encodes and decodes records for one archive's compression settings (thread-safe)."""

    def __init__(self, mode: str, level: int) -> None:
        self.mode = mode
        self.level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self.level, write_checksum=True,
                                                         write_content_size=True)
            self._local.probe = zstandard.ZstdCompressor(level=1)
        return c

    def _shuffled(self, data: bytes | bytearray | memoryview) -> memoryview:
        """``data`` byte-shuffled into this thread's reused buffer (valid until its next call)."""
        buffer: bytearray | None = getattr(self._local, "shuffle_buffer", None)
        if buffer is None or len(buffer) < len(data):
            buffer = self._local.shuffle_buffer = bytearray(len(data))
        return memoryview(buffer)[:shuffle2_into(data, buffer)]

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def encode(self, data: bytes | bytearray | memoryview) -> tuple[int, bytes | bytearray | memoryview]:
        """Return (codec, stored bytes) for one record's plaintext."""
        n = len(data)
        if self.mode == "none" or n < _MIN_COMPRESS:
            return Codec.RAW, data
        comp = self._compressor()
        codec = Codec.ZSTD
        if n >= _SAMPLED_FROM and self.mode == "auto":
            # Judge on one 8 KiB sample from the middle (the start of a file is often a header): two
            # level-1 probes cost about 5% of compressing a 512 KiB CT slice at level 3.
            probe: zstandard.ZstdCompressor = self._local.probe
            mid = (n // 2) & ~1
            sample = bytes(memoryview(data)[mid:mid + _SAMPLE])
            plain = len(probe.compress(sample))
            shuffled = len(probe.compress(shuffle2(sample)))
            if shuffled < plain * 0.95:
                codec, plain = Codec.ZSTD_SHUFFLE2, shuffled
            if plain >= len(sample) * _KEEP_IF_BELOW:
                return Codec.RAW, data
        stored = comp.compress(self._shuffled(data) if codec == Codec.ZSTD_SHUFFLE2 else data)
        if len(stored) >= n * _KEEP_IF_BELOW:
            return Codec.RAW, data
        return codec, stored

    def encode_small_many(self, datas: Sequence[ObjectBytes]) -> list[tuple[int, bytes | memoryview]]:
        """Like :meth:`encode` for many records each under 128 KiB, in one call free of the GIL.

        zstd compresses the whole batch in one C call (the same frames :meth:`encode` writes), so a
        worker thread compressing small records does not wait for the GIL between records.
        """
        if self.mode == "none":
            return [(_RAW, d) for d in datas]
        assert all(len(d) < _SAMPLED_FROM for d in datas)
        worth: list[bytes | bytearray | memoryview] = [d for d in datas if len(d) >= _MIN_COMPRESS]
        frames = iter(self._compressor().multi_compress_to_buffer(worth, threads=1) if worth else ())
        out: list[tuple[int, bytes | memoryview]] = []
        for d in datas:
            if len(d) < _MIN_COMPRESS:
                out.append((_RAW, d))
                continue
            frame = next(frames)
            if len(frame) >= len(d) * _KEEP_IF_BELOW:
                out.append((_RAW, d))
            else:
                out.append((_ZSTD, frame.tobytes()))
        return out

    def decode(self, codec: int, stored: bytes, raw_len: int, *, where: str) -> bytes:
        """Return the plaintext of a record; raise IntegrityError if it does not decode exactly."""
        if codec == Codec.RAW:
            if len(stored) != raw_len:
                raise IntegrityError(f"{where}: raw record has {len(stored)} bytes, expected {raw_len}")
            return stored
        try:
            plain = self._decompressor().decompress(stored, max_output_size=raw_len)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{where}: compressed record does not decode ({e})") from e
        if len(plain) != raw_len:
            raise IntegrityError(f"{where}: record decodes to {len(plain)} bytes, expected {raw_len}")
        if codec == Codec.ZSTD_SHUFFLE2:
            return unshuffle2(plain)
        if codec == Codec.ZSTD:
            return plain
        raise IntegrityError(f"{where}: unknown codec {codec}")
