"""Entry point of `python -m benchmarks`: hands the command line to `benchmarks.cli`."""

from benchmarks.cli import main

raise SystemExit(main())
