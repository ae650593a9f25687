"""The LMDB environment: map growth, fork safety, shared handles, stale readers, read-only opening."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, IndexConfig, MiB
from mmarchive.errors import ArchiveStateError
from tests.conftest import TINY


def test_map_grows_automatically(tmp_path: Path) -> None:
    cfg = ArchiveConfig(store=TINY.store, index=IndexConfig(map_size=1 * MiB, commit_objects=500))
    with Archive.create(tmp_path / "a", cfg) as a:
        start = a.index.env.info()["map_size"]
        infos = list(a.put_many(os.urandom(32) for _ in range(20_000)))
        grown = a.index.env.info()["map_size"]
        assert grown > start
        assert a.get(infos[-1].id) == a.get(infos[-1].id)
        assert a.stats().objects == 20_000


def _child_uses_parent_handle(archive: Archive, oid: str, q: multiprocessing.Queue[str]) -> None:
    try:
        archive.get(oid)
        q.put("read through the parent's handle")
    except ArchiveStateError as e:
        q.put(f"refused: {e}")


def test_handle_is_refused_after_fork(tmp_path: Path) -> None:
    with Archive.create(tmp_path / "a", TINY) as a:
        oid = a.put(b"fork me").id
        ctx = multiprocessing.get_context("fork")
        q: multiprocessing.Queue[str] = ctx.Queue()
        p = ctx.Process(target=_child_uses_parent_handle, args=(a, oid, q))
        p.start()
        p.join(30)
        answer = q.get(timeout=5)
        assert answer.startswith("refused") and "fork" in answer, answer
        assert a.get(oid) == b"fork me"  # the parent is unaffected


def test_reader_in_another_process_sees_committed_objects(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with Archive.create(path, TINY) as a:
        oid = a.put(b"committed").id
        code = textwrap.dedent(f"""
            from mmarchive import Archive
            with Archive.open({str(path)!r}, readonly=True) as r:
                print(r.get({oid!r}).decode())
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "committed"


def test_stale_reader_slot_of_a_killed_process_is_reclaimed(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with Archive.create(path, TINY) as a:
        a.put(b"x")
    code = textwrap.dedent(f"""
        import time
        from mmarchive import Archive
        r = Archive.open({str(path)!r}, readonly=True)
        txn = r.index.env.begin()  # hold a reader slot
        print("holding", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Archive.open(path) as a:
        # reader_check() ran on open; a fresh check finds nothing more to clear.
        assert a.index.env.reader_check() == 0
        a.put(b"after the kill")


def test_two_handles_in_one_process_share_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with Archive.create(path, TINY) as writer, Archive.open(path, readonly=True) as reader:
        oid = writer.put(b"shared").id
        assert reader.get(oid) == b"shared"
        assert reader.index.env is writer.index.env


def test_read_only_archive_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with Archive.create(path, TINY):
        pass
    with Archive.open(path, readonly=True) as r, pytest.raises(ArchiveStateError, match="read-only"):
        r.delete("00" * 32)
