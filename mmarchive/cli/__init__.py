"""The ``mmarchive`` ops command line: one thin module per command over the :class:`~mmarchive.Archive` API.

:mod:`mmarchive.cli.main` builds the parser, dispatches and maps every error to an exit code in one place;
:mod:`mmarchive.cli.session` opens the archive and prints (human tables, JSON lines, progress bars); each
``*_cmd`` module registers one subcommand and turns its arguments into library calls. No archive logic
lives here: what the CLI can do, the library can do. See docs/cli.md for the user-facing contract.
"""
