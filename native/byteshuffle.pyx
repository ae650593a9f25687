# cython: language_level=3
"""Byte shuffle of 16-bit data: split the words into a plane of low bytes and a plane of high bytes.

A per-byte loop on both the write path (before zstd) and the read path (after it); in C the compiler turns
these loops into vector shuffles. The plain-Python reference (``data[0::2] + data[1::2]``) in
tests/store/test_codec.py must give the same bytes for every input.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t


def shuffle2(const uint8_t[::1] data not None):
    """Return all low bytes of the 16-bit words, then all high bytes (an odd last byte stays last)."""
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t half = n // 2
    cdef Py_ssize_t i
    out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    with nogil:
        for i in range(half):
            o[i] = data[2 * i]
            o[half + i] = data[2 * i + 1]
        if n & 1:
            o[n - 1] = data[n - 1]
    return out


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
