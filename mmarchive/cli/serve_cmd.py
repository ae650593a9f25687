"""``mmarchive serve --http HOST:PORT``: serve the archive's DICOM store over DICOMweb until stopped.

Opens the archive for writing (STOW-RS stores into it; the writer lock keeps other writers out while it
runs), builds the application of :mod:`mmarchive.dicom.web.app` for one tenant and runs it with uvicorn on
a socket bound here (127.0.0.1 unless a host is given), logging each request on stderr. SIGINT or SIGTERM
stops it gracefully (requests in flight finish) and the command exits 0. ``--dimse PORT --ae TITLE`` also
serves DIMSE (:mod:`mmarchive.dicom.dimse`: C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE) on the same host.
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from mmarchive.cli.session import Output, Subparsers, add_command, archive_dir
from mmarchive.config import CONFIG_FILE
from mmarchive.dicom.store import DicomStore

if TYPE_CHECKING:
    import uvicorn

    from mmarchive.dicom.dimse.settings import DimseSettings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "serve", summary="serve the DICOM store over DICOMweb (and DIMSE)",
        description="Serve QIDO-RS, WADO-RS and STOW-RS at http://HOST:PORT/dicom-web for one tenant, "
                    "logging each request on stderr, until stopped with SIGINT or SIGTERM. The archive "
                    "is opened for writing (STOW-RS stores into it). See docs/dicomweb.md.")
    parser.add_argument("--http", metavar="HOST:PORT", type=_address,
                        default=(DEFAULT_HOST, DEFAULT_PORT),
                        help=f"where to listen (default {DEFAULT_HOST}:{DEFAULT_PORT}; a PORT alone "
                             f"binds {DEFAULT_HOST}; port 0 picks a free one)")
    parser.add_argument("--base", metavar="PATH", default="/dicom-web",
                        help="the URL path of the DICOMweb root (default /dicom-web)")
    parser.add_argument("--dimse", metavar="PORT", type=int, default=None,
                        help="also serve DIMSE on PORT (on the --http host; 0 picks a free port); "
                             "without it, DIMSE runs when [layers.dimse] of mmarchive.toml sets a port")
    parser.add_argument("--ae", metavar="TITLE", default=None,
                        help="the DIMSE AE title (default: [layers.dimse] ae_title, else MMARCHIVE); "
                             "accepted calling AEs and C-MOVE destinations are set in [layers.dimse]")
    parser.set_defaults(run=run)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} is not between 0 and 65535")
    return host, number


def start_dimse(store: DicomStore, settings: DimseSettings, *, host: str, tenant: str
                ) -> tuple[int, Callable[[], None]]:
    """Start the DIMSE service (:mod:`mmarchive.dicom.dimse`) over ``store`` as ``settings`` say; return
    the port it listens on (port 0 picks a free one) and the function that stops it."""
    from mmarchive.dicom.dimse import serve_dimse

    assert settings.port is not None
    server = serve_dimse(store, settings.port, settings.ae_title, host=host, tenant=tenant,
                         allowed_calling_aes=settings.allowed_calling_aes,
                         move_destinations=settings.move_destinations)
    return server.port, server.stop


def run(args: argparse.Namespace, out: Output) -> int:
    import uvicorn

    from mmarchive.dicom.web.app import create_app

    host, port = args.http
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets of that protocol, and without it each
    # response on a keep-alive connection waits for the client's delayed ACK (about 40 ms on Linux).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        with DicomStore.open(archive_dir(args)) as store:
            dimse = _dimse_settings(store, args)
            stop_dimse = None
            dimse_note = ""
            if dimse.port is not None:
                dimse_port, stop_dimse = start_dimse(store, dimse, host=host, tenant=args.tenant)
                dimse_note = f"; DIMSE as {dimse.ae_title} on {host}:{dimse_port}"
            try:
                app = create_app(store, tenant=args.tenant, base=args.base)
                server = uvicorn.Server(uvicorn.Config(app, log_config=_log_config(), access_log=True,
                                                       lifespan="off", timeout_graceful_shutdown=10))
                stopped: list[int] = []
                with _signals_stop(server, stopped):  # from here on, before the address is shown
                    bound = sock.getsockname()[1]
                    shown = f"[{host}]" if family == socket.AF_INET6 else host
                    url = f"http://{shown}:{bound}{args.base.rstrip('/')}"
                    if out.json_mode:
                        out.line(json.dumps({"url": url, "tenant": args.tenant,
                                             **({"dimse": {"ae_title": dimse.ae_title, "port": dimse_port}}
                                                if stop_dimse is not None else {})}))
                    else:
                        out.note(f"serving DICOMweb at {url} (tenant {args.tenant}){dimse_note}; stop "
                                 "with Ctrl-C or SIGTERM")
                    server.run(sockets=[sock])
                if stopped:
                    out.note(f"stopped ({signal.Signals(stopped[-1]).name})")
            finally:
                if stop_dimse is not None:
                    stop_dimse()
    finally:
        sock.close()
    return 0


def _dimse_settings(store: DicomStore, args: argparse.Namespace) -> DimseSettings:
    """The archive's ``[layers.dimse]`` settings with ``--dimse`` and ``--ae`` applied over them."""
    from mmarchive.dicom.dimse.server import check_ae_title
    from mmarchive.dicom.dimse.settings import dimse_settings

    archive = store.archive
    settings = dimse_settings(archive.config, archive.path / CONFIG_FILE)
    if args.dimse is not None:
        settings = settings._replace(port=args.dimse)
    if args.ae is not None:
        settings = settings._replace(ae_title=check_ae_title(args.ae, "--ae"))
    return settings


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the request log on stderr (stdout is for results) and mmarchive's own
    messages (refused STOW-RS parts, failures) beside it."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["loggers"]["mmarchive"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


@contextmanager
def _signals_stop(server: uvicorn.Server, stopped: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM stop ``server`` and are noted instead of ending the process.

    Set before the address is shown, so a signal sent as soon as a client sees it (before uvicorn has
    started) still stops the server: uvicorn skips its main loop when ``should_exit`` is already set.
    While it runs, uvicorn handles the signals itself and raises each again after its graceful shutdown;
    the handlers here receive that, so the command can close the store and exit 0.
    """
    def note(sig: int, _frame: FrameType | None) -> None:
        stopped.append(sig)
        server.should_exit = True

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
