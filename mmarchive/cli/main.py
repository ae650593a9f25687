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
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from mmarchive.cli.session import Output
from mmarchive.errors import ArchiveError

#: Exit status when the command was interrupted (Ctrl-C), as shells report SIGINT.
EXIT_INTERRUPTED = 130
#: Exit status of a command line argparse cannot parse (as InvalidInputError's).
EXIT_USAGE = 2
#: Exit status for failures that are not an ArchiveError (and for ArchiveError's own base class).
EXIT_FAILURE = 1

#: Each command, in the order ``--help`` lists them; ``NAME_cmd`` in :mod:`mmarchive.cli` defines it (its
#: ``register``). Only the module of the command being run is imported: a command then does not pay for
#: the imports of the others (the lifecycle runner, rich's tables), about 0.15 s on each start.
_COMMANDS: tuple[str, ...] = (
    "init",
    "put",
    "get",
    "ls",
    "stat",
    "rm",
    "verify",
    "gc",
    "reindex",
    "ingest",
    "query",
    "export",
    "tiers",
    "lifecycle",
    "hold",
    "audit",
    "serve",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmarchive")
    except PackageNotFoundError:
        return "unknown"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of `command` when that names one."""
    parser = argparse.ArgumentParser(
        prog="mmarchive",
        description="Operate an mmarchive archive: deduplicated, checksummed, compressed object storage.",
        epilog="Run `mmarchive COMMAND --help` for a command's options. Exit codes and JSON output "
               "shapes are documented in docs/cli.md.")
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [command] if command is not None and command in _COMMANDS else list(_COMMANDS)
    for name in names:
        importlib.import_module(f"mmarchive.cli.{name}_cmd").register(subparsers)
    return parser


class _VersionAction(argparse.Action):
    """``--version``: looks the installed version up only when asked (the lookup takes about 25 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        sys.stdout.write(f"{parser.prog} {_version()}\n")  # on stdout, as argparse's own version action
        parser.exit()


def exit_code_for(exc: BaseException) -> int:
    """The exit status for an error a command raised (see the table in docs/cli.md)."""
    if isinstance(exc, ArchiveError):
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv[0] if argv else None).parse_args(argv)
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
