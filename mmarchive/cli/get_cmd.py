"""``mmarchive get ID [-o FILE]``: write one object's bytes to stdout or to a file, streaming.

The object is read chunk by chunk through :meth:`Archive.open_object`, which verifies every chunk and the
whole-object hash, so memory use is one chunk whatever the object's size. A file is written atomically: to a
temporary file beside it, fsynced, then renamed over FILE; on any failure (damage found: exit 5) the
temporary file is removed and FILE is left as it was. On stdout, damage can only stop the stream midway.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmarchive.atomicwrite import write_atomically
from mmarchive.cli.session import Output, Subparsers, add_command, open_archive


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "get", summary="write an object's bytes to stdout or a file",
        description="Write object ID's bytes to stdout, or with -o to FILE (atomically: FILE appears "
                    "only once complete and verified). Every byte is checked against its checksums "
                    "while it is read.")
    parser.add_argument("id", metavar="ID", help="the object id (64 hexadecimal digits)")
    parser.add_argument("-o", "--output", metavar="FILE", type=Path, default=None,
                        help="write to FILE instead of stdout ('-' is stdout)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    target: Path | None = args.output
    if target is None or str(target) == "-":
        stream = out.data_stream()  # stdout now carries the object: errors go to stderr
        with open_archive(args, readonly=True) as archive, \
                archive.open_object(args.id, tenant=args.tenant) as reader:
            for piece in reader.read_chunkwise():
                stream.write(piece)
        stream.flush()
        return 0
    with open_archive(args, readonly=True) as archive, \
            archive.open_object(args.id, tenant=args.tenant) as reader:
        size = write_atomically(target, reader.read_chunkwise())
    if out.json_mode:
        out.emit({"id": args.id, "tenant": args.tenant, "size": size, "output": str(target)})
    else:
        out.note(f"wrote {size} bytes to {target}")
    return 0
