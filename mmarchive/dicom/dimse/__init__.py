"""The DIMSE facade of the archive (issue 5 §2): C-ECHO, C-STORE, C-FIND, C-GET and C-MOVE over a DicomStore.

:func:`serve_dimse` starts a :class:`~mmarchive.dicom.dimse.server.DimseServer` in the background and
returns it (stop it with ``stop()`` or use it as a context manager). What the server conforms to is in
docs/conformance.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mmarchive.archive import DEFAULT_TENANT
from mmarchive.dicom.dimse.server import DEFAULT_AE_TITLE, DEFAULT_HOST, TRANSFER_SYNTAXES, DimseServer
from mmarchive.dicom.store import DicomStore

__all__ = ["DEFAULT_AE_TITLE", "DEFAULT_HOST", "TRANSFER_SYNTAXES", "DimseServer", "serve_dimse"]


def serve_dimse(store: DicomStore, port: int, ae_title: str = DEFAULT_AE_TITLE, *, host: str = DEFAULT_HOST,
                tenant: str = DEFAULT_TENANT, allowed_calling_aes: Iterable[str] | None = None,
                move_destinations: Mapping[str, tuple[str, int]] | None = None) -> DimseServer:
    """Start a DIMSE server over ``store`` on ``host:port`` (port 0: a free one) and return it, running."""
    server = DimseServer(store, port=port, ae_title=ae_title, host=host, tenant=tenant,
                         allowed_calling_aes=allowed_calling_aes, move_destinations=move_destinations)
    return server.start()
