"""SIGKILL during DICOM ingest: every acknowledged instance survives byte-exact and the catalog catches up."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from mmarchive.archive import Archive
from mmarchive.dicom.store import DicomStore

INGESTER = Path(__file__).with_name("crash_ingester.py")
KILLS = 8


def test_sigkill_during_ingest_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    Archive.create(tmp_path / "a").close()
    log = tmp_path / "log"
    rng = random.Random(1234)
    for round_ in range(KILLS):
        proc = subprocess.Popen([sys.executable, str(INGESTER), str(tmp_path / "a"), str(round_), str(log)],
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        # wait until this round has acknowledged something, then let it run a random while longer
        start = log.stat().st_size if log.exists() else 0
        while time.monotonic() < deadline and (not log.exists() or log.stat().st_size <= start + 2):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    acknowledged: dict[str, str] = {}  # object id -> sha256
    sops: set[str] = set()
    for line in log.read_text().splitlines():
        if line.startswith("A "):
            _a, status, sop, oid, sha = line.split()
            assert status in ("stored", "new-version", "already-stored"), line
            acknowledged[oid] = sha
            sops.add(sop)
    assert len(acknowledged) > KILLS
    caught_up = [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("c ")]
    print(f"\ncatalog catch-ups at open: {caught_up}")
    with DicomStore.open(tmp_path / "a") as store:
        print(f"final open caught up {store.caught_up}")
        for oid, sha in acknowledged.items():
            assert hashlib.sha256(store.archive.get(oid)).hexdigest() == sha
        live = {c.id: str(c.metadata["dicom"]["sop"]) for c in store.archive.changes(limit=10**6) if c.live}
        assert sops <= set(live.values())
        # the catalog knows every stored version, including those the kill caught before indexing
        for oid, sop in live.items():
            versions = store.versions(sop)
            assert oid in {v.object_id for v in versions}, (sop, oid)
            assert sum(v.current for v in versions) == 1, sop
        assert store.catalog.counts("default")["instances"] == len(set(live.values()))
        assert store.archive.verify().ok
