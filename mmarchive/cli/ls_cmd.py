"""``mmarchive ls``: list a tenant's live objects in id order, from :meth:`Archive.list`.

The listing streams: with ``--json`` one object per line as the index yields it, otherwise a table printed
page by page with fixed column widths, so a listing of millions of objects never sits in memory.
``--limit`` and ``--after`` page through large tenants.
"""

from __future__ import annotations

import argparse
import json
from itertools import islice
from typing import Any

from rich.table import Table
from rich.text import Text

from mmarchive.cli.session import (
    Output,
    Subparsers,
    add_command,
    format_time,
    human_size,
    object_json,
    open_archive,
)
from mmarchive.records import ObjectInfo

_PAGE = 500
_METADATA_WIDTH = 60


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "ls", summary="list objects",
        description="List the tenant's live objects in id order: id, size, creation time, metadata.")
    parser.add_argument("--limit", metavar="N", type=_positive, default=None,
                        help="list at most N objects")
    parser.add_argument("--after", metavar="ID", default=None,
                        help="start after this object id (to page through a large tenant)")
    parser.set_defaults(run=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def run(args: argparse.Namespace, out: Output) -> int:
    with open_archive(args, readonly=True) as archive:
        objects = archive.list(tenant=args.tenant, limit=args.limit, after=args.after)
        if out.json_mode:
            for info in objects:
                out.emit(object_json(info))
            return 0
        first = True
        while page := list(islice(objects, _PAGE)):
            out.table(_table(page, header=first))
            first = False
    return 0


def _table(page: list[ObjectInfo], *, header: bool) -> Table:
    # Fixed widths so that consecutive pages line up as one table.
    table = Table(box=None, pad_edge=False, show_header=header, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=64)
    table.add_column("SIZE", justify="right", no_wrap=True, min_width=10)
    table.add_column("CREATED", no_wrap=True, min_width=19)
    table.add_column("METADATA", no_wrap=True, min_width=8)
    for info in page:
        table.add_row(info.id, human_size(info.size), format_time(info.created_ns),
                      Text(_short(info.metadata)))  # Text: metadata is not rich markup
    return table


def _short(metadata: Any) -> str:
    if not metadata:
        return ""
    text = json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= _METADATA_WIDTH else text[:_METADATA_WIDTH - 3] + "..."
