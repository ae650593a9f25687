# cython: language_level=3
"""Content-defined chunking with a gear rolling hash (FastCDC-style normalized chunking).

This is the per-byte loop of the store: it finds where a chunk ends so that an edit inside a large object
moves only the cut points near the edit. The gear table and the cut rule are part of what makes chunk
boundaries stable across versions; change them and old data no longer deduplicates against new data
(old data stays readable: chunk boundaries are recorded, not recomputed). The plain-Python reference in
tests/store/cdc_reference.py must give the same cuts for every input.
"""

from libc.stdint cimport uint8_t, uint64_t

#: Seed of the splitmix64 sequence that fills the gear table ("mmarchiv" in ASCII).
GEAR_SEED = 0x6D6D617263686976

cdef uint64_t _GEAR[256]


cdef inline uint64_t _splitmix64_next(uint64_t *state) noexcept nogil:
    cdef uint64_t z
    state[0] += <uint64_t>0x9E3779B97F4A7C15
    z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef void _fill_gear() noexcept:
    cdef uint64_t state = <uint64_t>GEAR_SEED
    cdef int i
    for i in range(256):
        _GEAR[i] = _splitmix64_next(&state)


_fill_gear()


def gear_table():
    """Return the 256 gear values as a list of ints (for parity tests and documentation)."""
    return [_GEAR[i] for i in range(256)]


def high_mask(int bits):
    """Return a 64-bit mask of the ``bits`` most significant bits (those that see the last 64 bytes)."""
    if bits <= 0:
        return 0
    if bits >= 64:
        return 0xFFFFFFFFFFFFFFFF
    cdef uint64_t ones = (<uint64_t>1 << bits) - 1
    return ones << (64 - bits)


cpdef Py_ssize_t find_cut(const uint8_t[::1] data, Py_ssize_t min_size, Py_ssize_t avg_size,
                          Py_ssize_t max_size, uint64_t mask_hard, uint64_t mask_easy) noexcept:
    """Return the length of the chunk that starts at ``data[0]``.

    Bytes before ``min_size`` are skipped; up to ``avg_size`` a cut needs ``h & mask_hard == 0``, after
    it ``h & mask_easy == 0``; at ``max_size`` the chunk is cut regardless. When no cut is found and the
    data is shorter than ``max_size`` the whole length is returned: callers pass at least ``max_size``
    bytes unless they are at the end of the stream.
    """
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t end, normal, i
    cdef uint64_t h = 0
    if n <= min_size:
        return n
    end = n if n < max_size else max_size
    normal = avg_size if avg_size < end else end
    i = min_size
    with nogil:
        while i < normal:
            h = (h << 1) + _GEAR[data[i]]
            if (h & mask_hard) == 0:
                return i + 1
            i += 1
        while i < end:
            h = (h << 1) + _GEAR[data[i]]
            if (h & mask_easy) == 0:
                return i + 1
            i += 1
    return end
