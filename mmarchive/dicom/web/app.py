"""The DICOMweb application: QIDO-RS search, WADO-RS retrieval and metadata, STOW-RS store, over one tenant.

:func:`create_app` wraps an :class:`~mmarchive.archive.Archive` or a
:class:`~mmarchive.dicom.store.DicomStore` in a starlette application serving PS3.18 resources under
``base`` (``/dicom-web``), for one tenant; an embedding service can mount it. The store's calls block
(LMDB, file reads), so they run on starlette's thread pool; retrieval streams each instance's stored
Part 10 bytes chunk by chunk, one instance at a time. A STOW-RS body is parsed as it arrives and ingested
as one batch only once it is complete and well formed (large parts wait in temporary files), so a
malformed or interrupted request stores nothing. Errors map to HTTP statuses in one table
(:data:`STATUS_FOR`), each with a short JSON reason.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

from pydicom.datadict import keyword_for_tag
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from mmarchive.archive import DEFAULT_TENANT, Archive
from mmarchive.dicom.catalog_records import CatalogEntry
from mmarchive.dicom.scan import describe
from mmarchive.dicom.store import METADATA_KEY, DicomStore, IngestResult, IngestSource, IngestStatus
from mmarchive.dicom.web.frames import OCTET_STREAM, Frames, frame_list, open_frames
from mmarchive.dicom.web.multipart import (
    MultipartReader,
    SpooledPart,
    SpooledParts,
    closing,
    media_type,
    part_header,
    split_list,
)
from mmarchive.errors import (
    ArchiveError,
    ArchiveLockedError,
    ArchiveStateError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RetentionError,
    StorageError,
)
from mmarchive.index.schema import check_tenant

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
DICOM = "application/dicom"
#: Query parameters QIDO-RS gives a meaning of their own; every other one is a matching key.
_RESERVED = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
#: FailureReason values of the store response (PS3.4 storage statuses).
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_PROCESSING = 0x0110
FAILURE_STUDY_MISMATCH = 0xA900
FAILURE_REFUSED = 0x0111  # the duplicate policy refused other bytes for a stored instance
#: STOW-RS parts up to this size wait for ingest in memory, larger ones in a temporary file.
SPOOL_BYTES = 8 << 20


class NotAcceptableError(ArchiveError):
    """No representation the request's Accept header allows can be served (406)."""


class UnsupportedMediaTypeError(ArchiveError):
    """The request body's Content-Type is not one this resource takes (415)."""


#: Exception class -> HTTP status; the first class the error is an instance of wins.
STATUS_FOR: tuple[tuple[type[BaseException], int], ...] = (
    (NotAcceptableError, 406),
    (UnsupportedMediaTypeError, 415),
    (NotFoundError, 404),
    (InvalidInputError, 400),
    (RetentionError, 409),
    (ArchiveLockedError, 409),
    (ArchiveStateError, 409),
    (IntegrityError, 500),
    (StorageError, 503),
    (ArchiveError, 500),
)


def status_for(exc: BaseException) -> int:
    for cls, status in STATUS_FOR:
        if isinstance(exc, cls):
            return status
    return 500


def _error_response(exc: BaseException) -> Response:
    status = status_for(exc)
    reason = str(exc).strip("'\"") if isinstance(exc, ArchiveError) else "internal error"
    if status >= 500:
        log.error("DICOMweb request failed: %s", exc, exc_info=not isinstance(exc, ArchiveError))
    return JSONResponse({"error": reason, "status": status}, status_code=status)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _mapped(handler: Callable[[DicomWeb, Request], Coroutine[Any, Any, Response]],
            web: DicomWeb) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(web, request)
        except ArchiveError as e:
            return _error_response(e)
    return endpoint


def create_app(target: Archive | DicomStore, *, tenant: str = DEFAULT_TENANT,
               base: str = "/dicom-web", spool_bytes: int = SPOOL_BYTES) -> Starlette:
    """A starlette application serving DICOMweb for ``tenant`` under ``base``.

    ``target`` is an open archive (wrapped in a DicomStore) or a DicomStore; the caller keeps it open
    while the application serves and closes it afterwards. STOW-RS needs it open for writing; a STOW-RS
    part over ``spool_bytes`` waits for ingest in a temporary file rather than in memory.
    """
    check_tenant(tenant)
    store = target if isinstance(target, DicomStore) else DicomStore(target)
    web = DicomWeb(store, tenant, base, spool_bytes)
    routes = [
        Route("/studies", _mapped(DicomWeb.search_or_store, web), methods=["GET", "POST"]),
        Route("/series", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/instances", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/studies/{study}", _mapped(DicomWeb.retrieve_or_store, web), methods=["GET", "POST"]),
        Route("/studies/{study}/metadata", _mapped(DicomWeb.metadata, web), methods=["GET"]),
        Route("/studies/{study}/series", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/studies/{study}/instances", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}", _mapped(DicomWeb.retrieve, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}/metadata", _mapped(DicomWeb.metadata, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances/{sop}", _mapped(DicomWeb.retrieve, web),
              methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances/{sop}/metadata", _mapped(DicomWeb.metadata, web),
              methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
              _mapped(DicomWeb.frames, web), methods=["GET"]),
    ]
    return Starlette(routes=[Mount(base.rstrip("/"), routes=routes)] if base.strip("/") else routes)


