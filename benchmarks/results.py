"""Benchmark result rows and how they are shown and saved.

This module owns `ResultRow`, the one shape every benchmark group returns (what was measured,
its value and unit, the limit it is compared to and the ratio between them), and the two ways
rows leave the process: a table on stdout (a `rich` table on a terminal, aligned plain text
otherwise) and a JSON report file. It depends on nothing else in the benchmarks.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

MIB: float = 1024.0 * 1024.0


@dataclass(frozen=True)
class ResultRow:
    """One figure: `value` `unit`, optionally set against a limit measured in the same unit.

    `limit_name` names the limit (for example "ct: zstd-3 compress, 2 threads") and
    `limit_value` is its value; `ratio` is value / limit_value. `details` holds anything
    else worth keeping in the JSON report (raw measurement dicts, counts, settings).
    """

    group: str
    dataset: str
    name: str
    value: float
    unit: str
    limit_name: str | None = None
    limit_value: float | None = None
    note: str = ""
    details: Mapping[str, object] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.limit_value is None or self.limit_value == 0.0:
            return None
        return self.value / self.limit_value

    def to_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "dataset": self.dataset,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "limit_name": self.limit_name,
            "limit_value": self.limit_value,
            "ratio": self.ratio,
            "note": self.note,
            "details": dict(self.details),
        }


def format_value(value: float) -> str:
    """Three significant figures at least, never scientific notation, thousands separated."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100.0:
        return f"{value:,.0f}"
    if magnitude >= 10.0:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


_HEADERS = ("group", "dataset", "measure", "value", "unit", "compared to", "limit", "ratio",
            "note")


def _cells(row: ResultRow) -> tuple[str, ...]:
    ratio = row.ratio
    return (
        row.group,
        row.dataset,
        row.name,
        format_value(row.value),
        row.unit,
        row.limit_name or "",
        "" if row.limit_value is None else format_value(row.limit_value),
        "" if ratio is None else f"{ratio:.2f}",
        row.note,
    )


_RIGHT_ALIGNED = frozenset({"value", "limit", "ratio"})


def render_plain(rows: Sequence[ResultRow], stream: TextIO) -> None:
    """Aligned text columns, one row per line (for logs and pipes)."""
    table = [_HEADERS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_HEADERS))]
    for n, line in enumerate(table):
        parts = [
            cell.rjust(w) if header in _RIGHT_ALIGNED else cell.ljust(w)
            for cell, w, header in zip(line, widths, _HEADERS, strict=True)
        ]
        stream.write("  ".join(parts).rstrip() + "\n")
        if n == 0:
            stream.write("  ".join("-" * w for w in widths) + "\n")


def render_rich(rows: Sequence[ResultRow], title: str) -> None:
    """`rich` tables on the terminal: one per (group, data set), measures never wrapped."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(title, style="bold")
    sections: dict[tuple[str, str], list[ResultRow]] = {}
    for row in rows:
        sections.setdefault((row.group, row.dataset), []).append(row)
    for (group, dataset), section_rows in sections.items():
        table = Table(title=f"{group} / {dataset}", header_style="bold", title_justify="left")
        for header in _HEADERS[2:]:
            table.add_column(
                header,
                justify="right" if header in _RIGHT_ALIGNED else "left",
                no_wrap=header in {"measure", "value", "unit", "limit", "ratio"},
                overflow="fold",
            )
        for row in section_rows:
            table.add_row(*_cells(row)[2:])
        console.print(table)


def render_rows(rows: Sequence[ResultRow], title: str, stream: TextIO | None = None) -> None:
    """Show `rows` on `stream` (stdout by default): rich on a terminal, plain text otherwise."""
    out = sys.stdout if stream is None else stream
    if out is sys.stdout and out.isatty():
        render_rich(rows, title)
    else:
        out.write(f"{title}\n")
        render_plain(rows, out)


def write_report(path: Path, report: Mapping[str, object]) -> None:
    """Write a JSON report (creating its folder); unknown objects are written as strings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=str, allow_nan=True)
    path.write_text(text + "\n", encoding="utf-8")
