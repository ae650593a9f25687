"""The catalog of benchmark groups that `python -m benchmarks GROUP` can run.

This module owns which groups exist and in which order `all` runs them. To add a group,
write a module with a function `run_<name>(context: BenchmarkContext) -> list[ResultRow]`,
wrap it in a `BenchmarkGroup` and append it to `GROUPS` below; nothing else registers
anything, and the tuple is never changed at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from benchmarks.bigobject_group import BIGOBJECT_GROUP
from benchmarks.dicom_ingest_group import DICOM_INGEST_GROUP
from benchmarks.dicom_query_group import DICOM_QUERY_GROUP
from benchmarks.facade_group import FACADE_GROUP
from benchmarks.harness import BenchmarkGroup
from benchmarks.ingest_group import INGEST_GROUP
from benchmarks.lifecycle_group import LIFECYCLE_GROUP
from benchmarks.limits_group import LIMITS_GROUP
from benchmarks.native_group import NATIVE_GROUP
from benchmarks.reads_group import READS_GROUP
from benchmarks.tiers_group import TIERS_GROUP

GROUPS: Final[tuple[BenchmarkGroup, ...]] = (
    LIMITS_GROUP,
    INGEST_GROUP,
    BIGOBJECT_GROUP,
    READS_GROUP,
    NATIVE_GROUP,
    DICOM_QUERY_GROUP,
    DICOM_INGEST_GROUP,
    FACADE_GROUP,
    TIERS_GROUP,
    LIFECYCLE_GROUP,
)
"""Every group, in the order `all` runs them (limits first: later groups reuse them)."""

ALL_GROUPS: Final = "all"


def group_names() -> tuple[str, ...]:
    return tuple(g.name for g in GROUPS)


def select_groups(names: Sequence[str]) -> list[BenchmarkGroup]:
    """The groups named (or every group for "all"), each once, in catalog order."""
    known = {g.name: g for g in GROUPS}
    unknown = [n for n in names if n != ALL_GROUPS and n not in known]
    if unknown:
        raise KeyError(
            f"unknown benchmark group(s) {', '.join(unknown)}; "
            f"known: {', '.join((*known, ALL_GROUPS))}"
        )
    wanted = set(known) if ALL_GROUPS in names else set(names)
    return [g for g in GROUPS if g.name in wanted]
