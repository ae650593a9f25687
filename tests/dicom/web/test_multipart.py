"""The multipart reader and spooler on their own: any chunking of a body gives the same parts, and large
parts go to temporary files that are removed afterwards."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarchive.dicom.web.multipart import MalformedMultipart, MultipartReader, SpooledParts, media_type

#: Parts with near misses of the delimiter ("\r\n--Bnd", which no part may hold).
_PARTS = [b"", b"\r\n--Bn", b"x" * 300, b"\r\n-Bnd\r--Bnd", b"\r\n\r\n" + bytes(range(256)) + b"\r\n-"]


def _body(parts: list[bytes], preamble: bytes = b"") -> bytes:
    out = preamble
    for i, p in enumerate(parts):
        out += (b"\r\n" if i or preamble else b"") + b"--Bnd\r\nContent-Type: application/dicom\r\n\r\n" + p
    return out + b"\r\n--Bnd--\r\nepilogue"


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
       preamble=st.sampled_from([b"", b"a preamble\r\n"]), spool=st.sampled_from([0, 10, 1 << 20]))
def test_any_chunking_gives_the_same_parts(cuts: list[int], preamble: bytes, spool: int) -> None:
    body = _body(_PARTS, preamble)
    reader = MultipartReader("Bnd")
    points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    with SpooledParts(spool) as spooled:
        for a, b in itertools.pairwise(points):
            spooled.add(reader.feed(body[a:b]))
        reader.finish()
        assert [p.read() for p in spooled.parts] == _PARTS
        assert all(p.headers == {"content-type": "application/dicom"} for p in spooled.parts)
        files = [p.path for p in spooled.parts if p.path is not None]
        assert bool(files) == (spool < 1 << 20)
    assert not any(f.exists() for f in files)


def test_unfinished_bodies_are_malformed() -> None:
    reader = MultipartReader("Bnd")
    reader.feed(_body(_PARTS)[:-30])
    with pytest.raises(MalformedMultipart):
        reader.finish()
    with pytest.raises(MalformedMultipart):
        MultipartReader("")
    with pytest.raises(MalformedMultipart):
        MultipartReader("Bnd").feed(b"--Bnd junk\r\n")


def test_media_type_parameters() -> None:
    assert media_type('Multipart/Related; type="application/dicom"; boundary="a;b"') == \
        ("multipart/related", {"type": "application/dicom", "boundary": "a;b"})



def test_many_small_parts_are_held_in_memory_only_up_to_the_budget() -> None:
    """The budget is for the whole body: once the parts kept in memory fill it, the next parts go to files,
    however small each is."""
    parts = [bytes([i]) * 1000 for i in range(50)]
    reader = MultipartReader("Bnd")
    with SpooledParts(10_500) as spooled:
        spooled.add(reader.feed(_body(parts)))
        reader.finish()
        assert [p.read() for p in spooled.parts] == parts
        in_memory = [p for p in spooled.parts if p.path is None]
        assert len(in_memory) == 10 and spooled.parts[:10] == in_memory
        assert sum(len(p.read()) for p in in_memory) == spooled.held <= 10_500
