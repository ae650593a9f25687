"""What every command shares: the common options, finding and opening the archive, and all printing.

A command adds its parser with :func:`add_command` (which gives it ``--archive``, ``--json`` and, where it
applies, ``--tenant``), opens the archive with :func:`open_archive`, and prints only through an
:class:`Output`: one JSON line per result with ``--json``, rich tables and plain lines otherwise, a
progress bar on stderr only when stderr is a terminal, and errors in the one format docs/cli.md gives.
rich is imported only when a table or a progress bar is shown, so a piped command (``--json``) starts
without it. Exit codes are not decided here but in :mod:`mmarchive.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TextIO, TypeAlias

from mmarchive.archive import DEFAULT_TENANT, Archive
from mmarchive.errors import IntegrityError
from mmarchive.records import ObjectInfo

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

#: Environment variable naming the archive used when ``--archive`` is not given.
ARCHIVE_ENV = "MMARCHIVE_ARCHIVE"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
class ProgressCallback(Protocol):
    """Called with (done, total); ``total`` None means the amount of work is unknown (or unchanged).

    ``note`` replaces the text shown after the bar (a rate, say).
    """

    def __call__(self, done: int, new_total: int | None = None, *, note: str | None = None) -> None: ...

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_PIPE_WIDTH = 4096  # tables written to a pipe or file keep their natural width instead of wrapping


# -- options and opening ----------------------------------------------------------------------------


def default_archive_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The archive used without ``--archive``: ``$MMARCHIVE_ARCHIVE``, else the per-user data directory.

    The per-user default is ``$XDG_DATA_HOME/mmarchive/archive`` when ``XDG_DATA_HOME`` is an absolute
    path (the XDG spec says to ignore a relative one), else ``~/.local/share/mmarchive/archive``.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(ARCHIVE_ENV, "")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "mmarchive" / "archive"


def add_command(subparsers: Subparsers, name: str, *, summary: str, description: str,
                tenant: bool = True, tenant_default: str | None = DEFAULT_TENANT
                ) -> argparse.ArgumentParser:
    """Add subcommand ``name`` with the options every command shares."""
    parser = subparsers.add_parser(name, help=summary, description=description)
    parser.add_argument(
        "--archive", metavar="DIR", type=Path, default=None,
        help=f"the archive directory (default: ${ARCHIVE_ENV}, else $XDG_DATA_HOME/mmarchive/archive, "
             "else ~/.local/share/mmarchive/archive)")
    if tenant:
        shown = tenant_default if tenant_default is not None else "all tenants"
        parser.add_argument("--tenant", metavar="T", default=tenant_default,
                            help=f"the tenant to work in (default: {shown})")
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON lines on stdout (see docs/cli.md)")
    return parser


def archive_dir(args: argparse.Namespace) -> Path:
    given: Path | None = args.archive
    return given if given is not None else default_archive_dir()


def open_archive(args: argparse.Namespace, *, readonly: bool) -> Archive:
    """Open the archive named by ``--archive`` (or the default); read-only needs no writer lock."""
    return Archive.open(archive_dir(args), readonly=readonly)


def files_under(root: Path) -> list[tuple[Path, OSError | None]]:
    """Every file under ``root`` in sorted path order, each with None, or a directory that could not be
    read with its error (in its place in the order). Symlinks to files are followed, to directories not.
    """
    found: list[tuple[tuple[str, ...], Path, OSError | None]] = []

    def unreadable(e: OSError) -> None:
        where = Path(e.filename or root)
        found.append((where.relative_to(root).parts if where.is_relative_to(root) else (), where, e))

    for dirpath, _dirnames, filenames in os.walk(root, onerror=unreadable):
        folder = Path(dirpath)
        parts = folder.relative_to(root).parts  # once a folder, not once a file (2,000 files: 45 -> 19 ms)
        found.extend(((*parts, name), folder / name, None) for name in filenames)
    found.sort(key=lambda entry: entry[0])
    return [(path, error) for _key, path, error in found]


# -- formatting -------------------------------------------------------------------------------------


def human_size(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; bytes below 1 KiB are shown exactly."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_time(ns: int) -> str:
    """A creation time (ns since the epoch) as local time to the second."""
    return datetime.fromtimestamp(ns / 1e9).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def object_json(info: ObjectInfo) -> dict[str, Any]:
    """The JSON "object" shape: what the index knows, without put's per-call fields."""
    d = info.to_json()
    d.pop("already_stored", None)
    d.pop("source", None)
    return d


