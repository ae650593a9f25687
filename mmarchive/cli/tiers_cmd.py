"""``mmarchive tiers``: what each storage tier holds, from the index (no tier is contacted).

One row per configured tier, hottest first: kind, packs, bytes, live bytes, objects (whose manifest is on
the tier), replicas of other tiers' packs kept here, capacity and fill against the high-water mark, and
moves in progress. Read-only, no writer lock.
"""

from __future__ import annotations

import argparse

from rich.table import Table

from mmarchive.cli.session import Output, Subparsers, add_command, human_size, open_archive


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "tiers", summary="show usage per storage tier", tenant=False,
        description="Show, per configured tier (hottest first), its packs, bytes, objects, capacity and "
                    "fill, and pack moves in progress.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_archive(args, readonly=True) as archive:
        usage = archive.tier_usage()
    if out.json_mode:
        for u in usage:
            out.emit(u.to_json())
        return 0
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("TIER", "KIND", "PACKS", "BYTES", "LIVE", "OBJECTS", "REPLICAS", "CAPACITY", "FILL",
                "MOVING"):
        table.add_column(col, justify="left" if col in ("TIER", "KIND") else "right", no_wrap=True)
    for u in usage:
        fill = "" if u.fill is None else f"{u.fill:.0%}" + (" (above high water)" if u.above_high_water
                                                              else "")
        table.add_row(u.name, u.kind, str(u.packs), human_size(u.bytes), human_size(u.live_bytes),
                      str(u.objects),
                      f"{u.replicas} ({human_size(u.replica_bytes)})" if u.replicas else "",
                      human_size(u.capacity) if u.capacity else "-", fill,
                      str(u.moving) if u.moving else "")
    out.table(table)
    return 0
