"""Last access: a writable archive notes the UTC day each object was last read (for lifecycle rules)."""

from __future__ import annotations

import datetime
from pathlib import Path

from mmarchive.archive import Archive
from tests.conftest import TINY


def test_reads_are_noted_by_day_and_survive_reopen(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with Archive.create(root, TINY) as archive:
        read, unread = archive.put(b"read me" * 100), archive.put(b"never read" * 100)
        assert archive.last_access(read.id) is None
        archive.get(read.id)
        today = datetime.datetime.now(datetime.UTC).date()
        assert archive.last_access(read.id) == today
    with Archive.open(root, readonly=True) as archive:
        assert archive.last_access(read.id) == today
        assert archive.last_access(unread.id) is None
        archive.get(unread.id)  # a read-only handle does not write: not noted
    with Archive.open(root) as archive:
        assert archive.last_access(unread.id) is None


def test_many_reads_flush_in_batches(tmp_path: Path) -> None:
    with Archive.create(tmp_path / "a", TINY) as archive:
        infos = list(archive.put_many([i.to_bytes(4, "big") * 10 for i in range(1500)]))
        for info in infos:
            archive.get(info.id)
        assert len(archive._accessed) < 1024  # the first 1024 were written out
        assert all(archive.last_access(i.id) is not None for i in infos)
