"""Writing a file that appears only once complete and durable.

:func:`write_atomically` writes to a temporary file beside the target, fsyncs it, renames it over the
target and fsyncs the directory: a reader (or a crash) sees the old file or the whole new one, never a
part. It is how the CLI's ``get -o`` and the DICOM layer's export hand bytes out of the archive.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from mmarchive.errors import StorageError


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
