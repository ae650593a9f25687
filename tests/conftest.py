"""Shared fixtures: tiny archives, so that chunk, pack and commit edges are reached with little data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS, tests/s3server.py): one per session, started on first use."""
    from tests.s3server import seaweedfs  # boto3 and the server only for sessions that use S3

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


if TYPE_CHECKING:
    from tests.s3server import S3Server
