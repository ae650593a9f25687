"""A worker process of a lifecycle plan: ``python -m mmarchive.lifecycle.planworker``.

Reads one pickled job (the arguments of :func:`mmarchive.lifecycle.runner.scan_in_worker`) from stdin,
scans its share of the archive's objects table on a read-only handle of its own, and writes the pickled
result to stdout; an :class:`~mmarchive.errors.ArchiveError` is pickled back in place of the result. Only
:func:`mmarchive.lifecycle.runner.make_plan` starts it.
"""

from __future__ import annotations

import pickle
import sys

from mmarchive.errors import ArchiveError
from mmarchive.lifecycle.runner import scan_in_worker


def main() -> None:
    job = pickle.loads(sys.stdin.buffer.read())
    try:
        result: object = scan_in_worker(*job)
    except ArchiveError as e:
        result = e
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
