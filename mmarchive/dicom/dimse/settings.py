"""The ``[layers.dimse]`` table of an archive's ``mmarchive.toml``: how ``mmarchive serve`` runs DIMSE.

An archive's operators configure the DIMSE service where the rest of the archive is configured: its AE
title, the port it listens on (setting one makes ``mmarchive serve`` start DIMSE without ``--dimse``),
the calling AE titles it accepts (any when the key is absent) and the AEs C-MOVE may send to, each
``TITLE = "host:port"``. :func:`dimse_settings` reads and checks the table; command-line flags override
the AE title and port. Nothing here starts a server: :func:`mmarchive.dicom.dimse.serve_dimse` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from mmarchive.config import ArchiveConfig
from mmarchive.dicom.dimse.server import DEFAULT_AE_TITLE, check_ae_title
from mmarchive.errors import InvalidInputError

#: The name of the table under ``[layers]``.
LAYER = "dimse"


class DimseSettings(NamedTuple):
    ae_title: str = DEFAULT_AE_TITLE
    #: The port to serve DIMSE on, or None to serve it only when asked (``mmarchive serve --dimse``).
    port: int | None = None
    #: Calling AE titles accepted; None accepts any.
    allowed_calling_aes: frozenset[str] | None = None
    #: AE title -> (host, port) of the AEs C-MOVE may send to.
    move_destinations: Mapping[str, tuple[str, int]] = {}


def dimse_settings(config: ArchiveConfig, where: Path | str = "mmarchive.toml") -> DimseSettings:
    """The checked ``[layers.dimse]`` table of ``config`` (defaults when it has none).

    ``where`` names the file in error messages.
    """
    table: Mapping[str, Any] = config.layers.get(LAYER, {})
    at = f"{where} [layers.{LAYER}]"
    unknown = set(table) - set(DimseSettings._fields)
    if unknown:
        raise InvalidInputError(f"{at}: unknown keys {sorted(unknown)}; known: "
                                f"{', '.join(DimseSettings._fields)}")
    ae_title = check_ae_title(_text(table.get("ae_title", DEFAULT_AE_TITLE), f"{at} ae_title"),
                              f"{at} ae_title")
    port = table.get("port")
    if port is not None:
        port = _port(port, f"{at} port")
    allowed = table.get("allowed_calling_aes")
    if allowed is not None:
        if not isinstance(allowed, list) or not allowed:
            raise InvalidInputError(f"{at}: allowed_calling_aes must be a non-empty list of AE titles "
                                    "(leave the key out to accept any calling AE)")
        allowed = frozenset(check_ae_title(_text(t, f"{at} allowed_calling_aes"), f"{at} allowed calling AE")
                            for t in allowed)
    destinations = table.get("move_destinations", {})
    if not isinstance(destinations, Mapping):
        raise InvalidInputError(f'{at}: move_destinations must be a table of TITLE = "host:port"')
    moves = {check_ae_title(title, f"{at} move destination"):
             _address(value, f"{at} move_destinations.{title}")
             for title, value in destinations.items()}
    return DimseSettings(ae_title, port, allowed, moves)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, not {value!r}")
    return value


def _port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise InvalidInputError(f"{what} must be a port number from 0 to 65535, not {value!r}")
    return value


def _address(value: object, what: str) -> tuple[str, int]:
    host, sep, port = _text(value, what).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidInputError(f'{what} must be "host:port" (for example "10.0.0.7:104"), not {value!r}')
    number = _port(int(port), what)
    if number == 0:
        raise InvalidInputError(f"{what}: a C-MOVE destination needs its real port, not 0")
    return host.strip("[]"), number
