"""``mmarchive audit``: show the archive's audit log, filtered, or check its hash chain with ``--verify``.

Reads ``ARCHIVE/audit/`` through :class:`~mmarchive.lifecycle.audit.AuditLog` and nothing else: no index,
no writer lock, so it works while another process writes the archive. The listing streams (one JSON object
per line with ``--json``, else a table printed page by page). :func:`archive_root` is the light way into an
archive that the lifecycle commands (this one and ``hold``) share: it only checks that the directory is an
archive.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path

from rich.table import Table
from rich.text import Text

from mmarchive.cli.session import Output, Subparsers, add_command, archive_dir, key_value_table
from mmarchive.config import CONFIG_FILE
from mmarchive.errors import IntegrityError, InvalidInputError, NotFoundError
from mmarchive.index.schema import check_tenant
from mmarchive.lifecycle.audit import AuditLog, AuditRecord, AuditVerifyReport

_PAGE = 500


def archive_root(args: argparse.Namespace) -> Path:
    """The archive directory of ``--archive`` (or the default), checked to be an archive, not opened."""
    root = archive_dir(args)
    if not (root / CONFIG_FILE).is_file():
        raise NotFoundError(f"no archive at {root} (no {CONFIG_FILE}); create one with `mmarchive init`")
    return root


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "audit", summary="show the audit log", tenant_default=None,
        description="Show the archive's audit log (lifecycle actions, deletions, hold changes), oldest "
                    "first, filtered by the options; with --verify, check its hash chain instead. Needs no "
                    "lock: works while another process writes.")
    parser.add_argument("--action", metavar="A", default=None,
                        help="only this action and the ones below it (`hold` matches hold.add, hold.release)")
    parser.add_argument("--since", metavar="DATE", type=_since, default=None,
                        help="only entries at or after DATE (YYYY-MM-DD, or an ISO 8601 time; UTC unless "
                             "it says otherwise)")
    parser.add_argument("--until", metavar="DATE", type=_until, default=None,
                        help="only entries up to DATE, inclusive (a day includes the whole day)")
    parser.add_argument("--subject", metavar="S", default=None,
                        help="only entries about S: an object id, a pack, patient:ID, study:UID")
    parser.add_argument("--verify", action="store_true",
                        help="check the whole log's hash chain (exit 5 and the first break if broken)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    log = AuditLog(archive_root(args))
    if args.verify:
        if any(v is not None for v in (args.tenant, args.action, args.since, args.until, args.subject)):
            raise InvalidInputError("--verify checks the whole log; it takes no filter options")
        return _verify(log, out)
    if args.tenant is not None:
        check_tenant(args.tenant)
    records = log.entries(since=args.since, until=args.until, tenant=args.tenant, action=args.action,
                          subject=args.subject)
    if out.json_mode:
        for record in records:
            out.emit(record.to_json())
        return 0
    first = True
    while page := list(islice(records, _PAGE)):
        out.table(_table(page, header=first))
        first = False
    if first:
        out.note("no audit entries match")
    return 0


def _verify(log: AuditLog, out: Output) -> int:
    report = log.verify()
    if out.json_mode:
        out.emit(report.to_json())
    else:
        _print_report(report, out)
    if report.first_break is not None:
        b = report.first_break
        raise IntegrityError(f"the audit log is broken at {log.directory / b.file} line {b.line}: "
                             f"{b.message}")
    return 0


def _print_report(report: AuditVerifyReport, out: Output) -> None:
    rows = [("files", str(report.files)), ("lines checked", str(report.lines)),
            ("chain", "intact" if report.ok else "BROKEN"),
            ("head", f"seq {report.head_seq}, {report.head_hash}")]
    if report.first_break is not None:
        b = report.first_break
        rows.append(("first break", f"{b.file} line {b.line}: {b.message}"))
    if report.torn_tail is not None:
        t = report.torn_tail
        rows.append(("torn tail", f"{t.file} line {t.line}: {t.message}"))
    out.table(key_value_table(rows))


def _table(page: list[AuditRecord], *, header: bool) -> Table:
    table = Table(box=None, pad_edge=False, show_header=header, header_style="bold")
    table.add_column("TIME (UTC)", no_wrap=True, min_width=19)
    table.add_column("ACTION", no_wrap=True, min_width=14)
    table.add_column("ACTOR", no_wrap=True, min_width=10)
    table.add_column("TENANT", no_wrap=True, min_width=8)
    table.add_column("SUBJECT", no_wrap=True, min_width=20)
    table.add_column("REASON", overflow="fold")
    for r in page:
        table.add_row(r.time.strftime("%Y-%m-%d %H:%M:%S"), Text(r.action), Text(r.actor),
                      Text(r.tenant or "-"), Text(r.subject), Text(r.reason))
    return table


def _parse_when(text: str) -> tuple[datetime, bool]:
    """A DATE or an ISO 8601 time as UTC, and whether it was a whole day."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC), True
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return (t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)), False


def _since(text: str) -> datetime:
    return _parse_when(text)[0]


def _until(text: str) -> datetime:
    """The first instant after ``text`` (the library's ``until`` is exclusive, the option inclusive)."""
    t, whole_day = _parse_when(text)
    return t + (timedelta(days=1) if whole_day else timedelta(microseconds=1))