def key_value_table(rows: list[tuple[str, str]]) -> Table:
    """A two-column table of field names and values, for one record."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, Text(value))  # values are data, never rich markup
    return table


# -- output -----------------------------------------------------------------------------------------


class Output:
    """Everything a command prints goes through here: stdout for results, stderr for the rest."""

    def __init__(self, *, json_mode: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.json_mode = json_mode
        self._stdout = stdout
        self._stderr = stderr
        #: Set when stdout carries an object's bytes: errors then go to stderr even with --json.
        self.stdout_is_data = False
        self._live: Progress | None = None

    @cached_property
    def console(self) -> Console:
        """rich's console on stdout, made (and rich imported, about 0.1 s) only when a table is printed."""
        from rich.console import Console

        tty = _isatty(self._stdout)
        return Console(file=self._stdout, highlight=False, width=None if tty else _PIPE_WIDTH)

    @property
    def show_progress(self) -> bool:
        return _isatty(self._stderr)

    def emit(self, obj: Mapping[str, Any]) -> None:
        """Print one JSON line and flush it, so a reader sees each result when it happens."""
        self._write_line(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def line(self, text: str) -> None:
        """Print one human-readable line on stdout."""
        if self._live is not None and _isatty(self._stdout):
            # Same terminal as the bar: print above it rather than through it.
            self._live.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self._write_line(text)

    def table(self, table: Table) -> None:
        if _isatty(self._stdout):
            # At its natural width even on a narrow terminal (which then wraps the lines) rather
            # than squeezed until ids and times are cut.
            from rich.measure import Measurement

            natural = Measurement.get(self.console, self.console.options, table).maximum
            self.console.print(table, width=max(natural, self.console.width), crop=False)
            self._stdout.flush()
            return
        with self.console.capture() as captured:  # to a pipe: plain lines without the cells' padding
            self.console.print(table)
        for text in captured.get().splitlines():
            self._stdout.write(text.rstrip() + "\n")
        self._stdout.flush()

    def note(self, text: str) -> None:
        """A human-only remark on stderr (never with --json)."""
        if not self.json_mode:
            self._stderr.write(f"mmarchive: {text}\n")
            self._stderr.flush()

    def error(self, exc: BaseException, *, source: str | None = None) -> None:
        """Report an error: ``mmarchive: error: ...`` on stderr, or a JSON error line with --json."""
        message = str(exc) or type(exc).__name__
        if self.json_mode:
            body: dict[str, Any] = {"type": type(exc).__name__, "message": message}
            if source is not None:
                body["source"] = source
            if isinstance(exc, IntegrityError):
                for key in ("pack", "object_id", "offset"):
                    if getattr(exc, key, None) is not None:
                        body[key] = getattr(exc, key)
            text = json.dumps({"error": body}, ensure_ascii=False, separators=(",", ":"))
            if self.stdout_is_data:
                self._stderr.write(text + "\n")
                self._stderr.flush()
            else:
                self._write_line(text)
        else:
            self._stderr.write(f"mmarchive: error: {message}\n")
            self._stderr.flush()

    def data_stream(self) -> BinaryIO:
        """The binary stdout, for an object's bytes."""
        self.stdout_is_data = True
        self._stdout.flush()
        stream: BinaryIO = self._stdout.buffer
        return stream

    @contextmanager
    def progress(self, description: str, total: int | None, *,
                 counted: bool = True) -> Iterator[ProgressCallback]:
        """A progress bar on stderr while the block runs, if stderr is a terminal; else a no-op.

        Yields ``update(done, total)``. While the total is None the bar pulses; ``counted=False`` is
        for work that reports no progress at all (a spinner and the elapsed time).
        """
        if not self.show_progress:
            yield _no_progress
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
        if counted:
            columns += [MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}")]
        else:
            columns += [TimeElapsedColumn()]
        console = Console(file=self._stderr)
        with Progress(*columns, console=console, transient=True, redirect_stdout=False,
                      redirect_stderr=False) as bar:
            task = bar.add_task(description, total=total, note="")

            def update(done: int, new_total: int | None = None, *, note: str | None = None) -> None:
                fields: dict[str, Any] = {} if note is None else {"note": note}
                if new_total is not None:
                    bar.update(task, completed=done, total=new_total, **fields)
                else:
                    bar.update(task, completed=done, **fields)

            self._live = bar
            try:
                yield update
            finally:
                self._live = None

    def _write_line(self, text: str) -> None:
        self._stdout.write(text + "\n")
        self._stdout.flush()


def _no_progress(done: int, new_total: int | None = None, *, note: str | None = None) -> None:
    return None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
