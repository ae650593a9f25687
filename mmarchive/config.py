"""Archive configuration: the TOML file at the root of every archive, and its typed form.

An archive's behaviour is fixed by its ``mmarchive.toml`` (written by ``init``, read by every open) and never
by module globals. This module owns the config schema, its defaults, validation and the TOML round trip.
It knows nothing of packs, the index or the CLI.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmarchive.errors import InvalidInputError

CONFIG_FILE = "mmarchive.toml"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB|K|M|G|T)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "K": KiB, "KiB": KiB, "M": MiB, "MiB": MiB, "G": GiB, "GiB": GiB,
               "T": 1024 * GiB, "TiB": 1024 * GiB}


def parse_size(value: int | str) -> int:
    """Return a byte count from an int or a string such as ``"64MiB"``."""
    if isinstance(value, bool):
        raise InvalidInputError(f"size must be a number of bytes or a string like '64MiB', not {value!r}")
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise InvalidInputError(f"size {value!r} is not understood; write bytes or e.g. '512KiB', '64MiB'")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def format_size(n: int) -> str:
    """Return the exact size as the largest binary unit that divides it (``"64MiB"``)."""
    for unit, mult in (("TiB", 1024 * GiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


COMPRESSION_MODES = ("auto", "zstd", "none")


@dataclass(frozen=True)
class StoreConfig:
    """How objects become records: chunking, compression, pack size."""

    #: Objects larger than this are cut by content-defined chunking; smaller ones are one record.
    chunk_threshold: int = 4 * MiB
    chunk_min: int = 512 * KiB
    chunk_avg: int = 2 * MiB
    chunk_max: int = 8 * MiB
    #: A pack is sealed (made immutable) once it reaches this size.
    pack_size: int = 64 * MiB
    #: ``auto``: zstd when it pays, tries byte-shuffle for 16-bit data, raw otherwise;
    #: ``zstd``: always try zstd (still raw when it does not shrink); ``none``: store raw.
    compression: str = "auto"
    zstd_level: int = 3
    #: put_many hashes and compresses objects of this size or more on its worker pool; smaller ones
    #: on the calling thread (for them, handing work between threads costs more than it saves).
    parallel_threshold: int = 64 * KiB

    def validate(self) -> None:
        if not (4 * KiB <= self.chunk_min <= self.chunk_avg <= self.chunk_max):
            raise InvalidInputError(
                "chunking sizes must satisfy 4KiB <= chunk_min <= chunk_avg <= chunk_max; "
                f"got {self.chunk_min}, {self.chunk_avg}, {self.chunk_max}")
        if self.chunk_avg & (self.chunk_avg - 1):
            raise InvalidInputError(f"chunk_avg must be a power of two, got {self.chunk_avg}")
        if self.chunk_max > 256 * MiB:
            raise InvalidInputError("chunk_max must be at most 256MiB")
        if self.chunk_threshold < self.chunk_min:
            raise InvalidInputError("chunk_threshold must be at least chunk_min")
        if self.pack_size < 4 * KiB:
            raise InvalidInputError("pack_size must be at least 4KiB")
        if self.compression not in COMPRESSION_MODES:
            raise InvalidInputError(
                f"compression must be one of {', '.join(COMPRESSION_MODES)}, not {self.compression!r}")
        if not 1 <= self.zstd_level <= 22:
            raise InvalidInputError(f"zstd_level must be 1..22, not {self.zstd_level}")


@dataclass(frozen=True)
class IndexConfig:
    """How the LMDB index is opened and committed."""

    #: Initial LMDB map size; the map grows automatically when full.
    map_size: int = 1 * GiB
    max_readers: int = 1024
    #: put_many commits (and reports objects durable) at least this often.
    commit_objects: int = 1000
    commit_bytes: int = 32 * MiB

    def validate(self) -> None:
        if self.map_size < MiB:
            raise InvalidInputError("index map_size must be at least 1MiB")
        if not 8 <= self.max_readers <= 65536:
            raise InvalidInputError("index max_readers must be 8..65536")
        if self.commit_objects < 1 or self.commit_bytes < 1:
            raise InvalidInputError("index commit_objects and commit_bytes must be positive")


#: The tier an archive has when its config declares none: the ``packs`` directory inside it.
DEFAULT_TIER_NAME = "local"
TIER_KINDS = ("local", "s3")
_TIER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_S3_KEYS = {"bucket", "prefix", "endpoint_url", "region", "part_size", "max_attempts"}


@dataclass(frozen=True)
class TierConfig:
    """One ``[tiers.NAME]`` table: a place packs live. Tiers are listed from hottest to coldest."""

    name: str = DEFAULT_TIER_NAME
    kind: str = "local"
    #: ``local``: the directory of the packs, relative to the archive directory unless absolute.
    path: str = "packs"
    #: Bytes the tier may hold (0: not limited); with ``high_water``, when capacity rules move data down.
    capacity: int = 0
    #: Fraction of ``capacity`` above which the least recently used eligible data moves down.
    high_water: float = 0.9
    #: ``s3``: bucket, prefix, endpoint_url, region, part_size, max_attempts (credentials come from
    #: boto3's usual sources, never from this file).
    options: dict[str, Any] = field(default_factory=dict)
    #: Another tier that keeps a second copy of every sealed pack of this one ("" for none); ``verify
    #: --repair`` restores a damaged or missing pack from it.
    replica: str = ""

    def validate(self) -> None:
        where = f"[tiers.{self.name}]"
        if not _TIER_NAME_RE.match(self.name):
            raise InvalidInputError(f"{where}: tier names are 1-32 lowercase letters, digits, '_' or '-'")
        if self.kind not in TIER_KINDS:
            raise InvalidInputError(f"{where}: kind must be one of {', '.join(TIER_KINDS)}, "
                                    f"not {self.kind!r}")
        if self.kind == "local" and (not self.path or self.options):
            raise InvalidInputError(f"{where}: a local tier takes a path (and no S3 keys "
                                    f"{sorted(self.options)})")
        if self.kind == "s3":
            unknown = set(self.options) - _S3_KEYS
            if unknown or not self.options.get("bucket"):
                raise InvalidInputError(f"{where}: an s3 tier needs bucket (and may have "
                                        f"{', '.join(sorted(_S3_KEYS - {'bucket'}))})"
                                        + (f"; unknown keys {sorted(unknown)}" if unknown else ""))
        if self.capacity < 0 or not 0.0 < self.high_water <= 1.0:
            raise InvalidInputError(f"{where}: capacity must be >= 0 and high_water in (0, 1]")

    def to_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {"kind": self.kind}
        if self.kind == "local":
            table["path"] = self.path
        table.update(self.options)
        if self.capacity:
            table["capacity"] = format_size(self.capacity) if self.capacity % KiB == 0 else self.capacity
            table["high_water"] = self.high_water
        if self.replica:
            table["replica"] = self.replica
        return table


@dataclass(frozen=True)
class RecallConfig:
    """The ``[recall]`` table: keeping recently read packs of colder tiers on the landing tier's disk.

    A read from a colder tier is always served by ranged reads; with ``enabled``, a pack read
    ``after_reads`` times is also copied whole, in the background, into ``ARCHIVE/recall/`` (verified
    before use), and later reads of it are served from there. The least recently used copies are removed
    when the copies exceed ``max_bytes``. The copies are a cache: never the truth, dropped when damaged.
    """

    enabled: bool = False
    #: Bytes the cached copies may take on the landing tier's file system.
    max_bytes: int = 10 * GiB
    #: Reads of a pack (by one archive handle) after which it is fetched into the cache.
    after_reads: int = 1

    def validate(self) -> None:
        if self.max_bytes < 0 or self.after_reads < 1:
            raise InvalidInputError("[recall]: max_bytes must be >= 0 and after_reads >= 1 (got "
                                    f"{self.max_bytes}, {self.after_reads})")


def _tiers(values: Any, where: str) -> tuple[TierConfig, ...]:
    if not isinstance(values, dict):
        raise InvalidInputError(f"{where}: tiers are tables like [tiers.ssd]")
    out = []
    for name, table in values.items():
        if not isinstance(table, dict):
            raise InvalidInputError(f"{where}: {name!r} must be a table named like [tiers.ssd]")
        table = dict(table)
        kind = str(table.pop("kind", "local"))
        path = str(table.pop("path", "packs" if kind == "local" else ""))
        try:
            capacity = parse_size(table.pop("capacity", 0))
            high_water = float(table.pop("high_water", 0.9))
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"{where}.{name}: capacity or high_water is not a number: {e}") from e
        replica = str(table.pop("replica", ""))
        if "part_size" in table:
            table["part_size"] = parse_size(table["part_size"])
        tier = TierConfig(str(name), kind, path if kind == "local" else "", capacity, high_water, table,
                          replica)
        tier.validate()
        out.append(tier)
    if not out:
        raise InvalidInputError(f"{where}: declare at least one tier, or leave [tiers] out")
    if out[0].kind != "local":
        raise InvalidInputError(f"{where}: the first tier ({out[0].name}) is where new data lands and "
                                "must be local; list tiers from hottest to coldest")
    return tuple(out)


@dataclass(frozen=True)
class ArchiveConfig:
    """The whole ``mmarchive.toml``."""

    archive_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    format: int = 1
    store: StoreConfig = field(default_factory=StoreConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    #: Settings of the layers above the store, by layer (``[layers.dicom]``): kept and written back
    #: as they are; each layer reads and checks its own table.
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Where packs live, hottest first; new data lands on the first (a local directory).
    tiers: tuple[TierConfig, ...] = (TierConfig(),)
    #: The ``[lifecycle]`` table (policy rules, move grace period): kept as written; the lifecycle
    #: package reads and checks it.
    lifecycle: dict[str, Any] = field(default_factory=dict)
    #: The ``[recall]`` table: caching packs read from colder tiers on the landing tier's disk.
    recall: RecallConfig = field(default_factory=RecallConfig)

    def validate(self) -> None:
        if self.format != 1:
            raise InvalidInputError(
                f"archive format {self.format} is not supported by this mmarchive (supports 1); "
                "upgrade mmarchive")
        self.store.validate()
        self.index.validate()
        self.recall.validate()
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names) or not self.tiers or self.tiers[0].kind != "local":
            raise InvalidInputError("tiers: names must be unique and the first tier local")
        for tier in self.tiers:
            tier.validate()
            if tier.replica and (tier.replica == tier.name or tier.replica not in names):
                raise InvalidInputError(f"[tiers.{tier.name}]: replica must name another declared tier "
                                        f"({', '.join(n for n in names if n != tier.name)}), not "
                                        f"{tier.replica!r}")

    def tier(self, name: str) -> TierConfig:
        for t in self.tiers:
            if t.name == name:
                return t
        raise InvalidInputError(f"no tier named {name!r}; this archive has "
                                f"{', '.join(t.name for t in self.tiers)}")

    # -- TOML round trip ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> ArchiveConfig:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise
        except tomllib.TOMLDecodeError as e:
            raise InvalidInputError(f"{path}: not valid TOML ({e}); fix or restore the file") from e
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> ArchiveConfig:
        archive = dict(data.get("archive", {}))
        cfg = cls(
            archive_id=str(archive.pop("id", uuid.uuid4())),
            format=int(archive.pop("format", 1)),
            store=_section(StoreConfig, data.get("store", {}), f"{source} [store]"),
            index=_section(IndexConfig, data.get("index", {}), f"{source} [index]"),
            layers=_layers(data.get("layers", {}), f"{source} [layers]"),
            tiers=_tiers(data["tiers"], f"{source} [tiers]") if "tiers" in data else (TierConfig(),),
            lifecycle=_plain_table(data.get("lifecycle", {}), f"{source} [lifecycle]"),
            recall=_section(RecallConfig, _plain_table(data.get("recall", {}), f"{source} [recall]"),
                            f"{source} [recall]"),
        )
        if archive:
            raise InvalidInputError(f"{source} [archive]: unknown keys {sorted(archive)}")
        unknown = set(data) - {"archive", "store", "index", "layers", "tiers", "lifecycle", "recall"}
        if unknown:
            raise InvalidInputError(f"{source}: unknown sections {sorted(unknown)}")
        cfg.validate()
        return cfg

    def to_toml(self) -> str:
        lines = ["# mmarchive archive configuration; see docs/config.md", "",
                 "[archive]", f'id = "{self.archive_id}"', f"format = {self.format}"]
        for name, section in (("store", self.store), ("index", self.index)):
            lines += ["", f"[{name}]"]
            for f in dataclasses.fields(section):
                lines.append(f"{f.name} = {_toml_value(f.name, getattr(section, f.name))}")
        for layer, values in sorted(self.layers.items()):
            lines += ["", f"[layers.{layer}]"]
            lines += [f"{key} = {_toml_value('', value)}" for key, value in sorted(values.items())]
        for tier in self.tiers:
            lines += ["", f"[tiers.{tier.name}]"]
            lines += [f"{key} = {_toml_value(key, value)}" for key, value in tier.to_table().items()]
        lines += _toml_table_lines("lifecycle", self.lifecycle)
        if self.recall != RecallConfig():  # written only when set, so older files stay as they were
            lines += ["", "[recall]"]
            lines += [f"{f.name} = {_toml_value(f.name, getattr(self.recall, f.name))}"
                      for f in dataclasses.fields(self.recall)]
        return "\n".join(lines) + "\n"


_SIZE_KEYS = {"chunk_threshold", "chunk_min", "chunk_avg", "chunk_max", "pack_size",
              "parallel_threshold", "map_size", "commit_bytes", "part_size", "max_bytes"}


_SCALAR = (str, int, float, bool)


def _layers(values: Any, where: str) -> dict[str, dict[str, Any]]:
    """The ``[layers.NAME]`` tables: names and value shapes checked, meanings left to each layer.

    A value is a string, number or true/false, a list of those, or a table of those (an inline table or
    ``[layers.NAME.KEY]``), such as ``move_destinations = { VIEWER = "10.0.0.7:104" }``.
    """
    if not isinstance(values, dict):
        raise InvalidInputError(f"{where}: must be tables like [layers.dicom]")
    out: dict[str, dict[str, Any]] = {}
    for layer, table in values.items():
        if not isinstance(table, dict) or not layer.isidentifier():
            raise InvalidInputError(f"{where}: {layer!r} must be a table named like [layers.dicom]")
        for key, value in table.items():
            inner = (value if isinstance(value, list) else list(value.values()) if isinstance(value, dict)
                     else [value])
            if not key.isidentifier() or not all(isinstance(v, _SCALAR) for v in inner):
                raise InvalidInputError(f"{where}.{layer}: {key} must be a name with a string, number or "
                                        "true/false value, a list of them, or a table of them")
        out[layer] = dict(table)
    return out


def _plain_table(values: Any, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise InvalidInputError(f"{where}: must be a table")
    return dict(values)


def _toml_table_lines(name: str, table: dict[str, Any]) -> list[str]:
    """TOML for a table of scalars, lists, inline-able tables and arrays of tables (``[[name.rule]]``)."""
    if not table:
        return []
    scalars = {k: v for k, v in table.items()
               if not isinstance(v, dict) and not _is_table_array(v)}
    lines = ["", f"[{name}]"] + [f"{k} = {_toml_value('', v)}" for k, v in scalars.items()]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += _toml_table_lines(f"{name}.{key}", value)
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{name}.{key}]]"]
                lines += [f"{k} = {_toml_value('', v)}" for k, v in item.items()]
    return lines


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_value(name: str, value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value('', v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value("", v) for v in value) + "]"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if name in _SIZE_KEYS:
        return f'"{format_size(int(value))}"'
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _section(cls: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise InvalidInputError(f"{where}: unknown key {key!r}; known keys are {sorted(known)}")
        if key in _SIZE_KEYS:
            kwargs[key] = parse_size(value)
        elif known[key].type in ("int", int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInputError(f"{where}: {key} must be an integer, not {value!r}")
            kwargs[key] = value
        elif known[key].type in ("bool", bool):
            if not isinstance(value, bool):
                raise InvalidInputError(f"{where}: {key} must be true or false, not {value!r}")
            kwargs[key] = value
        else:
            kwargs[key] = str(value)
    return cls(**kwargs)
