"""The C-GET and C-MOVE SCPs: the matched instances, sent as C-STORE sub-operations, byte for byte as stored.

The identifier is matched at its level like a C-FIND one (:func:`parse_identifier`), but must carry the
level's unique key (PatientID, StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID) with a value: an
identifier that would retrieve a whole archive is refused (0xA900). The matches are the current
instances below it; each is read from the archive only when its turn comes (one in memory at a time).

Sending as stored: pynetdicom's handlers yield a pydicom ``Dataset`` that pynetdicom encodes again with
pydicom's writer, which drops group lengths, sorts elements, rewrites the values it decoded and deflates
again (its raw-file sending, ``STORE_SEND_CHUNKED_DATASET``, exists only for ``send_c_store(path)``, which
the C-GET/C-MOVE service class never calls). So the handlers yield a :class:`StoredInstance` (a ``Dataset``
that carries the stored dataset bytes, its SOP class and instance and its transfer syntax) and the
associations that send them are :class:`RawStoreAssociation`, whose ``send_c_store`` puts those bytes in
the C-STORE request unchanged. The associations become one when their connection opens
(``evt.EVT_CONN_OPEN``, :func:`send_stored_bytes`): the server's for C-GET, the C-MOVE ones through the
association arguments the MOVE handler yields. ``send_c_store`` follows pynetdicom 3.0's own (its reactor
pause and response checks are private members of ``Association``: check them on a pynetdicom upgrade; the
byte-for-byte tests fail if they change). An instance goes byte for byte over a presentation context
accepted with its stored transfer syntax. If the peer accepted its SOP class only in
another syntax (dcmtk's getscu, say, proposes the uncompressed syntaxes in one context and gets Explicit VR
Little Endian for an instance stored as Implicit VR), the instance is decoded and pynetdicom re-encodes it
when both syntaxes are uncompressed (the values are the same, the bytes need not be; logged); compressed
data is never transcoded: that sub-operation fails (counted in the final status, its SOP Instance UID in
the Failed SOP Instance UID List).

C-GET sends on the requesting association (the SCU proposes the storage contexts with the SCP role);
C-MOVE opens an association to a destination AE configured by title (``move_destinations``), proposing
exactly the (SOP class, stored transfer syntax) pairs it needs; an unknown destination is 0xA801.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from io import BytesIO
from typing import Any, Final, NamedTuple

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContext, build_context

from mmarchive.dicom.attributes import Level
from mmarchive.dicom.dimse.find import CANCELLED, PENDING, query_failure
from mmarchive.dicom.dimse.query import UNIQUE_KEYS, VERIFICATION, IdentifierError, parse_identifier
from mmarchive.dicom.dimse.tcp import set_nodelay
from mmarchive.dicom.scan import file_meta
from mmarchive.dicom.store import DicomStore
from mmarchive.errors import ArchiveError

log = logging.getLogger(__name__)

#: PS3.4 C.4.2.1.5 "Refused: Move Destination unknown".
MOVE_DESTINATION_UNKNOWN: Final = 0xA801
#: At most this many presentation contexts in one association request (PS3.8: context ids 1-255, odd).
MAX_CONTEXTS: Final = 128

_SOP_CLASS: Final = "00080016"
_SOP_INSTANCE: Final = "00080018"
_TRANSFER_SYNTAX: Final = "00083002"
#: Explicit VR value representations with a 4-byte length (PS3.5 7.1.2).
RetrieveResponse = Any  # pynetdicom's handler protocol: an int, a destination tuple or (status, dataset)


class Match(NamedTuple):
    """One instance a retrieval sends."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


def _first(result: Mapping[str, Any], tag: str) -> str:
    element = result.get(tag)
    values = element.get("Value") if isinstance(element, Mapping) else None
    return str(values[0]) if values else ""


def find_matches(store: DicomStore, tenant: str, identifier: Dataset, model: str) -> list[Match]:
    """The current instances an identifier names (refused without the level's unique key)."""
    parsed = parse_identifier(identifier, model)
    unique = UNIQUE_KEYS[parsed.level]
    if unique not in parsed.constraints:
        raise IdentifierError(f"a {parsed.level_name}-level retrieval needs {unique} with a value")
    constraints = dict(parsed.constraints)
    results = store.query(Level.INSTANCE.value, constraints, tenant=tenant,
                          include=["AvailableTransferSyntaxUID"])
    return [Match(_first(r, _SOP_CLASS), _first(r, _SOP_INSTANCE), _first(r, _TRANSFER_SYNTAX))
            for r in results]


