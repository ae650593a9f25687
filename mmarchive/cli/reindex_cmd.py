"""``mmarchive reindex``: rebuild the whole LMDB index from the pack files with :meth:`Archive.reindex`.

The index is a cache of what the packs hold; this rebuilds it (beside the old one, swapped in at the end)
and prints the archive's totals as the new index counts them. It takes the writer lock (exit 4 while
another process writes). On a terminal a progress bar counts the packs scanned.
"""

from __future__ import annotations

import argparse

from mmarchive.cli.session import Output, Subparsers, add_command, open_archive
from mmarchive.cli.stat_cmd import print_totals


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "reindex", summary="rebuild the index from the packs", tenant=False,
        description="Rebuild the index from the pack files alone, then print the archive's totals.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_archive(args, readonly=False) as archive:
        with out.progress("reindex packs", None) as progress:
            archive.reindex(progress=progress)
        stats = archive.stats()
    out.note("index rebuilt")
    print_totals(stats, out)
    return 0
