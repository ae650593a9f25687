# cython: language_level=3
"""NamedTuple records built from a tuple of their fields, left to the cyclic GC only when they must be.

CPython stops tracking a plain tuple whose items cannot form a reference cycle (numbers, strings, bytes,
other such tuples) the first time a collection sees it, so that later collections skip it. It does not do
this for instances of tuple subclasses, and every NamedTuple record is one. The write path keeps several
records per object in flight between staging and commit (index entries, record locations, the infos
``put_many`` yields), thousands at a time; the collector then walks them again at every full collection,
which cost about 15% of small-object ingest. ``make_record`` builds the record (as ``tuple.__new__`` does,
without the generated ``__new__``) and untracks it when no item is a container, or a tuple that holds
none: the rule CPython applies to plain tuples, applied at once, to the plain tuples the record holds (two
levels down, enough for a list of chunk references) and to records already untracked.
A record class with a ``__dict__`` is never untracked. tests/test_recordtuple.py compares the records with
those the classes build themselves and checks what is tracked.
"""

from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport (PyTuple_Check, PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE,
                            PyTuple_SET_ITEM)
from cpython.type cimport PyType_IsSubtype


cdef extern from "Python.h":
    bint PyObject_IS_GC(object op)
    int PyObject_GC_IsTracked(object op)
    void PyObject_GC_UnTrack(void *op)


cdef bint _untrack_if_atomic(object t, int depth):
    """Untrack tuple ``t`` if nothing in it can be part of a reference cycle; return whether it is
    untracked now.

    An item is safe when it is not a container, or is a tuple that is untracked (immutable, so it stays
    safe), or is a plain tuple that becomes untracked by this same rule (``depth`` levels down). Any other
    container, even one untracked for now (an empty dict), can come to hold a cycle, as CPython's own
    rule for tuples assumes.
    """
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(t)
    cdef object item
    for i in range(n):
        item = <object>PyTuple_GET_ITEM(t, i)
        if not PyObject_IS_GC(item):
            continue
        if PyTuple_Check(item) and not PyObject_GC_IsTracked(item):
            continue
        if depth == 0 or not PyTuple_CheckExact(item) or not _untrack_if_atomic(item, depth - 1):
            return False
    PyObject_GC_UnTrack(<void *>t)
    return True


ctypedef object (*_alloc_record)(type cls, Py_ssize_t n)

cdef extern from "Python.h":
    # The slots of a type object this module reads (Cython's own declaration leaves them out).
    ctypedef struct _TypeSlots "PyTypeObject":
        void *tp_alloc
        Py_ssize_t tp_dictoffset


def make_record(type cls, tuple values):
    """``cls`` (a NamedTuple class) built from ``values``, all its fields in order; untracked by the GC
    if nothing in it can hold a reference cycle.

    The record is allocated by its class and filled directly (``tuple.__new__`` would first copy
    ``values`` into a tuple of its own).
    """
    if not PyType_IsSubtype(cls, tuple):
        raise TypeError(f"{cls.__name__} is not a tuple type")
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(values)
    record = (<_alloc_record>(<_TypeSlots *>cls).tp_alloc)(cls, n)
    cdef object item
    for i in range(n):
        item = <object>PyTuple_GET_ITEM(values, i)
        Py_INCREF(item)
        PyTuple_SET_ITEM(record, i, item)
    if (<_TypeSlots *>cls).tp_dictoffset == 0:
        _untrack_if_atomic(record, 2)
    return record
