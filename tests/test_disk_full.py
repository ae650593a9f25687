"""A full disk: the put that does not fit fails with StorageError; everything acknowledged survives.

The archive lives on a 3 MiB tmpfs mounted for the test (root only, as in CI).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, IndexConfig, KiB, MiB, StoreConfig
from mmarchive.errors import StorageError

CONFIG = ArchiveConfig(store=StoreConfig(chunk_threshold=64 * KiB, chunk_min=16 * KiB, chunk_avg=32 * KiB,
                                         chunk_max=64 * KiB, pack_size=512 * KiB, compression="none"),
                       index=IndexConfig(map_size=1 * MiB))


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_fails_cleanly_and_keeps_acknowledged_objects(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", "3m") as fs:
        ballast = fs / "ballast"  # what the operator will delete to make room again
        ballast.write_bytes(bytes(512 * KiB))
        acknowledged: dict[str, bytes] = {}
        archive = Archive.create(fs / "a", CONFIG)
        error: StorageError | None = None
        try:
            for i in range(200):
                data = os.urandom(100 * KiB) + i.to_bytes(4, "little")
                info = archive.put(data)
                acknowledged[info.id] = data
        except StorageError as e:
            error = e
        finally:
            with contextlib.suppress(StorageError):
                archive.close()
        assert error is not None, "3 MiB took 20 MiB of objects"
        assert "space" in str(error).lower() or "No space" in str(error), str(error)
        assert len(acknowledged) >= 5
        # Reopening cuts off what was never acknowledged; every acknowledged object is intact.
        with Archive.open(fs / "a") as again:
            for oid, data in acknowledged.items():
                assert again.get(oid) == data
            report = again.verify()
            assert report.ok, report
        # Once the operator frees space, the same archive takes writes, deletes and gc again.
        ballast.unlink()
        with Archive.open(fs / "a") as again:
            small = again.put(b"fits again")
            assert again.get(small.id) == b"fits again"
            for oid in list(acknowledged)[:3]:
                again.delete(oid)
            again.gc()
            for oid, data in list(acknowledged.items())[3:]:
                assert again.get(oid) == data
            assert again.verify().ok
