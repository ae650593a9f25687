"""``mmarchive put FILE...``: store files (``-`` is stdin; a directory is stored recursively) as objects.

The inputs are expanded and checked first, then handed to :meth:`Archive.put_many` in one stream, which
reads each path itself (nothing is loaded whole here) and yields each object once it is durable; each is
printed at that moment, in input order. An input that cannot be read is reported where it stands in the
order, the others are still stored, and the command then fails with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mmarchive.archive import PutItem
from mmarchive.cli.session import Output, Subparsers, add_command, files_under, human_size, open_archive
from mmarchive.errors import InvalidInputError
from mmarchive.records import ObjectInfo

STDIN = "-"


@dataclass(frozen=True)
class _Input:
    """One object to store, or (``error`` set) one input that cannot be stored."""

    name: str
    item: PutItem | None
    error: InvalidInputError | None = None


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "put", summary="store files as objects",
        description="Store each FILE as one object and print its id once it is durable. "
                    "'-' reads one object from stdin. A directory is stored recursively: every file "
                    "under it, in sorted path order (symlinks to files are followed, symlinks to "
                    "directories are not). An unreadable input is reported, the others are still "
                    "stored, and the exit code is 2.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="a file, a directory, or - for stdin")
    parser.add_argument("--metadata", metavar="KEY=VALUE", action="append", type=_metadata_pair,
                        default=[], help="a metadata entry kept with every object (repeatable; values "
                                         "are strings)")
    parser.add_argument("--group", metavar="G", default="",
                        help="keep these objects in the same packs (a study, a series)")
    parser.set_defaults(run=run)


def _metadata_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def run(args: argparse.Namespace, out: Output) -> int:
    metadata = dict(args.metadata) if args.metadata else None
    report = _Report(list(_expand(args.files)), out)
    total = len(report.pending())
    with open_archive(args, readonly=False) as archive, out.progress("put", total) as progress:
        while todo := report.pending():
            feed = _Feed(report.inputs, todo)
            try:
                for info in archive.put_many(feed, tenant=args.tenant, metadata=metadata,
                                             group=args.group):
                    report.stored(info)
                    progress(report.handled, total)
                break
            except InvalidInputError as e:
                # put_many reads each path as it comes to it: a file that vanished or became
                # unreadable since it was checked fails there, as the last input pulled. Report it
                # and start again after the last object reported (objects staged meanwhile are
                # then found already stored).
                if feed.pulled == 0:
                    raise
                report.unreadable(todo[feed.pulled - 1], e)
                progress(report.handled, total)
        report.finish()
    if report.failed:
        names = ", ".join(report.failed[:5]) + (", ..." if len(report.failed) > 5 else "")
        raise InvalidInputError(f"{len(report.failed)} of {len(report.inputs)} inputs were not "
                                f"stored: {names}")
    return 0


class _Feed:
    """The items of ``inputs[todo]`` for put_many, counting how many it has taken."""

    def __init__(self, inputs: list[_Input], todo: list[int]) -> None:
        self._inputs = inputs
        self._todo = todo
        self.pulled = 0

    def __iter__(self) -> Iterator[PutItem]:
        for index in self._todo:
            item = self._inputs[index].item
            assert item is not None
            self.pulled += 1
            yield item


class _Report:
    """Prints outcomes in input order: each failed input where it stands, each object when durable."""

    def __init__(self, inputs: list[_Input], out: Output) -> None:
        self.inputs = inputs
        self.failed: list[str] = []
        self.handled = 0  # objects stored plus inputs that failed while storing
        self._out = out
        self._cursor = 0  # inputs[:_cursor] are reported

    def pending(self) -> list[int]:
        """Indexes of the inputs still to store."""
        return [i for i in range(self._cursor, len(self.inputs)) if self.inputs[i].item is not None]

    def stored(self, info: ObjectInfo) -> None:
        while self.inputs[self._cursor].item is None:
            self._report_error(self.inputs[self._cursor])
        self._cursor += 1
        self.handled += 1
        _report_object(info, self._out)

    def unreadable(self, index: int, error: InvalidInputError) -> None:
        self.inputs[index] = _Input(self.inputs[index].name, None, error)
        self.handled += 1

    def finish(self) -> None:
        while self._cursor < len(self.inputs):
            self._report_error(self.inputs[self._cursor])

    def _report_error(self, entry: _Input) -> None:
        assert entry.error is not None
        self._out.error(entry.error, source=entry.name)
        self.failed.append(entry.name)
        self._cursor += 1


def _report_object(info: ObjectInfo, out: Output) -> None:
    if out.json_mode:
        out.emit(info.to_json())
    else:
        status = "already stored" if info.already_stored else "stored"
        out.line(f"{info.id}  {human_size(info.size):>10}  {status:<14}  {info.source}")


def _expand(args: list[str]) -> Iterator[_Input]:
    """Turn the command-line inputs into objects to store, checking each can be read."""
    seen_stdin = False
    for arg in args:
        if arg == STDIN:
            if seen_stdin:
                yield _Input(arg, None, InvalidInputError("stdin ('-') can be given only once"))
            else:
                seen_stdin = True
                yield _Input("stdin", PutItem(source=sys.stdin.buffer, name="stdin"))
            continue
        path = Path(arg)
        if path.is_dir():
            yield from _walk(path)
        else:
            yield _check_file(path, arg)


def _walk(root: Path) -> Iterator[_Input]:
    for path, error in files_under(root):
        yield _check_file(path, str(path)) if error is None else _Input(str(path), None,
                                                                          _cannot_read(str(path), error))


def _check_file(path: Path, name: str) -> _Input:
    try:
        os.stat(path)
        if not os.access(path, os.R_OK):
            raise PermissionError(13, os.strerror(13), str(path))
    except OSError as e:
        return _Input(name, None, _cannot_read(name, e))
    return _Input(name, PutItem(source=path, name=name))


def _cannot_read(name: str, e: OSError) -> InvalidInputError:
    return InvalidInputError(f"cannot read {name}: {e.strerror or e}")
