"""``mmarchive init``: create a new, empty archive and write its settings into its ``mmarchive.toml``.

The options set the store's settings (pack size, chunking sizes, compression, zstd level); those not given
keep the library's defaults. The settings are validated by :class:`~mmarchive.config.ArchiveConfig` and the
archive is made by :meth:`Archive.create`, which refuses a directory that is not empty.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from mmarchive.archive import Archive
from mmarchive.cli.session import Output, Subparsers, add_command, archive_dir, human_size, key_value_table
from mmarchive.config import (
    COMPRESSION_MODES,
    CONFIG_FILE,
    ArchiveConfig,
    StoreConfig,
    format_size,
    parse_size,
)
from mmarchive.errors import InvalidInputError

#: Option name -> StoreConfig field, for the size options.
_SIZE_OPTIONS = {
    "pack_size": "size at which a pack file is sealed",
    "chunk_threshold": "objects larger than this are cut into content-defined chunks",
    "chunk_min": "smallest chunk",
    "chunk_avg": "average chunk size (a power of two)",
    "chunk_max": "largest chunk",
}


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "init", summary="create a new archive", tenant=False,
        description="Create a new, empty archive in the --archive directory (which must not exist or "
                    "be empty) and write its settings into its mmarchive.toml. Sizes are bytes or take "
                    "a unit: 4096, 512KiB, 64MiB, 1GiB.")
    defaults = StoreConfig()
    for field, what in _SIZE_OPTIONS.items():
        parser.add_argument(f"--{field.replace('_', '-')}", dest=field, metavar="SIZE", type=_size,
                            default=None,
                            help=f"{what} (default: {format_size(getattr(defaults, field))})")
    parser.add_argument("--compression", choices=COMPRESSION_MODES, default=None,
                        help="auto: zstd when it pays, byte-shuffle for 16-bit data; zstd: always try "
                             f"zstd; none: store raw (default: {defaults.compression})")
    parser.add_argument("--zstd-level", metavar="N", type=int, default=None,
                        help=f"zstd level 1..22 (default: {defaults.zstd_level})")
    parser.add_argument("--exist-ok", action="store_true",
                        help="if the directory already holds an archive, leave it unchanged and succeed "
                             "(its settings are kept; the options above are then ignored)")
    parser.set_defaults(run=run)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def run(args: argparse.Namespace, out: Output) -> int:
    changes: dict[str, Any] = {field: getattr(args, field) for field in _SIZE_OPTIONS}
    changes["compression"] = args.compression
    changes["zstd_level"] = args.zstd_level
    store = dataclasses.replace(StoreConfig(), **{k: v for k, v in changes.items() if v is not None})
    config = ArchiveConfig(store=store)
    path = archive_dir(args)
    if args.exist_ok and (path / CONFIG_FILE).exists():
        existing = ArchiveConfig.load(path / CONFIG_FILE)
        if out.json_mode:
            out.emit({"archive": str(path), "archive_id": existing.archive_id, "existed": True,
                      "store": dataclasses.asdict(existing.store)})
        else:
            out.line(f"archive {existing.archive_id} already exists in {path}; left unchanged")
        return 0
    with Archive.create(path, config) as archive:
        archive_id = archive.config.archive_id
    settings = dataclasses.asdict(store)
    if out.json_mode:
        out.emit({"archive": str(path), "archive_id": archive_id, "store": settings})
        return 0
    out.line(f"created archive {archive_id} in {path}")
    out.table(key_value_table([
        (name, human_size(value) if name in _SIZE_OPTIONS or name == "parallel_threshold" else str(value))
        for name, value in settings.items()]))
    return 0