class DicomWeb:
    """The resources' handlers over one store and tenant."""

    def __init__(self, store: DicomStore, tenant: str, base: str, spool_bytes: int = SPOOL_BYTES) -> None:
        self.store = store
        self.spool_bytes = spool_bytes
        self.tenant = tenant
        self.base = "/" + base.strip("/") if base.strip("/") else ""

    # -- QIDO-RS ------------------------------------------------------------------------------------

    async def search_or_store(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.store_instances(request)
        return await self.search(request)

    async def search(self, request: Request) -> Response:
        _accept_json(request)
        path = request.url.path.rstrip("/")
        level = "study" if path.endswith("/studies") else "series" if path.endswith("/series") \
            else "instance"
        study = request.path_params.get("study")
        series = request.path_params.get("series")
        constraints: dict[str, str] = {}
        include: list[str] = []
        for key, value in request.query_params.multi_items():
            if key == "includefield":
                include += [_keyword(v) if v != "all" else "all" for v in value.split(",") if v]
            elif key not in _RESERVED:
                keyword = _keyword(key)
                # QIDO-RS lists UIDs with commas (PS3.18 8.3.4.1); the catalog, as C-FIND, with backslashes
                constraints[keyword] = value.replace(",", "\\") if keyword.endswith("UID") else value
        params = request.query_params
        limit = _count(params.get("limit"), "limit") if "limit" in params else None
        offset = _count(params.get("offset"), "offset") if "offset" in params else 0
        fuzzy = params.get("fuzzymatching", "false").lower() == "true"
        results = await run_in_threadpool(
            self.store.query, level, constraints, tenant=self.tenant, limit=limit, offset=offset,
            include="all" if "all" in include else tuple(include), fuzzy=fuzzy, study_uid=study,
            series_uid=series)
        if not results:
            return Response(status_code=204)  # PS3.18 8.3.4.4.1: no match is 204 with no payload
        return JSONResponse(results, media_type=DICOM_JSON)

    # -- WADO-RS ------------------------------------------------------------------------------------

    async def retrieve_or_store(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.store_instances(request)
        return await self.retrieve(request)

    async def retrieve(self, request: Request) -> Response:
        study = request.path_params["study"]
        series = request.path_params.get("series")
        sop = request.path_params.get("sop")
        entries = await run_in_threadpool(self._entries, study, series, sop)
        syntaxes = {e.transfer_syntax for e in entries}
        _accept_dicom(request.headers.get("accept", "*/*"), syntaxes)
        boundary = secrets.token_hex(16)
        body = iterate_in_threadpool(self._parts(entries, boundary))
        return StreamingResponse(
            body, media_type=f'multipart/related; type="{DICOM}"; boundary={boundary}')

    def _entries(self, study: str, series: str | None, sop: str | None) -> list[CatalogEntry]:
        entries = [e for e in self.store.instances(study, tenant=self.tenant, series_uid=series)
                   if sop is None or e.sop_instance_uid == sop]
        if not entries:
            what = f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"
            raise NotFoundError(f"{what} is not in this archive")
        return entries

    def _parts(self, entries: list[CatalogEntry], boundary: str) -> Iterator[bytes]:
        """The response body: one part per instance, each streamed from the store chunk by chunk."""
        for i, e in enumerate(entries):
            yield part_header(boundary, f"{DICOM}; transfer-syntax={e.transfer_syntax}", first=i == 0)
            with self.store.archive.open_object(e.object_id, tenant=self.tenant) as reader:
                yield from reader.read_chunkwise()
        yield closing(boundary)

    async def frames(self, request: Request) -> Response:
        """WADO-RS frames: one part per requested frame, its stored bytes (PS3.18 10.4)."""
        numbers = frame_list(request.path_params["frames"])
        params = request.path_params
        entries = await run_in_threadpool(self._entries, params["study"], params["series"], params["sop"])
        layout = await run_in_threadpool(self._frame_layout, entries[0])
        layout.check(numbers)
        _accept_frames(request.headers.get("accept", "*/*"), layout)
        boundary = secrets.token_hex(16)
        body = iterate_in_threadpool(self._frame_parts(entries[0], layout, numbers, boundary))
        return StreamingResponse(
            body, media_type=f'multipart/related; type="{layout.media_type}"; boundary={boundary}')

    def _frame_layout(self, entry: CatalogEntry) -> Frames:
        info = self.store.archive.stat(entry.object_id, tenant=self.tenant)
        dicom = info.metadata.get(METADATA_KEY)
        header_end = dicom.get("header") if isinstance(dicom, Mapping) else None
        with self.store.archive.open_object(entry.object_id, tenant=self.tenant) as reader:
            size = int(reader.size)
            return open_frames(reader, header_end if isinstance(header_end, int) else size, size)

    def _frame_parts(self, entry: CatalogEntry, layout: Frames, numbers: list[int],
                     boundary: str) -> Iterator[bytes]:
        with self.store.archive.open_object(entry.object_id, tenant=self.tenant) as reader:
            for i, n in enumerate(numbers):
                yield part_header(boundary, layout.part_type, first=i == 0)
                yield layout.read(reader, n)
        yield closing(boundary)

    async def metadata(self, request: Request) -> Response:
        _accept_json(request)
        study = request.path_params["study"]
        series = request.path_params.get("series")
        sop = request.path_params.get("sop")
        found = await run_in_threadpool(self.store.metadata, study, tenant=self.tenant, series_uid=series,
                                        sop_uid=sop)
        return JSONResponse(found, media_type=DICOM_JSON)

    # -- STOW-RS ------------------------------------------------------------------------------------

    async def store_instances(self, request: Request) -> Response:
        study = request.path_params.get("study")
        mtype, params = media_type(request.headers.get("content-type", ""))
        if mtype != "multipart/related":
            raise UnsupportedMediaTypeError(
                f"STOW-RS takes multipart/related; type=\"{DICOM}\", not {mtype or 'no Content-Type'}")
        if params.get("type", DICOM).lower() != DICOM:
            raise UnsupportedMediaTypeError(f"only {DICOM} parts are stored (the metadata and bulk data "
                                            f"form is not implemented), not {params['type']}")
        reader = MultipartReader(params.get("boundary", ""))
        with SpooledParts(self.spool_bytes) as spooled:
            try:
                async for chunk in request.stream():
                    spooled.add(reader.feed(chunk))
            except ClientDisconnect:
                log.info("STOW-RS client went away before the end of its request; nothing stored")
                return Response(status_code=400)
            reader.finish()
            if not spooled.parts:
                raise InvalidInputError("the multipart body holds no part")
            outcome = await run_in_threadpool(self._store_parts, spooled.parts, study)
        return self._store_response(request, outcome)

    def _store_parts(self, parts: list[SpooledPart], study: str | None) -> list[_Stored]:
        """Check each part, then ingest the acceptable ones in one batch; one outcome per part."""
        outcome: list[_Stored] = []
        batch: list[IngestSource] = []
        for n, part in enumerate(parts):
            ptype, _ = media_type(part.headers.get("content-type", DICOM))
            if ptype != DICOM:
                outcome.append(_Stored(None, None, None, FAILURE_CANNOT_UNDERSTAND,
                                       f"part {n + 1} is {ptype}, not {DICOM}"))
                continue
            try:
                scanned = describe(part.read())
            except InvalidInputError as e:
                outcome.append(_Stored(None, None, None, FAILURE_CANNOT_UNDERSTAND, f"part {n + 1}: {e}"))
                continue
            sop_class = _value(scanned.values, "SOPClassUID")
            sop = _value(scanned.values, "SOPInstanceUID")
            part_study = _value(scanned.values, "StudyInstanceUID")
            if study is not None and part_study != study:
                outcome.append(_Stored(sop_class, sop, part_study, FAILURE_STUDY_MISMATCH,
                                       f"part {n + 1} belongs to study {part_study}, not {study}"))
                continue
            outcome.append(_Stored(sop_class, sop, part_study, None, ""))
            batch.append(part.path if part.path is not None else (f"part {n + 1}", part.read()))
        results = iter(list(self.store.ingest(batch, tenant=self.tenant, reason="stow-rs")))
        for i, o in enumerate(outcome):
            if o.failure is None:
                outcome[i] = o.with_result(next(results))
        for o in outcome:
            if o.failure is not None:
                log.info("STOW-RS refused %s: %s", o.sop or "a part", o.reason)
        return outcome

    def _store_response(self, request: Request, outcome: list[_Stored]) -> Response:
        root = str(request.base_url).rstrip("/") + self.base
        referenced: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        studies = set()
        for o in outcome:
            item = {"00081150": _ui(o.sop_class), "00081155": _ui(o.sop)}
            if o.failure is None:
                url = f"{root}/studies/{o.study}/series/{o.series}/instances/{o.sop}"
                item["00081190"] = {"vr": "UR", "Value": [url]}
                referenced.append(item)
                studies.add(o.study)
            else:
                item["00081197"] = {"vr": "US", "Value": [o.failure]}
                failed.append(item)
        body: dict[str, Any] = {}
        if len(studies) == 1:
            body["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{next(iter(studies))}"]}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}
        if referenced:
            body["00081199"] = {"vr": "SQ", "Value": referenced}
        status = 200 if not failed else 202 if referenced else 409
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


