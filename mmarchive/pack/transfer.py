"""Copying a sealed pack from one tier to another, and proving the copy before anyone relies on it.

A copy streams the pack in blocks (never whole in memory) into the target's ``store``, then reads the
target's copy back from start to end and checks what a sealed pack promises about itself: its length, its
footer, and the xxh3-128 of every byte before the footer. Only a copy that passed may be switched to by the
index. A copy that fails is removed from the target and reported as an integrity error naming the pack and
both tiers. The source is never modified.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import xxhash

from mmarchive.errors import IntegrityError
from mmarchive.pack.format import FOOTER_LEN, Footer

#: Bytes per read while streaming a pack (one ranged GET each on S3).
TRANSFER_BLOCK = 8 * 1024 * 1024


class _PackFile(Protocol):
    name: str

    def read_at(self, offset: int, length: int) -> bytes: ...

    def size(self) -> int: ...

    def close(self) -> None: ...


class _Tier(Protocol):
    name: str

    def reader(self, pack: str) -> _PackFile: ...

    def store(self, pack: str, pieces: Iterator[bytes], size: int) -> None: ...

    def remove(self, pack: str) -> None: ...


def _blocks(src: _PackFile, size: int, block: int) -> Iterator[bytes]:
    pos = 0
    while pos < size:
        data = src.read_at(pos, min(block, size - pos))
        if not data:
            raise IntegrityError(f"pack {src.name}: ends at {pos} bytes, expected {size}", pack=src.name)
        yield data
        pos += len(data)


def check_sealed_copy(tier: _Tier, name: str, size: int, *, block: int = TRANSFER_BLOCK) -> None:
    """Read a sealed pack back from ``tier`` and check its length, footer and whole-pack checksum."""
    src = tier.reader(name)
    try:
        actual = src.size()
        if actual != size:
            raise IntegrityError(f"pack {name} on tier {tier.name} has {actual} bytes, expected {size}",
                                 pack=name)
        if size < FOOTER_LEN:
            raise IntegrityError(f"pack {name} on tier {tier.name} is too short to be sealed", pack=name)
        footer = Footer.decode(src.read_at(size - FOOTER_LEN, FOOTER_LEN), pack=name)
        if footer is None:
            raise IntegrityError(f"pack {name} on tier {tier.name} has no footer (not sealed)", pack=name)
        hasher = xxhash.xxh3_128()
        for data in _blocks(src, size - FOOTER_LEN, block):
            hasher.update(data)
        if hasher.digest() != footer.pack_checksum:
            raise IntegrityError(f"pack {name} on tier {tier.name}: whole-pack checksum mismatch",
                                 pack=name)
    finally:
        src.close()


def copy_pack(src: _Tier, dst: _Tier, name: str, size: int, *, block: int = TRANSFER_BLOCK) -> None:
    """Copy sealed pack ``name`` (``size`` bytes) from ``src`` to ``dst`` and verify the copy there.

    Raises :class:`IntegrityError` when the source or the copy does not verify (the bad copy is removed),
    or the target's :class:`StorageError` when it cannot store.
    """
    src_path = getattr(src, "path", None)
    copy_in = getattr(dst, "copy_in", None)
    if src_path is not None and copy_in is not None:
        copy_in(name, src_path(name), size)  # both local: the kernel copies, no bytes through Python
    else:
        reader = src.reader(name)
        try:
            dst.store(name, _blocks(reader, size, block), size)
        finally:
            reader.close()
    try:
        check_sealed_copy(dst, name, size, block=block)
    except IntegrityError as e:
        dst.remove(name)
        raise IntegrityError(f"copying pack {name} from tier {src.name} to tier {dst.name}: the copy "
                             f"did not verify ({e}); it was removed and the source kept (if the "
                             "source is damaged, `mmarchive verify` reports it)", pack=name) from e
