"""The C-STORE SCP: each received dataset becomes a Part 10 file, byte for byte, ingested by the store.

The dataset is never decoded: the file is the 128-byte preamble, ``DICM``, the file meta built from the
request (its SOP Class and Instance UIDs, the transfer syntax of the presentation context, the calling
AE title as Source Application Entity Title) and the encoded dataset exactly as the peer sent it, so
what the archive keeps is what the modality sent, compressed pixel data included. Statuses follow PS3.4
B.2.3 through one table (:data:`INGEST_STATUSES`, :func:`failure_status`): success for a stored, already
stored, new or replacing version; ``0x0111`` (duplicate SOP instance) with an error comment when the
duplicate policy rejects the file; ``0xC000`` (cannot understand) for data the scanner refuses;
``0xA700`` (out of resources) when the archive cannot store.
"""

from __future__ import annotations

import logging
import queue
import threading
from io import BytesIO
from typing import Final, cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import Event

from mmarchive.dicom.errors import DicomInputError
from mmarchive.dicom.store import DicomStore, IngestResult, IngestStatus
from mmarchive.errors import ArchiveError

log = logging.getLogger(__name__)

#: At most this many received files are ingested in one call.
MAX_BATCH: Final = 64

SUCCESS: Final = 0x0000
#: PS3.7 C.4.1 general status "Duplicate SOP Instance": the duplicate policy refused the file.
DUPLICATE_REFUSED: Final = 0x0111
#: PS3.4 B.2.3 "Refused: Out of Resources": the archive could not store the file.
OUT_OF_RESOURCES: Final = 0xA700
#: PS3.4 B.2.3 "Error: Cannot understand": the bytes are not an instance the archive can keep.
CANNOT_UNDERSTAND: Final = 0xC000

INGEST_STATUSES: Final[dict[IngestStatus, int]] = {
    IngestStatus.STORED: SUCCESS,
    IngestStatus.ALREADY_STORED: SUCCESS,
    IngestStatus.NEW_VERSION: SUCCESS,
    IngestStatus.REPLACED: SUCCESS,
    IngestStatus.REJECTED: DUPLICATE_REFUSED,
    IngestStatus.FAILED: CANNOT_UNDERSTAND,
}


def status_dataset(status: int, comment: str | None = None) -> Dataset:
    """A DIMSE status, with an Error Comment (LO: at most 64 characters) when there is something to say."""
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds


def failure_status(error: ArchiveError) -> int:
    """The C-STORE failure status of an error the library raised while storing."""
    if isinstance(error, DicomInputError):
        return CANNOT_UNDERSTAND
    return OUT_OF_RESOURCES


def part10(event: Event, calling_ae: str) -> bytes:
    """The Part 10 file of a C-STORE request: preamble, ``DICM``, file meta (pynetdicom's, from the request,
    with the calling AE as Source Application Entity Title) and the data set bytes as received."""
    meta = event.file_meta
    if calling_ae:
        meta.SourceApplicationEntityTitle = calling_ae
    received = cast(BytesIO, cast(C_STORE, event.request).DataSet).getvalue()
    return b"".join((b"\x00" * 128, b"DICM", encode_file_meta(meta), received))


class _Pending:
    """One received file waiting for its batch."""

    __slots__ = ("data", "done", "error", "name", "result")

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data
        self.done = threading.Event()
        self.result: IngestResult | None = None
        self.error: ArchiveError | None = None


class IngestBatcher:
    """Ingests the files that associations receive at the same time in one :meth:`DicomStore.ingest` call.

    Each association waits for its own file to be durable and indexed before it answers, so one association
    sends one file at a time; several associations storing at once would each pay a store commit (fsync)
    and a catalog commit. One thread takes what is waiting, up to :data:`MAX_BATCH` files, ingests them in
    one call (one commit for all) and wakes the associations with their results. A storage error fails the
    whole batch (each association answers out of resources).
    """

    def __init__(self, store: DicomStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mmarchive-dimse-ingest", daemon=True)
        self._thread.start()

    def ingest(self, name: str, data: bytes) -> IngestResult:
        """Ingest one file with whatever else is waiting; raise the ArchiveError that failed its batch."""
        pending = _Pending(name, data)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def close(self) -> None:
        """Ingest what is waiting, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._ingest(batch)

    def _ingest(self, batch: list[_Pending]) -> None:
        try:
            results = list(self.store.ingest([(p.name, p.data) for p in batch], tenant=self.tenant))
            for p, result in zip(batch, results, strict=True):
                p.result = result
        except ArchiveError as e:
            for p in batch:
                p.error = e
        except BaseException as e:  # not the library's: fail the batch, keep the thread serving
            log.exception("ingest of %d received file(s) failed", len(batch))
            for p in batch:
                p.error = ArchiveError(f"internal error while storing ({type(e).__name__}: {e})")
        finally:
            for p in batch:
                p.data = b""
                p.done.set()


class StoreHandler:
    """The ``evt.EVT_C_STORE`` handler of one server: ingest into one tenant of one store."""

    def __init__(self, batcher: IngestBatcher) -> None:
        self.batcher = batcher

    def __call__(self, event: Event) -> Dataset:
        request = event.request
        sop = str(getattr(request, "AffectedSOPInstanceUID", "") or "")
        calling = event.assoc.requestor.ae_title
        try:
            data = part10(event, calling)
        except (AttributeError, ValueError) as e:  # no data set, or file meta that cannot be encoded
            return status_dataset(CANNOT_UNDERSTAND, f"cannot read the data set: {e}")
        name = f"dimse:{calling}:{sop or 'unknown'}"
        try:
            result = self.batcher.ingest(name, data)
        except ArchiveError as e:
            log.warning("C-STORE of %s from %s failed: %s", sop, calling, e)
            return status_dataset(failure_status(e), str(e))
        return self._status(result, sop, calling)

    @staticmethod
    def _status(result: IngestResult, sop: str, calling: str) -> Dataset:
        status = INGEST_STATUSES[result.status]
        if status != SUCCESS:
            log.warning("C-STORE of %s from %s: %s (%s)", sop, calling, result.status, result.error)
            return status_dataset(status, result.error or str(result.status))
        log.info("C-STORE of %s from %s: %s", sop, calling, result.status)
        return status_dataset(status)