class _Stored:
    """What became of one STOW-RS part: stored (``failure`` None) or a FailureReason and why."""

    __slots__ = ("failure", "reason", "series", "sop", "sop_class", "study")

    def __init__(self, sop_class: str | None, sop: str | None, study: str | None, failure: int | None,
                 reason: str, series: str | None = None) -> None:
        self.sop_class = sop_class
        self.sop = sop
        self.study = study
        self.series = series
        self.failure = failure
        self.reason = reason

    def with_result(self, result: IngestResult) -> _Stored:
        if result.ok:
            return _Stored(self.sop_class, result.sop_instance_uid, result.study_instance_uid, None, "",
                           result.series_instance_uid)
        code = FAILURE_REFUSED if result.status is IngestStatus.REJECTED else FAILURE_PROCESSING
        return _Stored(self.sop_class, self.sop, self.study, code, result.error or str(result.status))


# -- request parsing ----------------------------------------------------------------------------------


def _keyword(key: str) -> str:
    """A query key or includefield value as a keyword: ``PatientID`` stays, ``00100020`` becomes it."""
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        keyword = keyword_for_tag(int(key, 16))
        if not keyword:
            raise InvalidInputError(f"tag {key} is not a known DICOM attribute")
        return str(keyword)
    return key


def _count(text: str | None, name: str) -> int:
    try:
        n = int(text or "")
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number, not {text!r}") from None
    if n < 0:
        raise InvalidInputError(f"{name} must be 0 or more, not {n}")
    return n


