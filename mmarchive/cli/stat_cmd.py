"""``mmarchive stat [ID]``: show one object, or without ID the totals of the archive or of one tenant.

With ID it prints what :meth:`Archive.stat` knows of the object; without it, :meth:`Archive.stats` for the
whole archive (or for ``--tenant``): logical, unique and stored bytes, the dedup and compression ratios
derived from them, objects and packs. Sizes are human in the table and raw bytes in JSON.
"""

from __future__ import annotations

import argparse
import json

from mmarchive.archive import DEFAULT_TENANT
from mmarchive.cli.session import (
    Output,
    Subparsers,
    add_command,
    format_time,
    human_size,
    key_value_table,
    object_json,
    open_archive,
)
from mmarchive.records import ArchiveStats, ObjectInfo


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "stat", summary="show an object, or the archive's totals",
        tenant_default=None,
        description="With ID, show that object (in --tenant, default 'default'). Without ID, show the "
                    "totals of the whole archive, or of --tenant: objects, logical bytes, unique bytes "
                    "(after dedup), stored bytes (after compression), the ratios, packs.")
    parser.add_argument("id", metavar="ID", nargs="?", default=None,
                        help="the object id (64 hexadecimal digits)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_archive(args, readonly=True) as archive:
        if args.id is not None:
            info = archive.stat(args.id, tenant=args.tenant or DEFAULT_TENANT)
            if out.json_mode:
                out.emit(object_json(info))
            else:
                out.table(key_value_table(object_rows(info)))
            return 0
        stats = archive.stats(tenant=args.tenant)
    print_totals(stats, out)
    return 0


def print_totals(stats: ArchiveStats, out: Output) -> None:
    """Print archive or tenant totals (shared with ``reindex``)."""
    if out.json_mode:
        out.emit(stats.to_json())
    else:
        out.table(key_value_table(_totals_rows(stats)))


def object_rows(info: ObjectInfo) -> list[tuple[str, str]]:
    """The rows of an object's table."""
    rows = [
        ("id", info.id),
        ("tenant", info.tenant),
        ("size", _size(info.size)),
        ("created", format_time(info.created_ns)),
        ("chunks", str(info.chunk_count)),
    ]
    for key, value in sorted(info.metadata.items()):
        rows.append((f"metadata.{key}", value if isinstance(value, str) else json.dumps(value)))
    return rows


def _totals_rows(stats: ArchiveStats) -> list[tuple[str, str]]:
    return [
        ("tenant", stats.tenant if stats.tenant is not None else "(all)"),
        ("objects", str(stats.objects)),
        ("logical size", _size(stats.logical_bytes)),
        ("unique size", _size(stats.unique_bytes)),
        ("stored size", _size(stats.stored_bytes)),
        ("dedup ratio", f"{stats.dedup_ratio:.2f}x"),
        ("compression ratio", f"{stats.compression_ratio:.2f}x"),
        ("packs", str(stats.packs)),
        ("pack files size", _size(stats.pack_bytes)),
    ]


def _size(n: int) -> str:
    return f"{human_size(n)} ({n} bytes)" if n >= 1024 else human_size(n)
