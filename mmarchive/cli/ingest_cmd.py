"""``mmarchive ingest PATH...``: store DICOM files (directories recursively) and index them in the catalog.

Files are read and scanned (on ``--readers`` threads if asked), stored through the DICOM layer
(:class:`~mmarchive.dicom.store.DicomStore`) and reported in input order once durable and indexed: one line
(or JSON line) per file, then a summary by outcome. A progress bar on a terminal shows instances/s and MB/s.
Files that are not DICOM, damaged or unreadable are reported with the reason and the rest go on; the command
then exits 2, as it does when the duplicate policy refused a file.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from mmarchive.cli.session import Output, Subparsers, add_command, archive_dir, files_under, human_size
from mmarchive.dicom.store import DicomStore, DuplicatePolicy, IngestResult, IngestStatus
from mmarchive.errors import InvalidInputError


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "ingest", summary="store DICOM files and index them",
        description="Store each DICOM Part 10 FILE (a directory: every file under it, in sorted order) "
                    "and index it by patient, study, series and instance. Each file is reported once "
                    "it is durable and indexed; files that are not DICOM or are damaged are reported "
                    "with the reason and the others go on (exit code 2 if any failed or was refused).")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a DICOM file or a directory")
    parser.add_argument("--on-duplicate", choices=[p.value for p in DuplicatePolicy], default=None,
                        help="a file whose SOP Instance UID is stored with other bytes: refuse it "
                             "(reject), keep both with the new one current (version), or keep only the "
                             "new one (replace); default: on_duplicate of [layers.dicom] in the "
                             "archive's mmarchive.toml, else version")
    parser.add_argument("--readers", type=int, default=0, metavar="N",
                        help="read and scan files on N threads (default 0: in the ingest thread, "
                             "fastest from local disks; N > 0 helps with slow or network storage)")
    parser.set_defaults(run=run)


def _files(paths: list[str]) -> Iterator[Path]:
    """Every input file in order; unreadable ones (and directories that could not be listed) are kept in
    their place: ingest reports each as failed, with the reason."""
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            yield from (found for found, _error in files_under(path))
        else:
            yield path


def run(args: argparse.Namespace, out: Output) -> int:
    files = list(_files(args.paths))
    counts: Counter[IngestStatus] = Counter()
    failed: list[str] = []
    nbytes = 0
    start = time.monotonic()
    policy = DuplicatePolicy(args.on_duplicate) if args.on_duplicate else None
    bar = out.show_progress
    with DicomStore.open(archive_dir(args), policy=policy) as store, \
            out.progress("ingest", len(files)) as progress:
        for done, result in enumerate(store.ingest(files, tenant=args.tenant, readers=args.readers), 1):
            counts[result.status] += 1
            nbytes += result.size
            if not result.ok:
                failed.append(result.source)
            _report(result, out)
            if bar:
                elapsed = max(time.monotonic() - start, 1e-9)
                progress(done, note=f"{done / elapsed:,.0f} inst/s  {nbytes / elapsed / 1e6:,.1f} MB/s")
    elapsed = max(time.monotonic() - start, 1e-9)
    summary = {str(s): counts[s] for s in IngestStatus}
    if out.json_mode:
        out.emit({"summary": summary, "files": len(files), "bytes": nbytes,
                  "seconds": round(elapsed, 3)})
    else:
        parts = ", ".join(f"{n} {s}" for s, n in summary.items() if n)
        out.note(f"{len(files)} files ({human_size(nbytes)}) in {elapsed:.1f} s "
                 f"({len(files) / elapsed:,.0f} inst/s): {parts or 'nothing'}")
    if failed:
        names = ", ".join(failed[:5]) + (", ..." if len(failed) > 5 else "")
        raise InvalidInputError(f"{len(failed)} of {len(files)} files were not stored: {names}")
    return 0


def _report(result: IngestResult, out: Output) -> None:
    if out.json_mode:
        out.emit(result.to_json())
        return
    if result.ok:
        out.line(f"{result.status:<15} {result.sop_instance_uid}  {result.source}")
    else:
        out.line(f"{result.status:<15} {result.source}: {result.error}")
