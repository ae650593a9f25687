"""An archive's tiers, hottest first, built from its config: where new packs land and where each pack is read.

The first tier is a local directory and receives every new pack; colder tiers (more directories, S3
buckets) receive sealed packs that the lifecycle moves there. Backends are built on first use, so opening an
archive whose cold tier is unreachable works until a pack on that tier is read. The index records the tier
of every pack by name; this module maps names to backends and says which tier is colder than another.
"""

from __future__ import annotations

import threading
from pathlib import Path

from mmarchive.config import TierConfig
from mmarchive.errors import IntegrityError, InvalidInputError
from mmarchive.tiers.base import Tier
from mmarchive.tiers.local import LocalTier


def build_tier(archive_path: Path, cfg: TierConfig) -> Tier:
    """Build the backend a ``[tiers.NAME]`` table declares."""
    if cfg.kind == "local":
        root = Path(cfg.path)
        return LocalTier(root if root.is_absolute() else archive_path / root, name=cfg.name)
    if cfg.kind == "s3":
        from mmarchive.tiers.s3 import S3Tier  # boto3 is imported only when an S3 tier is used

        return S3Tier.from_config(cfg.name, cfg.options)
    raise InvalidInputError(f"tier {cfg.name}: unknown kind {cfg.kind!r}")


class TierSet:
    """The tiers of one open archive."""

    def __init__(self, archive_path: Path, configs: tuple[TierConfig, ...]) -> None:
        self.configs = configs
        self.order = {cfg.name: i for i, cfg in enumerate(configs)}
        landing = build_tier(archive_path, configs[0])
        assert isinstance(landing, LocalTier)
        #: Where new packs are created and appended to.
        self.landing: LocalTier = landing
        self._path = archive_path
        self._built: dict[str, Tier] = {landing.name: landing}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return [cfg.name for cfg in self.configs]

    def get(self, name: str) -> Tier:
        """The backend of a tier; an unknown name is damage (the index names a tier the config lost)."""
        tier = self._built.get(name)
        if tier is not None:
            return tier
        if name not in self.order:
            raise IntegrityError(f"the index places packs on tier {name!r}, which the archive's config "
                                 f"does not declare (it has {', '.join(self.names)}); restore its "
                                 "[tiers] table")
        with self._lock:
            tier = self._built.get(name)
            if tier is None:
                tier = self._built[name] = build_tier(self._path, self.configs[self.order[name]])
        return tier

    def config(self, name: str) -> TierConfig:
        if name not in self.order:
            raise InvalidInputError(f"no tier named {name!r}; this archive has {', '.join(self.names)}")
        return self.configs[self.order[name]]

    def colder(self, a: str, b: str) -> bool:
        """True when tier ``a`` comes after (is colder than) tier ``b``."""
        return self.order[a] > self.order[b]

    def built(self) -> list[Tier]:
        return list(self._built.values())

    def close(self) -> None:
        with self._lock:
            tiers = list(self._built.values())
        for tier in tiers:
            tier.close()