class StoredInstance(Dataset):
    """An instance to send as it is stored: its stored Part 10 file, whose dataset part goes out unchanged.

    A ``Dataset`` only so that pynetdicom's retrieve service takes it from the handler (and names its SOP
    Instance UID when the sub-operation fails); it holds just the SOP Class and Instance UIDs and the file
    meta's Transfer Syntax UID. :class:`RawStoreAssociation` sends :attr:`encoded`.
    """

    def __init__(self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, part10: bytes,
                 offset: int) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        self.part10 = part10
        self.offset = offset

    @property
    def encoded(self) -> bytes:
        """The dataset bytes as stored (what follows the file meta)."""
        return self.part10[self.offset:]

    def decoded(self) -> Dataset:
        """The stored file read with pydicom (for re-encoding in another uncompressed syntax)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(self.part10), force=True)
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = self.file_meta.TransferSyntaxUID
        return ds

    @classmethod
    def from_part10(cls, data: bytes, match: Match) -> StoredInstance:
        """The dataset part of a stored Part 10 file, sent under the dataset's SOP Class and Instance UIDs
        (the catalog's: the file meta's may differ) in the file meta's transfer syntax."""
        meta, offset = file_meta(data)
        syntax = meta.get(0x0010) or match.transfer_syntax or ImplicitVRLittleEndian
        sop_class = match.sop_class_uid or meta.get(0x0002, "")
        return cls(sop_class, match.sop_instance_uid or meta.get(0x0003, ""), syntax, data, offset)


class RawStoreAssociation(Association):
    """An association whose C-STORE requests carry a :class:`StoredInstance`'s bytes as they are.

    When the peer accepted the instance's SOP class only with another transfer syntax, the instance is
    decoded and handed to pynetdicom's ``send_c_store``, which re-encodes it if that syntax is an
    uncompressed one (explicit <-> implicit VR, deflated <-> not) and fails the sub-operation otherwise.
    Any other dataset goes through pynetdicom's ``send_c_store`` unchanged.
    """

    def send_c_store(self, dataset: Any, msg_id: int = 1, priority: int = 2,
                     originator_aet: str | None = None, originator_id: int | None = None) -> Dataset:
        if not isinstance(dataset, StoredInstance):
            return super().send_c_store(dataset, msg_id, priority, originator_aet, originator_id)
        if not self.is_established:
            raise RuntimeError("the association must be established before sending a C-STORE request")
        sop_class = UID(dataset.SOPClassUID)
        syntax = UID(dataset.file_meta.TransferSyntaxUID)
        exact = [cx for cx in self.accepted_contexts if cx.abstract_syntax == sop_class and cx.as_scu
                 and cx.transfer_syntax and cx.transfer_syntax[0] == syntax and cx.context_id is not None]
        if not exact:
            log.info("%s: the peer did not accept %s for %s; re-encoding it in an accepted uncompressed "
                     "syntax if there is one", dataset.SOPInstanceUID, syntax.name, sop_class.name)
            return super().send_c_store(dataset.decoded(), msg_id, priority, originator_aet, originator_id)
        req = C_STORE()
        req.MessageID = msg_id
        req.Priority = priority
        req.MoveOriginatorApplicationEntityTitle = originator_aet
        req.MoveOriginatorMessageID = originator_id
        req.AffectedSOPClassUID = sop_class
        req.AffectedSOPInstanceUID = UID(dataset.SOPInstanceUID)
        req.DataSet = BytesIO(dataset.encoded)
        context_id = int(exact[0].context_id or 0)  # not None: filtered above
        # as pynetdicom's send_c_store: pause the reactor (already paused inside a service class), send,
        # wait for the response
        self._reactor_checkpoint.clear()
        while not self._is_paused:
            time.sleep(0.0001)
        try:
            self.dimse.send_msg(req, context_id)
            _, rsp = self.dimse.get_msg(block=True)
        finally:
            self._reactor_checkpoint.set()
        if rsp is None:
            self._handle_no_response()
            return Dataset()
        status: Dataset = self._check_received_status(rsp)
        return status


def send_stored_bytes(event: Event) -> None:
    """The ``evt.EVT_CONN_OPEN`` handler: the association sends :class:`StoredInstance` bytes as they are.

    It also turns Nagle's algorithm off on the connection (``TCP_NODELAY``): DIMSE messages are a command
    and a dataset written separately, then a wait for the response.
    """
    assoc = event.assoc
    if isinstance(assoc, Association) and not isinstance(assoc, RawStoreAssociation):
        assoc.__class__ = RawStoreAssociation  # only a method differs: the instance is otherwise the same
    set_nodelay(event)


