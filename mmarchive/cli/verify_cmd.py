"""``mmarchive verify``: read every record of every pack and check the index against the packs.

It runs :meth:`Archive.verify` on a read-only handle (so it works while another process writes) with a
progress bar over the packs, prints the :class:`~mmarchive.records.VerifyReport`, and fails with
IntegrityError's exit code (5) when the report is not ok: damaged or missing packs, or objects that can no
longer be read completely. Orphaned pack files are reported but are not damage. With ``--repair`` it
takes the writer lock and restores damaged or missing packs from their replicas (and damaged replicas from
their packs), audits each repair, and reports the state after the repairs.
"""

from __future__ import annotations

import argparse

from mmarchive.cli.session import Output, Subparsers, add_command, human_size, key_value_table, open_archive
from mmarchive.errors import IntegrityError
from mmarchive.records import VerifyReport

_SHOWN = 20  # problems listed per kind in the human report; --json lists all


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "verify", summary="check every pack and the index", tenant=False,
        description="Read every record of every pack, check its checksums, and check the index "
                    "against the packs. Exits 5 if anything is damaged or missing.")
    parser.add_argument("--repair", action="store_true",
                        help="restore damaged or missing packs from their replicas (takes the writer lock)")
    parser.add_argument("--user", metavar="U", default=None, help="who repairs, for the audit log")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_archive(args, readonly=not args.repair) as archive, \
            out.progress("verify packs", None) as progress:
        report = archive.verify(repair=args.repair, actor=args.user, progress=progress)
    if out.json_mode:
        out.emit(report.to_json())
    else:
        _print_report(report, out)
    if not report.ok:
        raise IntegrityError(
            f"verify found damage: {len(report.damaged)} damaged, {len(report.missing)} missing, "
            f"{len(report.affected_objects)} objects affected; run `mmarchive reindex` if the index is "
            "at fault, else restore the damaged packs from a replica or backup")
    return 0


def _print_report(report: VerifyReport, out: Output) -> None:
    out.table(key_value_table([
        ("packs checked", str(report.packs_checked)),
        ("records checked", str(report.records_checked)),
        ("objects checked", str(report.objects_checked)),
        ("bytes checked", human_size(report.bytes_checked)),
        ("damaged", str(len(report.damaged))),
        ("missing", str(len(report.missing))),
        ("orphaned packs", str(len(report.orphaned))),
        ("affected objects", str(len(report.affected_objects))),
        ("replicas checked", str(report.replicas_checked)),
        ("repaired", str(len(report.repaired))),
        ("result", "ok" if report.ok else "DAMAGED"),
    ]))
    for title, problems in (("damaged", report.damaged), ("missing", report.missing),
                            ("orphaned pack", report.orphaned),
                            ("affected object", report.affected_objects),
                            ("repaired", report.repaired), ("not repaired", report.unrepaired)):
        for problem in problems[:_SHOWN]:
            out.line(f"{title}: {problem}")
        if len(problems) > _SHOWN:
            out.line(f"{title}: ... and {len(problems) - _SHOWN} more (see --json)")
