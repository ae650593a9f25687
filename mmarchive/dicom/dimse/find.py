"""The C-FIND SCP: Patient Root and Study Root FIND at every level, answered from the catalog.

One catalog query per request (:mod:`mmarchive.dicom.dimse.query` translates both ways); one pending
response (0xFF00) per match, in the catalog's stable order; a C-CANCEL is honoured between matches
(0xFE00). Failures: 0xA900 for an identifier that does not fit the model, 0xC000 for a key the catalog
refuses to match (its reason in the error comment), 0xA700 when the catalog cannot be read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Final

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from mmarchive.dicom.dimse.query import IdentifierError, parse_identifier, response_identifier
from mmarchive.dicom.dimse.storage import OUT_OF_RESOURCES, status_dataset
from mmarchive.dicom.store import DicomStore
from mmarchive.errors import ArchiveError, InvalidInputError

log = logging.getLogger(__name__)

PENDING: Final = 0xFF00
CANCELLED: Final = 0xFE00
IDENTIFIER_MISMATCH: Final = 0xA900
UNABLE_TO_PROCESS: Final = 0xC000

FindResponse = tuple[Dataset | int, Dataset | None]


def query_failure(error: Exception) -> Dataset:
    """The failure status of an identifier or query the archive refused (shared by FIND, GET and MOVE)."""
    if isinstance(error, IdentifierError):
        return status_dataset(IDENTIFIER_MISMATCH, str(error))
    if isinstance(error, InvalidInputError):
        return status_dataset(UNABLE_TO_PROCESS, str(error))
    return status_dataset(OUT_OF_RESOURCES, str(error))


class FindHandler:
    """The ``evt.EVT_C_FIND`` handler of one server: query one tenant of one store."""

    def __init__(self, store: DicomStore, tenant: str, ae_title: str) -> None:
        self.store = store
        self.tenant = tenant
        self.ae_title = ae_title

    def __call__(self, event: Event) -> Iterator[FindResponse]:
        model = str(event.request.AffectedSOPClassUID)
        try:
            request = event.identifier
            parsed = parse_identifier(request, model)
            results = self.store.query(parsed.level.value, parsed.constraints, tenant=self.tenant,
                                       include=parsed.include)
        except (IdentifierError, ArchiveError) as e:
            log.warning("C-FIND from %s refused: %s", event.assoc.requestor.ae_title, e)
            yield query_failure(e), None
            return
        log.info("C-FIND %s %s from %s: %d match(es)", parsed.level_name, dict(parsed.constraints),
                 event.assoc.requestor.ae_title, len(results))
        for result in results:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield PENDING, response_identifier(request, result, parsed.level_name, self.ae_title)
