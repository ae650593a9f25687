"""Retrieval bodies leave the thread pool in pieces of at least BODY_PIECE bytes, in order, nothing lost."""

from __future__ import annotations

import os

from mmarchive.dicom.web.app import coalesced


def test_small_pieces_are_joined_in_order_and_large_ones_pass() -> None:
    pieces = [os.urandom(n) for n in (10, 300, 5000, 70, 20_000, 1, 2, 3)]
    out = list(coalesced(iter(pieces), at_least=4096))
    assert b"".join(out) == b"".join(pieces)
    assert all(len(p) >= 4096 for p in out[:-1])
    assert [len(p) for p in out] == [5310, 20_070, 6]


def test_a_piece_at_least_the_size_is_passed_as_it_is() -> None:
    big = os.urandom(8192)
    assert next(coalesced(iter([big]), at_least=4096)) is big
    assert list(coalesced(iter([]))) == []
