"""Entry point of the ``mmarchive`` command: builds the parser, dispatches, and maps errors to exit codes.

This is the one place where an exception becomes an exit status: an
:class:`~mmarchive.errors.ArchiveError` exits with its class's ``exit_code`` after one
``mmarchive: error: ...`` line on stderr (a ``{"error": ...}`` JSON line on stdout with ``--json``);
argparse usage errors exit 2, an interrupt 130. Commands return 0 or raise; they never call ``sys.exit``,
and :func:`main` returns the status rather than exiting, so it can be called in-process.
Runs as the ``mmarchive`` console script and as ``python -m mmarchive.cli.main``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from mmarchive.cli import (
    audit_cmd,
    export_cmd,
    gc_cmd,
    get_cmd,
    hold_cmd,
    ingest_cmd,
    init_cmd,
    lifecycle_cmd,
    ls_cmd,
    put_cmd,
    query_cmd,
    reindex_cmd,
    rm_cmd,
    serve_cmd,
    stat_cmd,
    tiers_cmd,
    verify_cmd,
)
from mmarchive.cli.session import Output, Subparsers
from mmarchive.errors import ArchiveError

#: Exit status when the command was interrupted (Ctrl-C), as shells report SIGINT.
EXIT_INTERRUPTED = 130
#: Exit status of a command line argparse cannot parse (as InvalidInputError's).
EXIT_USAGE = 2
#: Exit status for failures that are not an ArchiveError (and for ArchiveError's own base class).
EXIT_FAILURE = 1

_COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    init_cmd.register,
    put_cmd.register,
    get_cmd.register,
    ls_cmd.register,
    stat_cmd.register,
    rm_cmd.register,
    verify_cmd.register,
    gc_cmd.register,
    reindex_cmd.register,
    ingest_cmd.register,
    query_cmd.register,
    export_cmd.register,
    tiers_cmd.register,
    lifecycle_cmd.register,
    hold_cmd.register,
    audit_cmd.register,
    serve_cmd.register,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmarchive")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmarchive",
        description="Operate an mmarchive archive: deduplicated, checksummed, compressed object storage.",
        epilog="Run `mmarchive COMMAND --help` for a command's options. Exit codes and JSON output "
               "shapes are documented in docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _COMMANDS:
        register(subparsers)
    return parser


def exit_code_for(exc: BaseException) -> int:
    """The exit status for an error a command raised (see the table in docs/cli.md)."""
    if isinstance(exc, ArchiveError):
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2), already printed by argparse
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    out = Output(json_mode=bool(args.json), stdout=sys.stdout, stderr=sys.stderr)
    try:
        status: int = args.run(args, out)
        return status
    except (ArchiveError, OSError) as e:
        if isinstance(e, BrokenPipeError):
            return _broken_pipe()
        out.error(e)
        return exit_code_for(e)
    except KeyboardInterrupt as e:
        sys.stderr.write("mmarchive: interrupted\n")
        return exit_code_for(e)


def _broken_pipe() -> int:
    """The reader of stdout went away (``mmarchive ls | head``): stop quietly, as other tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
    except (OSError, ValueError):
        pass
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
