# cython: language_level=3
"""BLAKE3-256 content ids in C, keeping the GIL for small inputs.

Every chunk and object is named by the BLAKE3-256 of its bytes. The ``blake3`` binding lets the GIL go for
every update of 2 KiB or more; for a 4 KiB object, taking it back while another thread runs Python costs
more than the hash, and feeding the binding pieces under 2 KiB (to keep the GIL) loses its SIMD speed. This
module hashes with the official C implementation (``native/blake3/``, the SIMD code chosen at run time) in
one call, and lets the GIL go only for inputs of ``GIL_FREE_FROM`` bytes or more. The ``blake3`` package
stays the reference: tests/store/test_contentid.py compares the two on every kind of input.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t


cdef extern from "blake3.h":
    ctypedef struct blake3_hasher:
        pass
    void blake3_hasher_init(blake3_hasher *self) nogil
    void blake3_hasher_update(blake3_hasher *self, const void *input, size_t input_len) nogil
    void blake3_hasher_finalize(const blake3_hasher *self, uint8_t *out, size_t out_len) nogil
    const char *blake3_version()


#: Inputs this large are hashed without the GIL (below it, the hash is cheaper than a GIL hand-off).
GIL_FREE_FROM = 64 * 1024
DIGEST_SIZE = 32


def blake3_256(data) -> bytes:
    """The 32-byte BLAKE3 digest of a contiguous bytes-like object."""
    cdef Py_buffer view
    cdef blake3_hasher hasher
    cdef uint8_t out[32]
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        blake3_hasher_init(&hasher)
        if view.len >= GIL_FREE_FROM:
            with nogil:
                blake3_hasher_update(&hasher, view.buf, <size_t>view.len)
        else:
            blake3_hasher_update(&hasher, view.buf, <size_t>view.len)
        blake3_hasher_finalize(&hasher, out, 32)
    finally:
        PyBuffer_Release(&view)
    return PyBytes_FromStringAndSize(<char *>out, 32)


cdef void _hash_each(Py_buffer *views, Py_ssize_t n, uint8_t *out) noexcept nogil:
    cdef blake3_hasher hasher
    cdef Py_ssize_t i
    for i in range(n):
        blake3_hasher_init(&hasher)
        blake3_hasher_update(&hasher, views[i].buf, <size_t>views[i].len)
        blake3_hasher_finalize(&hasher, out + 32 * i, 32)


def blake3_256_many(list items) -> list:
    """:func:`blake3_256` of every item of a list of contiguous bytes-like objects, in one call.

    The GIL is let go for the whole batch when it holds ``GIL_FREE_FROM`` bytes or more in all: a batch
    of small records is worth the hand-off that one small record is not, and another thread (the
    commit) runs Python meanwhile.
    """
    cdef Py_ssize_t n = len(items), i, held = 0
    cdef size_t total = 0
    cdef Py_buffer *views = <Py_buffer *>PyMem_Malloc(max(n, 1) * sizeof(Py_buffer))
    cdef uint8_t *out = <uint8_t *>PyMem_Malloc(max(n, 1) * 32)
    if views == NULL or out == NULL:
        PyMem_Free(views)
        PyMem_Free(out)
        raise MemoryError()
    try:
        for i in range(n):
            PyObject_GetBuffer(items[i], &views[i], PyBUF_SIMPLE)
            held += 1
            total += <size_t>views[i].len
        if total >= GIL_FREE_FROM:
            with nogil:
                _hash_each(views, n, out)
        else:
            _hash_each(views, n, out)
        return [PyBytes_FromStringAndSize(<char *>out + 32 * i, 32) for i in range(n)]
    finally:
        for i in range(held):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
        PyMem_Free(out)


def c_version() -> str:
    """The version of the vendored BLAKE3 C implementation."""
    return blake3_version().decode()
