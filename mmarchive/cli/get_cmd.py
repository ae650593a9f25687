"""``mmarchive get ID [-o FILE]``: write one object's bytes to stdout or to a file, streaming.

The object is read chunk by chunk through :meth:`Archive.open_object`, which verifies every chunk and the
whole-object hash, so memory use is one chunk whatever the object's size. A file is written atomically: to a
temporary file beside it, fsynced, then renamed over FILE; on any failure (damage found: exit 5) the
temporary file is removed and FILE is left as it was. On stdout, damage can only stop the stream midway.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from mmarchive.cli.session import Output, Subparsers, add_command, open_archive
from mmarchive.errors import StorageError


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


def write_atomically(target: Path, pieces: Iterable[bytes]) -> int:
    """Write ``pieces`` to ``target`` through a fsynced temporary file and a rename; return the size.

    If anything fails (including an IntegrityError from ``pieces``) the temporary file is removed and
    the error propagates; operating-system errors become :class:`StorageError`.
    """
    directory = target.parent
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise StorageError(f"cannot write {target}: {e.strerror or e}") from e
    tmp = Path(tmp_name)
    try:
        _apply_umask(fd)
        with os.fdopen(fd, "wb") as f:
            size = _copy(pieces, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, StorageError):
            raise StorageError(f"cannot write {target}: {e.strerror or e}") from e
        raise
    _fsync_directory(directory)
    return size


def _copy(pieces: Iterable[bytes], f: BinaryIO) -> int:
    size = 0
    for piece in pieces:
        f.write(piece)
        size += len(piece)
    return size


def _apply_umask(fd: int) -> None:
    """mkstemp makes the file 0600; give it the mode a plainly created file would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)


def _fsync_directory(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
