"""``mmarchive gc``: reclaim the space of deleted and superseded data with :meth:`Archive.gc`.

Packs nothing points at are deleted; packs less than ``--repack-below`` live are rewritten with only their
live records. It takes the writer lock (exit 4 while another process writes) and prints the
:class:`~mmarchive.records.GcReport`; on a terminal a progress bar counts the packs examined.
"""

from __future__ import annotations

import argparse

from mmarchive.cli.session import Output, Subparsers, add_command, human_size, key_value_table, open_archive


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "gc", summary="reclaim space of deleted data", tenant=False,
        description="Delete packs that hold nothing live and repack those that are mostly garbage.")
    parser.add_argument("--repack-below", metavar="FRACTION", type=_fraction, default=0.5,
                        help="repack a pack when less than this fraction of it is live (default: 0.5)")
    parser.set_defaults(run=run)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1")
    return value


def run(args: argparse.Namespace, out: Output) -> int:
    with open_archive(args, readonly=False) as archive, out.progress("gc packs", None) as progress:
        report = archive.gc(repack_below=args.repack_below, progress=progress)
    if out.json_mode:
        out.emit(report.to_json())
        return 0
    out.table(key_value_table([
        ("packs deleted", str(report.packs_deleted)),
        ("packs repacked", str(report.packs_repacked)),
        ("chunks dropped", str(report.chunks_dropped)),
        ("size before", human_size(report.bytes_before)),
        ("size after", human_size(report.bytes_after)),
        ("reclaimed", human_size(report.bytes_reclaimed)),
    ]))
    return 0