def _accept_json(request: Request) -> None:
    ranges = [media_type(r)[0] for r in split_list(request.headers.get("accept", "*/*"))]
    if not any(r in (DICOM_JSON, "application/json", "application/*", "*/*", "*") for r in ranges):
        raise NotAcceptableError(f"this resource is served as {DICOM_JSON} only")


def _accepts_multipart(accept: str, default_type: str, types: tuple[str, ...],
                       syntax_ok: Callable[[str], bool]) -> bool:
    """Whether an entry of ``accept`` (q > 0) takes ``multipart/related`` parts of one of ``types``
    (``default_type`` when it names none) in a transfer syntax ``syntax_ok`` allows (``*`` when absent)."""
    for entry in split_list(accept) or ["*/*"]:
        mtype, params = media_type(entry)
        if params.get("q") in ("0", "0.0", "0.00", "0.000"):
            continue
        if mtype in ("*/*", "*", "multipart/*"):
            return True
        if mtype != "multipart/related" or params.get("type", default_type).lower() not in types:
            continue
        if syntax_ok(params.get("transfer-syntax", "*")):
            return True
    return False


def _accept_dicom(accept: str, syntaxes: set[str]) -> None:
    """Raise NotAcceptableError unless ``accept`` allows multipart application/dicom in ``syntaxes``."""
    if _accepts_multipart(accept, DICOM, (DICOM, "application/*", "*/*"),
                          lambda wanted: wanted == "*" or {wanted} == syntaxes):
        return
    stored = ", ".join(sorted(syntaxes))
    raise NotAcceptableError(f'only multipart/related; type="{DICOM}" in the stored transfer syntax '
                             f"({stored}) or transfer-syntax=* is served")


def _accept_frames(accept: str, layout: Frames) -> None:
    """Raise NotAcceptableError unless ``accept`` allows multipart frames of ``layout``'s media type in
    its stored transfer syntax (explicit VR little endian for native data)."""
    served = layout.media_type
    syntax = layout.part_type.rsplit("=", 1)[1]
    if _accepts_multipart(accept, OCTET_STREAM, (served, served.split("/")[0] + "/*", "*/*"),
                          lambda wanted: wanted in ("*", syntax)):
        return
    raise NotAcceptableError(f'the frames are served only as multipart/related; type="{served}" '
                             f"(transfer syntax {syntax})")


def _value(values: Mapping[str, tuple[Any, ...]], keyword: str) -> str | None:
    got = values.get(keyword)
    return str(got[0]) if got else None


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}

