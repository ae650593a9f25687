# cython: language_level=3
"""Byte shuffle of 16-bit data: split the words into a plane of low bytes and a plane of high bytes.

A per-byte loop on both the write path (before zstd) and the read path (after it); in C the compiler turns
these loops into vector shuffles. The plain-Python reference (``data[0::2] + data[1::2]``) in
tests/store/test_codec.py must give the same bytes for every input.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t


cdef void _shuffle(const uint8_t *data, uint8_t *o, Py_ssize_t n) noexcept nogil:
    """The low bytes of ``data``'s ``n // 2`` words to ``o``, then the high bytes, then an odd last byte."""
    cdef Py_ssize_t half = n // 2
    cdef Py_ssize_t i
    for i in range(half):
        o[i] = data[2 * i]
        o[half + i] = data[2 * i + 1]
    if n & 1:
        o[n - 1] = data[n - 1]


def shuffle2(const uint8_t[::1] data not None):
    """Return all low bytes of the 16-bit words, then all high bytes (an odd last byte stays last)."""
    cdef Py_ssize_t n = data.shape[0]
    out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    if n:
        with nogil:
            _shuffle(&data[0], o, n)
    return out


def shuffle2_into(const uint8_t[::1] data not None, uint8_t[::1] out not None):
    """:func:`shuffle2` of ``data`` into the start of ``out`` (at least as long); return the length.

    For a caller that shuffles many records into one reused buffer: a new 512 KiB ``bytes`` per
    record costs fresh pages, and on some machines faulting them in costs more than the shuffle.
    """
    cdef Py_ssize_t n = data.shape[0]
    if out.shape[0] < n:
        raise ValueError(f"shuffle2_into: the output holds {out.shape[0]} bytes, the input has {n}")
    if n:
        with nogil:
            _shuffle(&data[0], &out[0], n)
    return n


def unshuffle2(const uint8_t[::1] data not None):
    """Invert :func:`shuffle2`."""
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t half = n // 2
    cdef Py_ssize_t i
    out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    with nogil:
        for i in range(half):
            o[2 * i] = data[i]
            o[2 * i + 1] = data[half + i]
        if n & 1:
            o[n - 1] = data[n - 1]
    return out
