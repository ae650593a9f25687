"""An ingest process for the DICOM crash test: it ingests synthetic CT files until it is killed with SIGKILL.

Run as ``python tests/dicom/crash_ingester.py ARCHIVE SEED LOG``. Each round makes a few instances (some
new, some new versions of earlier ones, some resends) and ingests them; every result is appended to ``LOG``
(fsynced) once ingest reported it, as ``A STATUS SOP OBJECT_ID SHA256``: acknowledged, so the instance (that
version) must be retrievable byte-exact after any crash. ``o`` is logged before the store opens (the kill
may land in the catalog catch-up), ``c N`` once it is open: the catalog caught up with N changes.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pydicom.uid import generate_uid

from mmarchive.dicom.store import DicomStore
from tests.dicom.synthetic import ct_file


def main() -> None:
    archive, seed, log_path = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(log, b"o\n")
    sops: list[str] = []
    study, series = generate_uid(), generate_uid()
    with DicomStore.open(archive) as store:
        os.write(log, f"c {store.caught_up}\n".encode())
        n = 0
        while True:
            batch = []
            for _ in range(rng.randint(1, 12)):
                n += 1
                if sops and rng.random() < 0.3:
                    sop = rng.choice(sops)  # a new version (other name) or, by chance, a resend
                else:
                    sop = str(generate_uid())
                    sops.append(sop)
                data = ct_file(sop_uid=sop, study_uid=study, series_uid=series, instance_number=n,
                               patient_name=f"P^{rng.randint(0, 3)}", rows=48, cols=48)
                batch.append((f"{seed}-{n}", data))
            for result, (_name, data) in zip(store.ingest(batch), batch, strict=True):
                line = (f"A {result.status} {result.sop_instance_uid} {result.object_id} "
                        f"{hashlib.sha256(data).hexdigest()}\n")
                os.write(log, line.encode())
            os.fsync(log)


if __name__ == "__main__":
    main()
