"""``mmarchive hold add|release|ls``: put legal holds on patients, studies or objects, release and list them.

Each command works on :class:`~mmarchive.lifecycle.holds.HoldRegistry` over the archive directory found
by :func:`mmarchive.cli.audit_cmd.archive_root`: no index, no writer lock, so holds can be placed from an
ops shell while a ``lifecycle run`` or an ingest writes the archive. ``add`` and ``release`` need a reason
and record who (``--user``, default the login name) in the audit log; they print the hold.
"""

from __future__ import annotations

import argparse

from rich.table import Table
from rich.text import Text

from mmarchive.cli.audit_cmd import archive_root
from mmarchive.cli.session import Output, Subparsers, add_command
from mmarchive.index.schema import check_tenant
from mmarchive.lifecycle.audit import AuditLog, current_user
from mmarchive.lifecycle.holds import Hold, HoldRegistry


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "hold", help="legal holds: add, release, list",
        description="Legal holds keep a patient's, a study's or an object's data from expiry and deletion "
                    "until released. Every add and release is recorded in the audit log (`mmarchive audit`).")
    commands = parser.add_subparsers(dest="hold_command", metavar="SUBCOMMAND", required=True)

    add = add_command(
        commands, "add", summary="put a legal hold on a patient, study or object", tenant=False,
        description="Put a legal hold on a patient, a study or an object of tenant T. The patient or study "
                    "need not be stored yet: the hold also covers data that arrives later.")
    add.add_argument("--tenant", metavar="T", required=True, help="the tenant the data belongs to")
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--patient", metavar="ID", help="hold every object of this patient id")
    what.add_argument("--study", metavar="UID", help="hold every object of this Study Instance UID")
    what.add_argument("--object", metavar="OID", help="hold this object (64 hexadecimal digits)")
    add.add_argument("--reason", metavar="TEXT", required=True, help="why (kept in the audit log)")
    _user_option(add)
    add.set_defaults(run=run_add)

    release = add_command(
        commands, "release", summary="release a legal hold", tenant=False,
        description="Release legal hold HOLD_ID: its data can expire and be deleted again (other holds "
                    "on the same data still apply).")
    release.add_argument("hold_id", metavar="HOLD_ID", help="the hold's id, as `mmarchive hold ls` shows it")
    release.add_argument("--reason", metavar="TEXT", required=True, help="why (kept in the audit log)")
    _user_option(release)
    release.set_defaults(run=run_release)

    ls = add_command(
        commands, "ls", summary="list legal holds", tenant_default=None,
        description="List the active legal holds, oldest first (with --all, released ones too).")
    ls.add_argument("--all", action="store_true", help="include released holds")
    ls.set_defaults(run=run_ls)


def _user_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="U", default=None,
                        help="who does this, for the audit log (default: your login name)")


def _actor(args: argparse.Namespace) -> str:
    return str(args.user) if args.user is not None else current_user()


def _registry(args: argparse.Namespace) -> HoldRegistry:
    root = archive_root(args)
    return HoldRegistry(root, AuditLog(root))


def run_add(args: argparse.Namespace, out: Output) -> int:
    if args.patient is not None:
        scope, value = "patient", args.patient
    elif args.study is not None:
        scope, value = "study", args.study
    else:
        scope, value = "object", args.object
    with _registry(args) as holds:
        hold = holds.add(args.tenant, scope, value, args.reason, _actor(args))
    if out.json_mode:
        out.emit(hold.to_json())
    else:
        out.line(f"{hold.id}  added: tenant {hold.tenant}, {hold.describe()}")
    return 0


def run_release(args: argparse.Namespace, out: Output) -> int:
    with _registry(args) as holds:
        hold = holds.release(args.hold_id, args.reason, _actor(args))
    if out.json_mode:
        out.emit(hold.to_json())
    else:
        out.line(f"{hold.id}  released: tenant {hold.tenant}, {hold.describe()}")
    return 0


def run_ls(args: argparse.Namespace, out: Output) -> int:
    root = archive_root(args)
    if args.tenant is not None:
        check_tenant(args.tenant)
    with HoldRegistry(root, None) as holds:
        listed = holds.all(args.tenant) if args.all else holds.active(args.tenant)
    if out.json_mode:
        for hold in listed:
            out.emit(hold.to_json())
        return 0
    if not listed:
        out.note("no legal holds" if args.all else "no active legal holds")
        return 0
    out.table(_table(listed, released=args.all))
    return 0


def _table(holds: list[Hold], *, released: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("ID", "TENANT", "SCOPE", "VALUE", "ADDED (UTC)", "BY"):
        table.add_column(name, no_wrap=True)
    if released:
        table.add_column("RELEASED (UTC)", no_wrap=True)
    table.add_column("REASON", overflow="fold")
    for h in holds:
        cells: list[str | Text] = [Text(h.id), Text(h.tenant), h.scope, Text(h.value),
                                   f"{h.added:%Y-%m-%d %H:%M}", Text(h.actor)]
        if released:
            cells.append(Text(f"{h.released:%Y-%m-%d %H:%M} by {h.released_by}")
                         if h.released is not None else "-")
        cells.append(Text(h.reason))
        table.add_row(*cells)
    return table