#: The event handlers a server (C-GET) and the C-MOVE associations it opens need for raw sending.
RAW_SENDING_HANDLERS: Final[list[EventHandlerType]] = [(evt.EVT_CONN_OPEN, send_stored_bytes)]


def read_instance(store: DicomStore, tenant: str, match: Match) -> StoredInstance:
    """The stored instance of a match, to be sent as stored."""
    return StoredInstance.from_part10(store.retrieve(match.sop_instance_uid, tenant=tenant), match)


def storage_contexts(matches: list[Match]) -> list[PresentationContext]:
    """The contexts a C-MOVE association proposes: one per (SOP class, stored transfer syntax), since an
    acceptor picks one syntax per context, and one per SOP class offering the uncompressed syntaxes."""
    pairs: dict[tuple[str, str], None] = {}
    for m in matches:
        pairs[(m.sop_class_uid, m.transfer_syntax or ExplicitVRLittleEndian)] = None
    contexts = [build_context(sop_class, ts) for sop_class, ts in pairs]
    for sop_class in dict.fromkeys(m.sop_class_uid for m in matches):
        contexts.append(build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    return contexts[:MAX_CONTEXTS]


class _Retrieval:
    """What GET and MOVE share: matching, then one stored instance per pending sub-operation."""

    def __init__(self, store: DicomStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    def _matches(self, event: Event, what: str) -> list[Match] | Dataset:
        try:
            matches = find_matches(self.store, self.tenant, event.identifier,
                                   str(event.request.AffectedSOPClassUID))
        except (IdentifierError, ArchiveError) as e:
            log.warning("%s from %s refused: %s", what, event.assoc.requestor.ae_title, e)
            return query_failure(e)
        log.info("%s from %s: %d instance(s)", what, event.assoc.requestor.ae_title, len(matches))
        return matches

    def _send(self, event: Event, matches: list[Match]) -> Iterator[RetrieveResponse]:
        for m in matches:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            try:
                instance = read_instance(self.store, self.tenant, m)
            except ArchiveError as e:  # deleted meanwhile, or unreadable: a failed sub-operation
                log.warning("cannot send %s: %s", m.sop_instance_uid, e)
                failed = Dataset()
                failed.SOPInstanceUID = m.sop_instance_uid
                yield PENDING, failed  # pynetdicom counts a dataset it cannot send as a failure
                continue
            yield PENDING, instance


class GetHandler(_Retrieval):
    """The ``evt.EVT_C_GET`` handler: the matches go back on the requesting association."""

    def __call__(self, event: Event) -> Iterator[RetrieveResponse]:
        if not isinstance(event.assoc, RawStoreAssociation):
            # the server binds send_stored_bytes; without it pynetdicom would send the bare StoredInstance
            raise TypeError("C-GET needs the server's EVT_CONN_OPEN handler send_stored_bytes")
        matches = self._matches(event, "C-GET")
        if isinstance(matches, Dataset):  # pynetdicom takes a failure only in place of a sub-operation
            yield 1
            yield matches, None
            return
        yield len(matches)
        yield from self._send(event, matches)


class MoveHandler(_Retrieval):
    """The ``evt.EVT_C_MOVE`` handler: the matches go to a configured destination AE."""

    def __init__(self, store: DicomStore, tenant: str,
                 destinations: Mapping[str, tuple[str, int]]) -> None:
        super().__init__(store, tenant)
        self.destinations = destinations  # the server's own mapping: entries added later count

    def __call__(self, event: Event) -> Iterator[RetrieveResponse]:
        name = str(event.move_destination or "").strip()
        address = self.destinations.get(name)
        if address is None:
            log.warning("C-MOVE from %s to unknown destination %r", event.assoc.requestor.ae_title, name)
            yield None, None  # pynetdicom answers 0xA801
            return
        matches = self._matches(event, f"C-MOVE to {name}")
        if isinstance(matches, Dataset):
            # pynetdicom takes a failure only in place of a sub-operation, after it associated
            yield address[0], address[1], {"contexts": [build_context(VERIFICATION)]}
            yield 1
            yield matches, None
            return
        if not matches:
            yield address[0], address[1]
            yield 0
            return
        yield address[0], address[1], {"contexts": storage_contexts(matches),
                                       "evt_handlers": list(RAW_SENDING_HANDLERS)}
        yield len(matches)
        yield from self._send(event, matches)
