"""``mmarchive export --study UID [--series UID] [--instance UID] -o DIR``: write Part 10 files back out.

Each current instance is written byte for byte as it was stored (every read is verified) to
``DIR/STUDY/SERIES/SOP.dcm``, through a temporary file and a rename, so a file that exists is complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmarchive.cli.session import Output, Subparsers, add_command, archive_dir
from mmarchive.dicom.store import DicomStore


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "export", summary="write a study, series or instance as DICOM files",
        description="Write the current version of every instance of a study (or of one series, or one "
                    "instance) to DIR/STUDY/SERIES/SOP.dcm, byte for byte as stored.")
    parser.add_argument("--study", required=True, metavar="UID", help="Study Instance UID")
    parser.add_argument("--series", metavar="UID", default=None, help="only this Series Instance UID")
    parser.add_argument("--instance", metavar="UID", default=None, help="only this SOP Instance UID")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="DIR",
                        help="the directory to write to (created if missing)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with DicomStore.open(archive_dir(args), readonly=True) as store:
        written = store.export(args.output, study_uid=args.study, tenant=args.tenant,
                               series_uid=args.series, sop_uid=args.instance)
    for path in written:
        if out.json_mode:
            out.emit({"path": str(path), "size": path.stat().st_size})
        else:
            out.line(str(path))
    out.note(f"wrote {len(written)} files under {args.output}")
    return 0
