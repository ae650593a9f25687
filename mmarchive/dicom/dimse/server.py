"""The DIMSE server: one pynetdicom Application Entity over a DicomStore, for one tenant.

:class:`DimseServer` configures the AE (title, accepted presentation contexts, calling AEs it accepts) and
runs pynetdicom's threaded association server in the background (``start``/``stop``, or ``with``). Each
association runs in a thread of its own; the handlers (:mod:`.storage`, :mod:`.find`, :mod:`.retrieve`)
only translate between DIMSE and the store. The server binds 127.0.0.1 unless told otherwise.

Accepted as SCP: Verification; every storage SOP class pynetdicom knows
(``AllStoragePresentationContexts``) with :data:`TRANSFER_SYNTAXES`, and with the SCP role a C-GET
requestor proposes; Patient Root and Study Root Query/Retrieve FIND, GET and MOVE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Final

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from mmarchive.archive import DEFAULT_TENANT
from mmarchive.dicom.dimse.find import FindHandler
from mmarchive.dicom.dimse.query import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    VERIFICATION,
)
from mmarchive.dicom.dimse.retrieve import RAW_SENDING_HANDLERS, GetHandler, MoveHandler
from mmarchive.dicom.dimse.storage import IngestBatcher, StoreHandler
from mmarchive.dicom.dimse.tcp import quick_ack
from mmarchive.dicom.store import DicomStore
from mmarchive.errors import ArchiveStateError, InvalidInputError
from mmarchive.index.schema import check_tenant

log = logging.getLogger(__name__)

DEFAULT_AE_TITLE: Final = "MMARCHIVE"
DEFAULT_HOST: Final = "127.0.0.1"
#: How long :meth:`DimseServer.stop` waits for the threads of aborted associations, in seconds.
STOP_WAIT: Final = 10.0

#: The transfer syntaxes accepted for storage (and offered back by C-GET), uncompressed ones first.
TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless,
    JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K, RLELossless,
)

QUERY_RETRIEVE_MODELS: Final[tuple[str, ...]] = (
    PATIENT_ROOT_FIND, STUDY_ROOT_FIND, PATIENT_ROOT_GET, STUDY_ROOT_GET, PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE,
)


def check_ae_title(title: str, what: str = "AE title") -> str:
    """An AE title as PS3.5 allows it: 1-16 characters of printable ASCII, not only spaces, no backslash."""
    stripped = title.strip(" ") if isinstance(title, str) else ""
    if not stripped or len(title) > 16 or not title.isascii() or not title.isprintable() or "\\" in title:
        raise InvalidInputError(f"{what} {title!r} is not valid: use 1 to 16 printable ASCII characters "
                                "without backslash (for example MMARCHIVE)")
    return stripped


class DimseServer:
    """A DICOM network service (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE) over one tenant of a store."""

    def __init__(self, store: DicomStore, *, port: int, ae_title: str = DEFAULT_AE_TITLE,
                 host: str = DEFAULT_HOST, tenant: str = DEFAULT_TENANT,
                 allowed_calling_aes: Iterable[str] | None = None,
                 move_destinations: Mapping[str, tuple[str, int]] | None = None) -> None:
        """``allowed_calling_aes``: when given, associations from other calling AE titles are rejected.
        ``move_destinations``: AE title -> (host, port) of the AEs C-MOVE may send to."""
        check_tenant(tenant)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidInputError(f"port must be a number from 0 to 65535, not {port!r}")
        self.store = store
        self.ae_title = check_ae_title(ae_title)
        self.host = host
        self.port = port
        self.tenant = tenant
        self.allowed_calling_aes = (None if allowed_calling_aes is None else
                                    frozenset(check_ae_title(t, "calling AE title")
                                              for t in allowed_calling_aes))
        self.move_destinations: dict[str, tuple[str, int]] = {}
        for title, (dest_host, dest_port) in (move_destinations or {}).items():
            self.move_destinations[check_ae_title(title, "move destination")] = (dest_host, int(dest_port))
        self._server: ThreadedAssociationServer | None = None
        self._batcher: IngestBatcher | None = None

    def _application_entity(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(VERIFICATION, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        for cx in AllStoragePresentationContexts:
            assert cx.abstract_syntax is not None
            # scp_role: a C-GET requestor may propose to be the storage SCP on this association
            ae.add_supported_context(cx.abstract_syntax, list(TRANSFER_SYNTAXES), scp_role=True,
                                     scu_role=False)
        for model in QUERY_RETRIEVE_MODELS:
            ae.add_supported_context(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        if self.allowed_calling_aes is not None:
            ae.require_calling_aet = sorted(self.allowed_calling_aes)
        ae.require_called_aet = False
        return ae

    def start(self) -> DimseServer:
        """Listen in the background (returns at once); the actual port is :attr:`port` afterwards.

        A port that is taken (or a host that is not this machine's) is :class:`InvalidInputError`.
        """
        if self._server is not None:
            raise ArchiveStateError("this DIMSE server is running already")
        ae = self._application_entity()
        batcher = IngestBatcher(self.store, self.tenant)
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_STORE, StoreHandler(batcher)),
            (evt.EVT_C_FIND, FindHandler(self.store, self.tenant, self.ae_title)),
            (evt.EVT_C_GET, GetHandler(self.store, self.tenant)),
            (evt.EVT_C_MOVE, MoveHandler(self.store, self.tenant, self.move_destinations)),
            *RAW_SENDING_HANDLERS,  # C-GET sends stored bytes as they are; TCP_NODELAY
            (evt.EVT_DATA_RECV, quick_ack),
        ]
        try:
            server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        except OSError as e:
            batcher.close()
            raise InvalidInputError(f"cannot listen on {self.host}:{self.port} for DIMSE "
                                    f"({e.strerror or e}); choose another port or host") from e
        except BaseException:
            batcher.close()
            raise
        assert server is not None  # block=False always returns the server
        self._server = server
        self._batcher = batcher
        self.port = int(server.server_address[1])
        log.info("DIMSE server %s listening on %s:%d (tenant %s)", self.ae_title, self.host, self.port,
                 self.tenant)
        return self

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        """Stop listening, abort the associations in progress and wait for their threads (idempotent).

        Once it returns, no handler of this server uses the store any more (unless one is stuck for more
        than :data:`STOP_WAIT` seconds, which is logged), so the store can be closed.
        """
        server, self._server = self._server, None
        if server is None:
            return
        associations = list(server.active_associations)
        server.ae.shutdown()  # stops the server, aborts its associations and the C-MOVE ones it opened
        deadline = time.monotonic() + STOP_WAIT
        for assoc in associations:
            assoc.join(max(0.0, deadline - time.monotonic()))
            if assoc.is_alive():
                log.warning("an association from %s did not end within %s s of the stop",
                            assoc.requestor.ae_title, STOP_WAIT)
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()
        log.info("DIMSE server %s on %s:%d stopped", self.ae_title, self.host, self.port)

    def __enter__(self) -> DimseServer:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
