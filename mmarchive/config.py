"""Archive configuration: the TOML file at the root of every archive, and its typed form.

An archive's behaviour is fixed by its ``mmarchive.toml`` (written by ``init``, read by every open) and never
by module globals. This module owns the config schema, its defaults, validation and the TOML round trip.
It knows nothing of packs, the index or the CLI.
"""

from __future__ import annotations

import dataclasses
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

    def validate(self) -> None:
        if self.format != 1:
            raise InvalidInputError(
                f"archive format {self.format} is not supported by this mmarchive (supports 1); "
                "upgrade mmarchive")
        self.store.validate()
        self.index.validate()

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
        )
        if archive:
            raise InvalidInputError(f"{source} [archive]: unknown keys {sorted(archive)}")
        unknown = set(data) - {"archive", "store", "index", "layers"}
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
        return "\n".join(lines) + "\n"


_SIZE_KEYS = {"chunk_threshold", "chunk_min", "chunk_avg", "chunk_max", "pack_size",
              "parallel_threshold", "map_size", "commit_bytes"}


def _layers(values: Any, where: str) -> dict[str, dict[str, Any]]:
    """The ``[layers.NAME]`` tables: names and scalar values checked, meanings left to each layer."""
    if not isinstance(values, dict):
        raise InvalidInputError(f"{where}: must be tables like [layers.dicom]")
    out: dict[str, dict[str, Any]] = {}
    for layer, table in values.items():
        if not isinstance(table, dict) or not layer.isidentifier():
            raise InvalidInputError(f"{where}: {layer!r} must be a table named like [layers.dicom]")
        for key, value in table.items():
            if not key.isidentifier() or not isinstance(value, (str, int, float, bool)):
                raise InvalidInputError(f"{where}.{layer}: {key} must be a name with a string, number "
                                        "or true/false value")
        out[layer] = dict(table)
    return out


def _toml_value(name: str, value: Any) -> str:
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
        else:
            kwargs[key] = str(value)
    return cls(**kwargs)
