"""Plain-Python reference of the gear-hash chunker in native/gearcdc.pyx, for parity tests only.

Written from the description in docs/format.md, not from the Cython source: the same splitmix64 gear table,
the same cut rule. It is about a hundred times slower than the native code and never used by the package.
"""

from __future__ import annotations

MASK64 = (1 << 64) - 1
GEAR_SEED = int.from_bytes(b"mmarchiv", "big")


def splitmix64_table(seed: int = GEAR_SEED, n: int = 256) -> list[int]:
    out = []
    state = seed
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out


GEAR = splitmix64_table()


def high_mask(bits: int) -> int:
    return (((1 << bits) - 1) << (64 - bits)) & MASK64


def find_cut(data: bytes, min_size: int, avg_size: int, max_size: int, mask_hard: int,
             mask_easy: int) -> int:
    n = len(data)
    if n <= min_size:
        return n
    end = min(n, max_size)
    normal = min(avg_size, end)
    h = 0
    for i in range(min_size, end):
        h = ((h << 1) + GEAR[data[i]]) & MASK64
        if (h & (mask_hard if i < normal else mask_easy)) == 0:
            return i + 1
    return end


def cut_all(data: bytes, min_size: int, avg_size: int, max_size: int) -> list[int]:
    bits = avg_size.bit_length() - 1
    hard, easy = high_mask(bits + 1), high_mask(bits - 1)
    lengths = []
    pos = 0
    while pos < len(data):
        n = find_cut(data[pos:], min_size, avg_size, max_size, hard, easy)
        lengths.append(n)
        pos += n
    return lengths
