"""A reader process for the move tests: reads every object again and again until killed (tests only).

Run as ``python tests/tiers/reader_loop.py ARCHIVE EXPECTED_JSON OUT``: opens the archive read-only and
loops over the objects of EXPECTED_JSON ({id: sha256}), comparing each read; after each pass it writes
``passes reads errors`` and the first error (if any) to OUT.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from mmarchive.archive import Archive
from mmarchive.errors import ArchiveError


def main() -> None:
    root, expected = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    out = Path(sys.argv[3])
    reads = errors = passes = 0
    first = ""
    with Archive.open(root, readonly=True) as archive:
        while True:
            for oid, digest in expected.items():
                try:
                    ok = hashlib.sha256(archive.get(oid)).hexdigest() == digest
                    if not ok:
                        first = first or f"{oid}: wrong bytes"
                except ArchiveError as e:
                    ok = False
                    first = first or f"{oid}: {e}"
                reads += 1
                errors += not ok
            passes += 1
            tmp = out.with_suffix(".tmp")
            tmp.write_text(f"{passes} {reads} {errors}\n{first}\n")
            os.replace(tmp, out)


if __name__ == "__main__":
    main()
