"""native/recordtuple.pyx: records equal to what their classes build, untracked by the GC only when safe."""

from __future__ import annotations

import gc
import weakref
from typing import Any, NamedTuple

from hypothesis import given
from hypothesis import strategies as st

from mmarchive._native import recordtuple
from mmarchive._native.recordtuple import make_record
from mmarchive.index.schema import ObjectEntry, RecordLocation
from mmarchive.records import ObjectInfo, tuple_maker


class _Pair(NamedTuple):
    a: Any
    b: Any


_atoms = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                   st.binary(max_size=5))
_values = st.recursive(_atoms, lambda inner: st.one_of(st.tuples(inner, inner), st.lists(inner, max_size=2),
                                                       st.dictionaries(st.text(max_size=2), inner,
                                                                       max_size=2)),
                       max_leaves=6)


def _holds_container(value: object) -> bool:
    """Whether ``value`` holds (or is) something that could be part of a reference cycle (an empty
    dict too: CPython leaves it untracked until it holds a container)."""
    if isinstance(value, tuple):
        return any(_holds_container(v) for v in value)
    return isinstance(value, (list, dict))


def test_the_compiled_module_is_installed() -> None:
    assert recordtuple.__file__ is not None and recordtuple.__file__.endswith(".so"), recordtuple.__file__


@given(_values, _values)
def test_records_equal_what_the_class_builds(a: object, b: object) -> None:
    record = make_record(_Pair, (a, b))
    assert type(record) is _Pair
    assert record == _Pair(a, b) and record.a is a and record.b is b


@given(_values, _values)
def test_only_records_that_hold_no_container_are_untracked(a: object, b: object) -> None:
    record = make_record(_Pair, (a, b))
    if _holds_container((a, b)):
        # Nested deeper than two levels, a record holding no container may stay tracked; one that
        # holds a container is always tracked (it could be part of a cycle).
        assert gc.is_tracked(record)
    elif not any(isinstance(v, tuple) and any(isinstance(w, tuple) and any(isinstance(x, tuple) for x in w)
                                              for w in v) for v in (a, b)):
        assert not gc.is_tracked(record)


def test_the_write_path_records_are_untracked() -> None:
    loc = tuple_maker(RecordLocation)((b"p" * 16, 64, 4096))
    entry = tuple_maker(ObjectEntry)((1, 7, 4096, 123, loc, b"", ((b"c" * 32, 4096),)))
    info = tuple_maker(ObjectInfo)(("t", "ab", 1, 2, b"", 1, False, None, 3))
    assert entry == ObjectEntry(1, 7, 4096, 123, RecordLocation(b"p" * 16, 64, 4096), b"",
                                ((b"c" * 32, 4096),))
    assert not any(gc.is_tracked(r) for r in (loc, entry, entry.chunks, entry.chunks[0], info))


def test_a_cycle_through_a_container_in_a_record_is_collected() -> None:
    class Node:
        pass

    node = Node()
    record = make_record(_Pair, (node, 1))
    node.back = record  # type: ignore[attr-defined]
    alive = weakref.ref(node)
    del node, record
    gc.collect()
    assert alive() is None


def test_a_cycle_through_a_dict_that_was_empty_is_collected() -> None:
    class Node:
        pass

    table: dict[str, object] = {}
    assert not gc.is_tracked(table)  # CPython tracks it once it holds a container
    record = make_record(_Pair, (table, 1))
    node = Node()
    table["node"] = node
    node.back = record  # type: ignore[attr-defined]
    alive = weakref.ref(node)
    del node, record, table
    gc.collect()
    assert alive() is None


def test_records_with_a_dict_are_never_untracked() -> None:
    class WithDict(tuple):  # type: ignore[type-arg]
        pass

    record = make_record(WithDict, (1, 2))
    assert record == (1, 2) and type(record) is WithDict and gc.is_tracked(record)


def test_only_tuple_types_are_built() -> None:
    import pytest

    with pytest.raises(TypeError):
        make_record(dict, (1, 2))
    assert make_record(tuple, (1, "a")) == (1, "a") and not gc.is_tracked(make_record(tuple, (1, "a")))
