"""Shared fixtures: tiny archives, so that chunk, pack and commit edges are reached with little data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from mmarchive.archive import Archive
from mmarchive.config import ArchiveConfig, IndexConfig, KiB, MiB, StoreConfig

settings.register_profile("default", deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.load_profile("default")

#: Chunking starts at 16 KiB, chunks are 4-32 KiB, packs seal at 256 KiB.
TINY = ArchiveConfig(
    store=StoreConfig(chunk_threshold=16 * KiB, chunk_min=4 * KiB, chunk_avg=8 * KiB,
                      chunk_max=32 * KiB, pack_size=256 * KiB, parallel_threshold=8 * KiB),
    index=IndexConfig(map_size=1 * MiB, commit_objects=50, commit_bytes=1 * MiB),
)


@pytest.fixture
def tiny_config() -> ArchiveConfig:
    return TINY


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    with Archive.create(tmp_path / "archive", TINY) as a:
        yield a
