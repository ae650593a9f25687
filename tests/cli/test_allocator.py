"""The bulk commands' allocator settings: freed buffers are reused instead of faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_ROUNDS = r"""
import resource, sys
from mmarchive.cli.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None

def faults_of_one_round():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [bytes(bytearray(b"x" * (3 << 20))) for _ in range(16)]  # 48 MiB written, then freed
    del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_one_round()
print(applied, faults_of_one_round())
"""
_PAGES = (48 << 20) // os.sysconf("SC_PAGE_SIZE")


def _second_round(mode: str, **env: str) -> tuple[str, int]:
    """(whether the settings were applied, page faults of a second round of 3 MiB buffers)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _ROUNDS, mode], env={**clean, **env}, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], int(out[1])


def test_freed_buffers_are_reused_without_new_page_faults() -> None:
    applied, faults = _second_round("keep")
    if applied != "True":
        pytest.skip("not glibc: mallopt is not there to call")
    assert faults < _PAGES // 10
    default_applied, default_faults = _second_round("default")
    assert default_applied == "None"
    assert default_faults > _PAGES // 2  # glibc's defaults: the same buffers fault in again


def test_a_malloc_variable_set_by_the_user_wins() -> None:
    applied, _faults = _second_round("keep", MALLOC_ARENA_MAX="2")
    assert applied == "False"
