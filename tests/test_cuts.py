"""Objects the caller cuts into separately stored pieces (``cuts``): same object, shared pieces once."""

from __future__ import annotations

import io
import os
from pathlib import Path

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmarchive.archive import Archive, PutItem
from mmarchive.errors import InvalidInputError
from tests.conftest import TINY


def _file(header: bytes, pixels: bytes, trailer: bytes = b"") -> tuple[bytes, tuple[int, ...]]:
    """A container like a DICOM file: header, then bulk data, then a trailer; and its cut points."""
    data = header + pixels + trailer
    cuts = (len(header), len(header) + len(pixels)) if trailer else (len(header),)
    return data, cuts


def test_cut_object_reads_back_whole_with_its_own_id(archive: Archive) -> None:
    data, cuts = _file(b"H" * 300, os.urandom(5000), b"T" * 10)
    info = archive.put(data, cuts=cuts)
    assert info.id == blake3.blake3(data).hexdigest()
    assert info.chunk_count == 3
    assert archive.get(info.id) == data
    with archive.open_object(info.id) as f:
        f.seek(298)
        assert f.read(4) == data[298:302]


def test_same_bulk_under_another_header_costs_only_the_header(archive: Archive) -> None:
    pixels = os.urandom(12_000)  # under TINY's 16 KiB threshold: one piece, stored raw
    first, cuts1 = _file(b"PatientName=DOE^JOHN;" * 20, pixels)
    second, cuts2 = _file(b"PatientName=DOE^JANE;" * 20, pixels)
    archive.put(first, cuts=cuts1)
    before = archive.stats()
    info = archive.put(second, cuts=cuts2)
    after = archive.stats()
    assert not info.already_stored
    assert after.objects == before.objects + 1
    assert after.unique_bytes - before.unique_bytes == cuts2[0]  # only the new header
    assert after.stored_bytes - before.stored_bytes <= cuts2[0]
    assert archive.get(info.id) == second


def test_uncut_then_cut_share_nothing_but_are_both_whole(archive: Archive) -> None:
    data, cuts = _file(b"h" * 100, os.urandom(3000))
    a = archive.put(data)
    b = archive.put(data, cuts=cuts)
    assert a.id == b.id and b.already_stored
    assert archive.get(a.id) == data


def test_cut_then_uncut_is_already_stored(archive: Archive) -> None:
    data, cuts = _file(b"h" * 100, os.urandom(3000))
    a = archive.put(data, cuts=cuts)
    before = archive.stats()
    b = archive.put(data)
    (c,) = archive.put_many([data])
    assert a.id == b.id == c.id and b.already_stored and c.already_stored
    assert archive.stats() == before
    archive.delete(a.id)
    archive.gc(repack_below=1.0)
    assert archive.stats().unique_bytes == 0
    assert archive.verify().ok


def test_put_many_mixes_cut_and_whole_objects_and_resends_cost_nothing(archive: Archive) -> None:
    pixels = os.urandom(9000)
    items = []
    for i in range(40):
        data, cuts = _file(f"header {i:04d} ".encode() * 10, pixels, b"\0" * (i % 3))
        items.append(PutItem(data, cuts=cuts) if i % 2 == 0 else PutItem(data))
    infos = list(archive.put_many(items))
    assert [i.id for i in infos] == [blake3.blake3(bytes(it.source)).hexdigest()  # type: ignore[arg-type]
                                     for it in items]
    assert not any(i.already_stored for i in infos)
    stored = archive.stats()
    # The pixels are stored once for all cut objects (plus once per uncut object, which holds them whole).
    assert stored.unique_bytes < 21 * len(pixels) + 40 * 200
    again = list(archive.put_many(items))
    assert all(i.already_stored for i in again)
    assert archive.stats().unique_bytes == stored.unique_bytes
    for it, info in zip(items, infos, strict=True):
        assert archive.get(info.id) == it.source


def test_large_cut_object_is_chunked_within_its_pieces(tmp_path: Path) -> None:
    bulk = os.urandom(200_000)  # well above TINY's 16 KiB threshold: cut by content inside the piece
    with Archive.create(tmp_path / "a", TINY) as archive:
        first, cuts1 = _file(b"A" * 1000, bulk, b"Z")
        second, cuts2 = _file(b"B" * 1000, bulk, b"Z")
        i1 = archive.put(first, cuts=cuts1)
        before = archive.stats()
        i2 = archive.put(second, cuts=cuts2)
        after = archive.stats()
        assert i1.chunk_count > 3 and i2.chunk_count == i1.chunk_count
        assert after.unique_bytes - before.unique_bytes == 1000
        assert archive.get(i2.id) == second
        assert archive.verify().ok


def test_shared_piece_survives_delete_gc_and_reindex(tmp_path: Path) -> None:
    pixels = os.urandom(10_000)
    a_data, a_cuts = _file(b"a" * 500, pixels)
    b_data, b_cuts = _file(b"b" * 500, pixels)
    with Archive.create(tmp_path / "a", TINY) as archive:
        a = archive.put(a_data, cuts=a_cuts)
        b = archive.put(b_data, cuts=b_cuts)
        archive.delete(a.id)
        archive.gc(repack_below=1.0)
        assert archive.get(b.id) == b_data
        assert not archive.exists(a.id)
        assert archive.stats().unique_bytes == len(b_data)
        archive.reindex()
        assert archive.get(b.id) == b_data
        assert archive.stats().unique_bytes == len(b_data)
        report = archive.verify()
        assert report.ok, report


@pytest.mark.parametrize("cuts", [(5, 3), (-1,), (101,), (1.5,)])
def test_bad_cuts_are_refused(archive: Archive, cuts: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInputError, match="cuts"):
        archive.put(b"x" * 100, cuts=cuts)
    assert archive.stats().objects == 0


def test_cuts_need_a_bytes_source(archive: Archive) -> None:
    with pytest.raises(InvalidInputError, match="bytes source"):
        archive.put(io.BytesIO(b"x" * 100), cuts=(10,))


@given(data=st.binary(max_size=40_000),
       fractions=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=5))
def test_any_cuts_round_trip(tmp_path: Path, data: bytes, fractions: list[float]) -> None:
    cuts = tuple(sorted(int(f * len(data)) for f in fractions))
    path = tmp_path / f"h{os.urandom(4).hex()}"
    with Archive.create(path, TINY) as archive:
        info = archive.put(data, cuts=cuts)
        assert archive.get(info.id) == data
        assert info.size == len(data)
    with Archive.open(path, readonly=True) as archive:
        assert archive.get(info.id) == data
        assert archive.verify().ok
