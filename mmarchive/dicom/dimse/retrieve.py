"""The C-GET and C-MOVE SCPs: the matched instances, sent as C-STORE sub-operations in their stored syntax.

The identifier is matched at its level like a C-FIND one (:func:`parse_identifier`), but must carry the
level's unique key (PatientID, StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID) with a value: an
identifier that would retrieve a whole archive is refused (0xA900). The matches are the current
instances below it; each is read from the archive only when its turn comes (one in memory at a time) and
handed to pynetdicom as a dataset read with pydicom and never modified, so pydicom writes every element
back as it was read and the presentation context is the one of the stored transfer syntax. C-GET sends on
the requesting association (the SCU proposes the storage contexts with the SCP role); C-MOVE opens an
association to a destination AE configured by title (``move_destinations``), proposing exactly the
(SOP class, stored transfer syntax) pairs it needs; an unknown destination is 0xA801.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, Final, NamedTuple

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from mmarchive.dicom.attributes import Level
from mmarchive.dicom.dimse.find import CANCELLED, PENDING, query_failure
from mmarchive.dicom.dimse.query import UNIQUE_KEYS, VERIFICATION, IdentifierError, parse_identifier
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


def read_dataset(store: DicomStore, tenant: str, sop_uid: str) -> Dataset:
    """The stored instance as a dataset whose elements stay as read (so they are written back as read)."""
    data = store.retrieve(sop_uid, tenant=tenant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


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
    """What GET and MOVE share: matching, then one dataset per pending sub-operation."""

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
                dataset = read_dataset(self.store, self.tenant, m.sop_instance_uid)
            except ArchiveError as e:  # deleted meanwhile, or unreadable: a failed sub-operation
                log.warning("cannot send %s: %s", m.sop_instance_uid, e)
                failed = Dataset()
                failed.SOPInstanceUID = m.sop_instance_uid
                yield PENDING, failed  # pynetdicom counts a dataset it cannot send as a failure
                continue
            yield PENDING, dataset


class GetHandler(_Retrieval):
    """The ``evt.EVT_C_GET`` handler: the matches go back on the requesting association."""

    def __call__(self, event: Event) -> Iterator[RetrieveResponse]:
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
        yield address[0], address[1], {"contexts": storage_contexts(matches)}
        yield len(matches)
        yield from self._send(event, matches)
