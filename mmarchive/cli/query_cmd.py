"""``mmarchive query --level LEVEL KEY=VALUE...``: match the DICOM catalog as QIDO-RS and C-FIND do.

Keys are DICOM keywords of the level or the levels above; values use DICOM matching (``*`` and ``?``
wildcards, ``a-b`` date and time ranges, ``uid1\\uid2`` lists, case-insensitive person names). The result is a
table, or with ``--json`` one JSON array of DICOM JSON objects, as a QIDO-RS response body.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from mmarchive.cli.session import Output, Subparsers, add_command, archive_dir
from mmarchive.dicom.attributes import BY_KEYWORD, COMPUTED, Level
from mmarchive.dicom.store import DicomStore

_NAMES = {f"{a.tag:08X}": a.keyword for a in (*BY_KEYWORD.values(), *COMPUTED)}


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "query", summary="find studies, series or instances in the DICOM catalog",
        description="Match KEY=VALUE constraints (DICOM keywords and DICOM matching: wildcards, "
                    "date ranges, UID lists) at a level and print the matches: a table, or with --json "
                    "a JSON array of DICOM JSON objects as QIDO-RS returns them.")
    parser.add_argument("constraints", nargs="*", metavar="KEY=VALUE", type=_pair,
                        help="e.g. PatientID=12345, StudyDate=20240101-20240131, PatientName='DOE*'")
    parser.add_argument("--level", choices=[lv.value for lv in Level if lv is not Level.PATIENT],
                        default=Level.STUDY.value, help="what to list (default: study)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="at most N results")
    parser.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N results")
    parser.add_argument("--include", action="append", default=[], metavar="KEYWORD",
                        help="also return this attribute ('all' for every one; repeatable)")
    parser.add_argument("--fuzzy", action="store_true", help="fuzzy matching of person names")
    parser.set_defaults(run=run)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def run(args: argparse.Namespace, out: Output) -> int:
    include: Any = "all" if "all" in args.include else tuple(args.include)
    with DicomStore.open(archive_dir(args), readonly=True) as store:
        results = store.query(args.level, dict(args.constraints), tenant=args.tenant, limit=args.limit,
                              offset=args.offset, include=include, fuzzy=args.fuzzy)
    if out.json_mode:
        out.line(json.dumps(results, ensure_ascii=False))
        return 0
    if not results:
        out.note("no matches")
        return 0
    columns = sorted({tag for r in results for tag in r}, key=lambda t: _NAMES.get(t, t))
    table = Table(*[_NAMES.get(t, t) for t in columns])
    for r in results:
        table.add_row(*[_text(r.get(t)) for t in columns])
    out.table(table)
    return 0


def _text(element: dict[str, Any] | None) -> str:
    if not element or "Value" not in element:
        return ""
    values = [v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in element["Value"]]
    return "\\".join(values)


