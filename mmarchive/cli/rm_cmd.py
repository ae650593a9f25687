"""``mmarchive rm ID``: delete one object logically, through :meth:`Archive.delete`.

The object disappears at once for readers; the bytes it alone used stay in their packs until
``mmarchive gc`` reclaims them. It needs the writer lock, so it fails with exit code 4 while another
process writes the archive. A legal hold or a retention rule that keeps the object refuses the deletion
(exit code 6, naming the hold or rule); deletions and refusals go to the audit log with ``--user`` and
``--reason``.
"""

from __future__ import annotations

import argparse

from mmarchive.cli.session import Output, Subparsers, add_command, human_size, object_json, open_archive


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "rm", summary="delete an object",
        description="Delete object ID. Its space is reclaimed by a later `mmarchive gc`.")
    parser.add_argument("id", metavar="ID", help="the object id (64 hexadecimal digits)")
    parser.add_argument("--reason", metavar="TEXT", default=None, help="why (kept in the audit log)")
    parser.add_argument("--user", metavar="U", default=None,
                        help="who deletes, for the audit log (default: your login name)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_archive(args, readonly=False) as archive:
        info = archive.delete(args.id, tenant=args.tenant, actor=args.user, reason=args.reason)
    if out.json_mode:
        out.emit(object_json(info))
    else:
        out.line(f"{info.id}  {human_size(info.size):>10}  deleted")
    return 0
